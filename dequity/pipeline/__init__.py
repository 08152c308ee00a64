"""The array stages of a run: pure numpy and scikit-learn, no FiftyOne, no database.

``params`` declares and checks each stage's parameters; ``projection`` maps
embeddings to a low-dimensional space; ``clustering`` groups the points;
``density`` counts each point's neighbours; ``likelihood`` turns cluster sizes
into the paper's eq. 3; ``estimate`` puts these together for every clustering
method; ``views`` adds the content view; ``groups`` counts scenes instead of
frames; ``fit`` places new samples without refitting; ``weights`` is eq. 4.
"""
