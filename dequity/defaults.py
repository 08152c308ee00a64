"""The defaults of a dequity run, in one place for the library, the CLI and the App."""

from dequity.clustering import HDBSCAN_KNN
from dequity.likelihood import NOISE_NEAREST
from dequity.projection import PCA

#: EfficientNet-Lite0's pooled features of every stage
#: (:class:`dequity.models.StagePooled`): sees kind and appearance, offline.
DEFAULT_MODEL = "efficientnet-lite0-layers"
DEFAULT_PROJECTION = PCA
#: HDBSCAN cluster shares scaled by k-NN crowding (:mod:`dequity.estimate`)
DEFAULT_CLUSTERING = HDBSCAN_KNN
#: noise points join their nearest cluster; the crowding keeps them rare
DEFAULT_NOISE = NOISE_NEAREST
