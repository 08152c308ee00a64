"""Where a run's vectors come from: models, local and Ray inference, object crops.

``models`` loads the offline default and other networks; ``embeddings``
embeds images in this process or reads stored vectors; ``ray`` runs the model
on a Ray cluster; ``crops`` embeds each box of a ``Detections`` field;
``parse`` turns ``compute_dequity``'s embeddings arguments into one source.
"""
