"""GPU paths that CI never requires: mixed precision and the RAPIDS cuML backend.

Dispatch and errors are tested on CPU; the tests marked ``skipif`` run the
real thing on a machine with CUDA (and cuML).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dequity.pipeline.projection as dp
from dequity import DequityError
from dequity.pipeline.clustering import cluster, clustering_params
from dequity.pipeline.projection import project, projection_params
from dequity.sources.models import load_model, model_name, resolve_precision
from tests.conftest import row_cosines

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "data"
CUDA = torch.cuda.is_available()


def _embed(model) -> np.ndarray:
    images = [Image.open(p).convert("RGB") for p in sorted(DEMO.glob("*.jpg"))[::40][:5]]
    with model:
        vectors = model.embed_all(images)
    return np.asarray(vectors)


# --- mixed precision -------------------------------------------------------


def test_bf16_on_cpu_is_close_to_fp32():
    fp32 = load_model("efficientnet-lite0", device="cpu", precision="fp32")
    bf16 = load_model("efficientnet-lite0", device="cpu", precision="bf16")
    assert fp32.autocast_dtype is None and bf16.autocast_dtype is torch.bfloat16
    assert model_name(bf16) == model_name(fp32) == "EfficientNet"
    a, b = _embed(fp32), _embed(bf16)
    assert b.dtype == np.float32 and b.shape == a.shape == (5, 1280)
    assert row_cosines(a, b).min() > 0.98


def test_auto_precision_is_fp16_on_cuda_only(monkeypatch):
    assert resolve_precision("auto", "cpu") == ("cpu", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_precision("auto", None) == ("cuda", torch.float16)
    assert resolve_precision("fp32", "cuda:1") == ("cuda:1", None)


def test_fp16_without_cuda_names_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DequityError, match="fp16.*needs a CUDA GPU.*bf16"):
        load_model("efficientnet-lite0", device="cpu", precision="fp16")
    with pytest.raises(DequityError, match="fp16.*needs a CUDA GPU"):
        resolve_precision("fp16", None)  # no device: CPU, as CUDA is absent
    with pytest.raises(DequityError, match="is_available\\(\\) is False; pass device='cpu'"):
        resolve_precision("fp16", "cuda")


def test_bad_precision_values():
    with pytest.raises(DequityError, match="precision must be one of"):
        load_model("efficientnet-lite0", device="cpu", precision="half")
    with pytest.raises(DequityError, match="unknown device"):
        resolve_precision("fp32", "tpu-ish")
    fo_model = load_model("efficientnet-lite0", device="cpu")
    with pytest.raises(DequityError, match="set the precision of your FiftyOne model"):
        load_model(fo_model, precision="bf16")
    assert load_model(fo_model) is fo_model


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_fp16_on_cuda_is_close_to_fp32():
    fp32 = load_model("efficientnet-lite0", device="cuda", precision="fp32")
    auto = load_model("efficientnet-lite0", device="cuda")
    assert auto.autocast_dtype is torch.float16
    a, b = _embed(fp32), _embed(auto)
    assert b.dtype == np.float32 and row_cosines(a, b).min() > 0.99


# --- cuML backend ----------------------------------------------------------


def _blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(0, 0.1, (40, 8)), rng.normal(5, 0.1, (20, 8))])


def test_cuml_backend_without_cuml_says_how_to_install(monkeypatch):
    monkeypatch.setattr(dp, "cuml_available", lambda: False)
    with pytest.raises(DequityError, match="pip install cuml-cu12"):
        projection_params("pca", {"backend": "cuml"})
    with pytest.raises(DequityError, match="pip install cuml-cu12"):
        clustering_params("hdbscan", {"backend": "cuml"})
    with pytest.raises(DequityError, match="pip install cuml-cu12"):
        cluster(_blobs(), "dbscan", eps=1.0, backend="cuml")
    with pytest.raises(DequityError, match="backend must be one of"):
        project(_blobs(), "pca", backend="gpu")


def test_auto_backend_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.setattr(dp, "cuml_available", lambda: False)
    x = _blobs()
    np.testing.assert_array_equal(
        project(x, "pca", n_components=3, backend="auto"), project(x, "pca", n_components=3)
    )
    labels = cluster(x, "hdbscan", min_cluster_size=5, backend="auto")
    np.testing.assert_array_equal(labels, cluster(x, "hdbscan", min_cluster_size=5))
    assert sorted(np.bincount(labels).tolist()) == [20, 40]


def test_cuml_only_options_are_checked_at_the_door(monkeypatch):
    monkeypatch.setattr(dp, "cuml_available", lambda: True)
    with pytest.raises(DequityError, match="2 components, not 3"):
        projection_params("tsne", {"backend": "cuml"})
    with pytest.raises(DequityError, match="'opentsne' has no cuML version"):
        projection_params("opentsne", {"backend": "cuml"})
    with pytest.raises(DequityError, match=r"\['n_jobs'\] are scikit-learn"):
        clustering_params("dbscan", {"backend": "cuml", "n_jobs": 2})
    assert projection_params("tsne", {"backend": "cuml", "n_components": 2})["backend"] == "cuml"


@pytest.fixture()
def fake_cuml(monkeypatch):
    """A stand-in ``cuml`` package whose estimators wrap scikit-learn/hdbscan and log calls."""
    import hdbscan
    from sklearn.cluster import DBSCAN
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    calls: list[tuple[str, dict]] = []

    def fake(name, cls, **extra):
        def make(output_type=None, **kwargs):
            assert output_type == "numpy"
            calls.append((name, kwargs))
            return cls(**kwargs, **extra)

        return make

    modules = {
        "cuml": {},
        "cuml.decomposition": {"PCA": fake("PCA", PCA)},
        "cuml.manifold": {"TSNE": fake("TSNE", TSNE)},
        "cuml.cluster": {
            "DBSCAN": fake("DBSCAN", DBSCAN),
            "HDBSCAN": fake("HDBSCAN", hdbscan.HDBSCAN),
        },
    }
    for name, attrs in modules.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    monkeypatch.setattr(dp, "cuml_available", lambda: True)
    return calls


def test_cuml_backend_dispatches_to_cuml(fake_cuml):
    x = _blobs()
    assert project(x, "pca", n_components=3, backend="cuml").shape == (60, 3)
    assert project(x, "tsne", n_components=2, perplexity=5, backend="auto").shape == (60, 2)
    project(x, "tsne", perplexity=5, backend="auto")  # 3 components: sklearn
    labels = cluster(x, "hdbscan", min_cluster_size=5, backend="cuml")
    assert sorted(np.bincount(labels).tolist()) == [20, 40]
    cluster(x, "dbscan", eps=1.0, min_samples=5, backend="auto")
    cluster(x, "dbscan", eps=1.0, min_samples=5, n_jobs=1, backend="auto")  # sklearn
    assert [name for name, _ in fake_cuml] == ["PCA", "TSNE", "HDBSCAN", "DBSCAN"]
    assert "init" not in fake_cuml[1][1] and "core_dist_n_jobs" not in fake_cuml[2][1]


@pytest.mark.skipif(not dp.cuml_available(), reason="needs RAPIDS cuML and a GPU")
def test_real_cuml_matches_the_cpu():
    x = _blobs().astype(np.float32)
    assert project(x, "pca", n_components=3, backend="cuml").shape == (60, 3)
    labels = cluster(x, "hdbscan", min_cluster_size=5, backend="cuml")
    assert sorted(np.bincount(labels[labels >= 0]).tolist()) == [20, 40]
