"""Bad input, fuzzed: each bad value is refused with one DequityError that names it.

Every call below carries exactly one bad value among valid ones, drawn by
``hypothesis``. The samples' images do not exist, so a call that got past its
checks would fail later, while embedding, with another message: the refusal
must come first, name the bad parameter, and leave the dataset as it was.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dequity
from dequity.errors import DequityError
from dequity.pipeline.clustering import CLUSTERINGS, PARAMETERS
from dequity.pipeline.projection import PARAMETERS as PROJECTION_PARAMETERS
from tests.test_bad_input import snapshot

#: examples per property; each is one refused call (a few ms to a few tens of ms).
#: DEQUITY_FUZZ_EXAMPLES=2000 searches longer.
EXAMPLES = int(os.environ.get("DEQUITY_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NUM_SAMPLES = 40
#: cases tried per property; written to $DEQUITY_FUZZ_RECORD when it is set
TRIED: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _record_counts():
    yield
    if path := os.environ.get("DEQUITY_FUZZ_RECORD"):
        Path(path).write_text(json.dumps(dict(TRIED), indent=1))


#: values no numeric parameter takes
NOT_A_NUMBER = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=6),
    st.lists(st.floats(), min_size=1, max_size=3),
    st.complex_numbers(allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
#: a value that is not a finite number >= 0
NOT_NON_NEGATIVE = st.one_of(
    NOT_A_NUMBER,
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=True),
    st.sampled_from([math.nan, math.inf]),
)


def _not_an_option(options: tuple) -> st.SearchStrategy:
    return st.one_of(st.text(max_size=10).filter(lambda t: t not in options), NOT_A_NUMBER)


def _not_a_field_name() -> st.SearchStrategy:
    bad_text = st.text(max_size=10).filter(lambda t: not t.isidentifier() or t.startswith("_"))
    return st.one_of(bad_text, st.integers(), st.booleans(), st.lists(st.text(), max_size=2))


def _bad_kwargs_dict(known: tuple[str, ...]) -> st.SearchStrategy:
    """A kwargs dict that is not a dict, or holds a key no estimator takes."""
    unknown = st.text(min_size=1, max_size=10).filter(lambda k: k not in known)
    return st.one_of(
        st.lists(st.integers(), min_size=1, max_size=3),
        st.text(min_size=1, max_size=5),
        st.dictionaries(unknown, st.integers(), min_size=1, max_size=2),
    )


#: parameter -> strategy of values it must refuse
BAD_VALUES: dict[str, st.SearchStrategy] = {
    "eta": NOT_NON_NEGATIVE,
    "gamma": NOT_NON_NEGATIVE,
    "projection": _not_an_option(("pca", "tsne", "opentsne", "umap", None)).filter(
        lambda v: v is not None
    ),
    "clustering": _not_an_option(CLUSTERINGS),
    "noise": _not_an_option(("nearest", "singleton", "cluster")),
    "clustering_kwargs": _bad_kwargs_dict(tuple(PARAMETERS["hdbscan_knn"])),
    "projection_kwargs": st.one_of(
        _bad_kwargs_dict(tuple(PROJECTION_PARAMETERS["pca"])),
        st.fixed_dictionaries(
            {"n_components": st.one_of(st.integers(max_value=0), st.booleans(), st.text())}
        ),
    ),
    "batch_size": st.one_of(NOT_A_NUMBER, st.integers(max_value=0), st.floats(0.1, 0.9)),
    "num_workers": st.one_of(st.text(min_size=1, max_size=4), st.integers(max_value=-1)),
    "skip_failures": st.one_of(st.text(min_size=1, max_size=4), st.integers(2, 9)),
    "embeddings_field": _not_a_field_name().filter(lambda v: v not in ("", None)),
    "views": _not_an_option(("auto", "content", "ranked", None)).filter(lambda v: v is not None),
    "likelihood_backend": _not_an_option(("local", "ray")),
}
#: the HDBSCAN parameters dequity checks itself, with values each must refuse
BAD_CLUSTERING_VALUES: dict[str, st.SearchStrategy] = {
    "min_cluster_size": st.one_of(st.integers(max_value=1), st.floats(2.5, 9.5), st.booleans()),
    "k": st.one_of(st.integers(max_value=0), st.text(min_size=1, max_size=3), st.booleans()),
    "density_power": st.one_of(
        st.floats(min_value=1.001, allow_nan=False, allow_infinity=False),
        st.floats(max_value=-0.001, allow_nan=False, allow_infinity=False),
        st.just(math.nan),
        st.text(min_size=1, max_size=3),
    ),
}
#: valid values for every other parameter of the call
VALID = {
    "eta": st.floats(0, 5),
    "gamma": st.floats(0, 8),
    "clustering": st.sampled_from(CLUSTERINGS),
    "noise": st.sampled_from(("nearest", "singleton")),
    "batch_size": st.integers(1, 64),
}


@pytest.fixture(scope="module")
def unreadable() -> fo.Dataset:
    """Samples whose images do not exist, with an earlier run's fields to keep intact."""
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg") for i in range(NUM_SAMPLES)])
    vectors = np.random.default_rng(0).normal(size=(NUM_SAMPLES, 8))
    dequity.compute_dequity(dataset, "earlier", embeddings=vectors, progress=False)
    yield dataset
    dataset.delete()


def _refused(dataset: fo.Dataset, bad: str, kwargs: dict) -> str:
    """The one-line message of the DequityError that ``kwargs`` must raise; dataset unchanged."""
    before = snapshot(dataset)
    with pytest.raises(DequityError) as caught:
        dequity.compute_dequity(
            dataset,
            model="efficientnet-lite0",
            progress=False,
            **{"skip_failures": False, **kwargs},
        )
    message = str(caught.value)
    assert "embedding failed" not in message, f"{bad}={kwargs[bad]!r} was not checked first"
    assert snapshot(dataset) == before
    return message


@FUZZ
@given(data=st.data(), bad=st.sampled_from(sorted(BAD_VALUES)))
def test_one_bad_parameter_among_valid_ones_is_refused_by_name(unreadable, data, bad):
    others = {k: data.draw(v, label=k) for k, v in VALID.items() if k != bad}
    kwargs = {**others, bad: data.draw(BAD_VALUES[bad], label=bad)}
    TRIED[f"compute_dequity {bad}"] += 1
    message = _refused(unreadable, bad, kwargs)
    # a kwargs dict may be refused by the name of the key inside it
    names = [bad, *(map(str, kwargs[bad]) if isinstance(kwargs[bad], dict) else ())]
    assert any(name in message for name in names), message


@FUZZ
@given(data=st.data(), bad=st.sampled_from(sorted(BAD_CLUSTERING_VALUES)))
def test_a_bad_clustering_value_is_refused_by_name(unreadable, data, bad):
    value = data.draw(BAD_CLUSTERING_VALUES[bad], label=bad)
    TRIED[f"compute_dequity clustering_kwargs {bad}"] += 1
    message = _refused(unreadable, "clustering_kwargs", {"clustering_kwargs": {bad: value}})
    assert bad in message, message


@FUZZ
@given(run_key=_not_a_field_name())
def test_a_run_key_that_cannot_prefix_a_field_is_refused(unreadable, run_key):
    TRIED["compute_dequity run_key"] += 1
    before = snapshot(unreadable)
    with pytest.raises(DequityError, match="run_key|run key"):
        dequity.compute_dequity(unreadable, run_key, model="efficientnet-lite0", progress=False)
    assert snapshot(unreadable) == before


def _bad_arrays() -> st.SearchStrategy:
    """Embedding arrays that cannot be clustered: non-finite, misshapen or not real numbers."""
    n = NUM_SAMPLES
    finite = st.floats(-10, 10, allow_nan=False)

    def with_bad_cell(value: float) -> st.SearchStrategy:
        return st.tuples(st.integers(0, n - 1), st.integers(0, 7)).map(
            lambda rc: _set(np.ones((n, 8)), rc, value)
        )

    return st.one_of(
        with_bad_cell(math.nan),
        with_bad_cell(math.inf),
        with_bad_cell(-math.inf),
        st.integers(1, n - 1).map(lambda rows: np.ones((rows, 8))),
        st.integers(n + 1, 2 * n).map(lambda rows: np.ones((rows, 8))),
        finite.map(lambda v: np.full(n, v)),
        st.just(np.ones((n, 8, 2))),
        st.just(np.ones((n, 0))),
        st.just(np.ones((n, 8)) * (1 + 1j)),
        st.just(np.ones((n, 8), dtype=bool)),
        st.just(np.full((n, 8), "x")),
        st.just(np.empty((n, 8), dtype=object)),
    )


def _set(a: np.ndarray, cell: tuple[int, int], value: float) -> np.ndarray:
    a[cell] = value
    return a


@FUZZ
@given(vectors=_bad_arrays())
def test_a_bad_embeddings_array_is_refused(unreadable, vectors):
    TRIED["compute_dequity embeddings array"] += 1
    before = snapshot(unreadable)
    with pytest.raises(DequityError, match="embeddings|NaN|shape|real numbers|numbers"):
        dequity.compute_dequity(unreadable, embeddings=vectors, progress=False)
    assert snapshot(unreadable) == before


def _finite_non_negative(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) >= 0
    except ValueError:
        return False


#: command-line option -> strategy of the text it must refuse
BAD_OPTIONS: dict[str, st.SearchStrategy] = {
    "--eta": st.one_of(
        st.sampled_from(["-1", "nan", "inf", "abc", "1e999"]),
        st.text(max_size=4).filter(lambda t: not _finite_non_negative(t)),
    ),
    "--gamma": st.sampled_from(["-0.5", "nan", "-inf", "x"]),
    "--projection": st.text(min_size=1, max_size=8).filter(
        lambda t: t not in ("pca", "tsne", "opentsne", "none")
    ),
    "--clustering-kwargs": st.sampled_from(
        ["min_cluster_size=1", "min_cluster_size=x", "k=0", "density_power=2", "nokey", "bogus=1"]
    ),
    "--projection-kwargs": st.sampled_from(["n_components=0", "n_components=-3", "=1", "a"]),
    "--batch-size": st.sampled_from(["0", "-1", "2.5", "many"]),
    "--run-key": st.sampled_from(["_x", "a b", "1x", "a.b", "-"]),
}


def _one_line_refusal(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    from dequity.cli import main

    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err, err
    return err


@FUZZ
@given(data=st.data(), option=st.sampled_from(sorted(BAD_OPTIONS)))
def test_a_bad_command_line_option_exits_2_with_one_line(unreadable, capsys, data, option):
    value = data.draw(BAD_OPTIONS[option], label=option)
    TRIED[f"dequity compute {option}"] += 1
    argv = ["compute", "--dataset", unreadable.name, "--model", "efficientnet-lite0"]
    argv += ["--fail-on-unreadable", f"{option}={value}"]
    before = snapshot(unreadable)
    err = _one_line_refusal(capsys, argv)
    assert "embedding failed" not in err, err
    assert snapshot(unreadable) == before


@pytest.mark.slow
@FUZZ
@given(data=st.data(), bad=st.sampled_from(["eta", "gamma", "run_key", "new_run_key"]))
def test_a_bad_operator_parameter_is_refused_and_changes_nothing(unreadable, data, bad):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    from tests.test_plugin import uri

    value = data.draw(NOT_NON_NEGATIVE if bad in ("eta", "gamma") else _not_a_field_name())
    if bad == "new_run_key":
        name, params = "rename_dequity_run", {"run_key": "earlier", "new_run_key": value}
    else:
        params = {"run_key": "earlier", "eta": 1.0, "gamma": 2.0, bad: value}
        name = "reweight_dequity"
    TRIED[f"operator {name} {bad}"] += 1
    before = snapshot(unreadable)
    with pytest.raises(ExecutionError):
        foo.execute_operator(uri(name), {"dataset": unreadable, "params": params})
    assert snapshot(unreadable) == before
