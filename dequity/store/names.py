"""What a run is called in the database: its method, its fields and their descriptions."""

from __future__ import annotations

METHOD = "dequity"
FIELD_SUFFIXES = ("cluster", "likelihood", "weight", "rare_by")
#: what each field of a run holds, by role
FIELD_DESCRIPTIONS = {
    "cluster": "dequity cluster id of the sample's image (-1: noise)",
    "likelihood": "dequity likelihood: size of the sample's cluster / size of the largest",
    "weight": "dequity Generalized Focal Loss weight (eta + (1 - p)**gamma) / (eta + 1)",
    "rare_by": "dequity view that made the sample rare: 'appearance' (how it looks), "
    "'content' (what it shows) or 'off-domain' (unlike the set's kinds)",
    "updated_by": "dequity update that last rescaled the sample's likelihood and weight "
    "(a resumed update skips the samples it already rescaled)",
}
#: the same roles on the ``Detection`` objects of an object run
OBJECT_DESCRIPTIONS = {
    "cluster": "dequity cluster id of the object's crop (-1: noise)",
    "likelihood": "dequity likelihood of the object: size of its cluster / size of the largest",
    "weight": "dequity Generalized Focal Loss weight of the object",
}
SAMPLE_WEIGHT_DESCRIPTION = "dequity weight of the sample: the largest weight of its objects"
#: the kind of value each role holds (see :data:`dequity.store.staging.KINDS`)
KINDS = {
    "cluster": "int",
    "likelihood": "float",
    "weight": "float",
    "rare_by": "str",
    "updated_by": "str",
}


def field_names(run_key: str) -> dict[str, str]:
    """The sample fields a run writes, by role.

    Example::

        >>> field_names("dequity")["weight"]
        'dequity_weight'

    ``rare_by`` is written only by runs that score views
    (:mod:`dequity.pipeline.views`). Updates also stamp the samples they
    rescale (:func:`stamp_field`).
    """
    return {suffix: f"{run_key}_{suffix}" for suffix in FIELD_SUFFIXES}


def stamp_field(run_key: str) -> str:
    """The field in which updates of run ``run_key`` stamp the samples they rescale.

    Example::

        >>> stamp_field("dequity")
        'dequity_updated_by'
    """
    return f"{run_key}_updated_by"
