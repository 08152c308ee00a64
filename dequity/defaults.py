"""The defaults of a dequity run, in one place for the library, the CLI and the App."""

from dequity.pipeline.clustering import HDBSCAN_KNN
from dequity.pipeline.likelihood import NOISE_NEAREST
from dequity.pipeline.projection import PCA
from dequity.pipeline.views import RANKED
from dequity.pipeline.weights import DEFAULT_ETA, DEFAULT_GAMMA

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLUSTERING",
    "DEFAULT_ETA",
    "DEFAULT_GAMMA",
    "DEFAULT_MODEL",
    "DEFAULT_NOISE",
    "DEFAULT_PRECISION",
    "DEFAULT_PROJECTION",
    "DEFAULT_RUN_KEY",
    "DEFAULT_VIEWS",
    "PRECISIONS",
]

#: the key of a run, and the prefix of its fields, when none is given
DEFAULT_RUN_KEY = "dequity"
#: EfficientNet-Lite0's pooled features of every stage
#: (:class:`dequity.sources.models.StagePooled`): sees kind and appearance, offline.
DEFAULT_MODEL = "efficientnet-lite0-layers"
#: images per forward pass of the embedding model
DEFAULT_BATCH_SIZE = 32
#: ``"auto"``: float16 autocast on CUDA, float32 elsewhere.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEFAULT_PRECISION = "auto"
DEFAULT_PROJECTION = PCA
#: HDBSCAN cluster shares scaled by k-NN crowding (:mod:`dequity.pipeline.estimate`)
DEFAULT_CLUSTERING = HDBSCAN_KNN
#: noise points join their nearest cluster; the crowding keeps them rare
DEFAULT_NOISE = NOISE_NEAREST
#: rare in any view: with the default model's vectors, a sample's likelihood is the
#: smallest of the whole vector's and the ranks of the final features' content and
#: off-domain views (:mod:`dequity.pipeline.views`); ``views="auto"`` means this mode
DEFAULT_VIEWS = RANKED
