"""Checks that a run's fields and Detection attributes are free to write."""

from __future__ import annotations

from typing import Any

import fiftyone.core.fields as fof

from dequity.errors import DequityError
from dequity.store import compat as fc
from dequity.store.names import METHOD


def check_fields_free(samples: Any, fields: dict[str, type], run_key: str) -> None:
    """Raise unless each field is absent, or owned by dequity run ``run_key``.

    ``fields`` maps a field name to the FiftyOne field type it must have.
    """
    schema = fc.root_dataset(samples).get_field_schema()
    owned = set()
    if run_key in samples.list_runs(method=METHOD):
        owned = set(samples.get_run_info(run_key).config.fields)
    for name, kind in fields.items():
        if name not in schema or name in owned:
            if name in schema and not isinstance(schema[name], kind):
                raise DequityError(
                    f"field {name!r} is a {type(schema[name]).__name__}, "
                    f"not a {kind.__name__}; delete it or choose another run_key"
                )
            continue
        raise DequityError(
            f"field {name!r} already exists and holds other data; choose "
            f"another run_key or delete the field (dataset.delete_sample_field({name!r}))"
        )


FLOAT, INT, STRING = fof.FloatField, fof.IntField, fof.StringField


def check_attributes_free(samples: Any, patches_field: str, run_key: str, names: list[str]) -> None:
    """Raise unless the Detection attributes ``names`` are absent or owned by run ``run_key``.

    Example::

        check_attributes_free(dataset, "ground_truth", "objects", ["objects_weight"])
    """
    dataset = fc.root_dataset(samples)
    owned: set[str] = set()
    if run_key in dataset.list_runs(method=METHOD):
        owned = set(dataset.get_run_info(run_key).config.fields)
    for name in names:
        path = f"{patches_field}.detections.{name}"
        if dataset.has_sample_field(path) and path not in owned:
            raise DequityError(
                f"the Detections of {patches_field!r} already have an attribute {name!r} "
                f"that holds other data; choose another run_key or delete it "
                f"(dataset.delete_sample_field({path!r}))"
            )
