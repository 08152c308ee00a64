"""compute_dequity end to end on the real demo images, through a real MongoDB."""

import csv
import json
import pickle

import numpy as np
import pytest

import dequity
import dequity.sources.embeddings
from dequity.pipeline.likelihood import cluster_sizes
from tests.conftest import EMBEDDINGS_FIELD

FIELDS = ("dequity_cluster", "dequity_likelihood", "dequity_weight")


@pytest.fixture()
def computed(demo_run):
    """The session's demo dataset with its default run (read only)."""
    return demo_run


def test_fields_on_every_sample(computed):
    dataset, results = computed
    for field in FIELDS:
        assert dataset.count(field) == len(dataset) == 199
    schema = dataset.get_field_schema()
    assert "Generalized Focal Loss" in schema["dequity_weight"].description
    ids, clusters, likelihoods, weights = dataset.values(["id", *FIELDS])
    share = cluster_sizes(np.array(clusters)) / cluster_sizes(np.array(clusters)).max()
    # the whole vector's likelihood scales each cluster share by k-NN crowding, in (0, 1]
    views = {name: dict(zip(results.sample_ids, v)) for name, v in results.views.items()}
    image = np.array([views["image"][i] for i in ids])
    crowding = (image / share) ** 2
    assert 0 < crowding.min() and np.isclose(crowding.max(), 1.0)
    # the stored likelihood is the smallest view's value
    smallest = [min(v[i] for v in views.values()) for i in ids]
    np.testing.assert_allclose(likelihoods, smallest)
    assert min(clusters) >= 0  # noise joined its nearest cluster
    np.testing.assert_allclose(weights, dequity.gfl_weight(np.array(likelihoods), 1.0, 5.0))
    assert results.num_clusters >= 2
    assert 0 < min(weights) < max(weights) <= 1
    assert "dequity_weight" in str(dataset.list_indexes())


def test_embeddings_from_the_model_are_meaningful(computed):
    """Stored embeddings: neighbouring video frames are closer than distant ones."""
    dataset, _ = computed
    vectors = np.stack(dataset.sort_by("filepath").values(EMBEDDINGS_FIELD))
    assert vectors.shape == (199, 1776)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    # cosine distances: consecutive frames at most half as far apart as frames 100 apart
    neighbour = 1 - np.mean(np.sum(unit[:-1] * unit[1:], axis=1))
    distant = 1 - np.mean(np.sum(unit[:-100] * unit[100:], axis=1))
    assert neighbour < 0.5 * distant


def test_rarest_first_sort(computed):
    dataset, _ = computed
    ranked = dataset.sort_by("dequity_weight", reverse=True)
    likelihoods = ranked.values("dequity_likelihood")
    assert likelihoods == sorted(likelihoods)


def test_run_is_listed_and_reloads_from_the_database(computed):
    dataset, results = computed
    assert dequity.list_dequity_runs(dataset) == ["dequity"]
    info = dataset.get_run_info("dequity")
    assert info.config.method == "dequity"
    assert info.config.projection == "pca" and info.config.clustering == "hdbscan_knn"
    assert info.config.noise == "nearest"
    assert info.config.clustering_kwargs == {
        "min_cluster_size": 10,
        "min_samples": 1,
        "fit_samples": 5_000,
        "k": 30,
        "density_power": 0.3,
    }
    assert info.config.model == "efficientnet-lite0-layers"
    fresh = dataset.load_run_results("dequity", cache=False)
    assert isinstance(fresh, dequity.DequityResults)
    assert fresh.labels == results.labels and fresh.sample_ids == results.sample_ids
    assert len(fresh.points) == 199 and len(fresh.points[0]) == 2


def test_reuse_stored_embeddings_gives_the_same_clusters(computed):
    dataset, results = computed
    again = dequity.compute_dequity(dataset, "again", embeddings=EMBEDDINGS_FIELD, progress=False)
    assert again.labels == results.labels
    dequity.delete_dequity_run(dataset, "again")


def test_noise_nearest_puts_every_frame_in_its_nearest_cluster(computed):
    dataset, _ = computed
    singleton = np.array(
        dequity.compute_dequity(
            dataset,
            "singleton",
            embeddings=EMBEDDINGS_FIELD,
            clustering="hdbscan",
            noise="singleton",
            views=None,  # the cluster share alone
            progress=False,
        ).labels
    )
    assert (singleton < 0).any(), "the demo run should leave some frames noise"
    nearest = dequity.compute_dequity(
        dataset,
        "nearest",
        embeddings=EMBEDDINGS_FIELD,
        clustering="hdbscan",
        noise="nearest",
        views=None,
        progress=False,
    )
    labels = np.array(nearest.labels)
    clustered = singleton >= 0
    assert (labels >= 0).all()
    np.testing.assert_array_equal(labels[clustered], singleton[clustered])
    sizes = np.bincount(labels)
    np.testing.assert_allclose(nearest.likelihoods, sizes[labels] / sizes.max())
    assert sorted(dataset.values("nearest_cluster")) == sorted(labels.tolist())
    dequity.delete_dequity_run(dataset, "nearest")
    dequity.delete_dequity_run(dataset, "singleton")


def test_reweight_changes_only_weights(demo):
    results = dequity.compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    before = demo.values(["dequity_cluster", "dequity_likelihood", "dequity_weight"])
    new_weights = results.reweight(eta=0.5, gamma=2.0)
    after = demo.values(["dequity_cluster", "dequity_likelihood", "dequity_weight"])
    assert after[0] == before[0] and after[1] == before[1]
    assert after[2] != before[2]
    np.testing.assert_allclose(after[2], dequity.gfl_weight(np.array(after[1]), eta=0.5, gamma=2.0))
    np.testing.assert_allclose(sorted(after[2]), sorted(new_weights))
    config = demo.get_run_info("dequity").config
    assert (config.eta, config.gamma) == (0.5, 2.0)
    with pytest.raises(dequity.DequityError, match="eta must be"):
        results.reweight(eta=-1, gamma=2.0)


def test_rename_and_delete_clean_up(demo):
    dequity.compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    values = demo.values("dequity_weight")
    dequity.rename_dequity_run(demo, "dequity", "clip")
    assert demo.list_runs() == ["clip"]
    assert demo.values("clip_weight") == values
    assert not demo.has_sample_field("dequity_weight")
    assert dequity.load_dequity_results(demo, "clip").config.weight_field == "clip_weight"
    dequity.delete_dequity_run(demo, "clip")
    assert demo.list_runs() == []
    assert not any(f.startswith("clip_") for f in demo.get_field_schema())


def test_several_run_keys_coexist(demo):
    dequity.compute_dequity(demo, "a", embeddings=EMBEDDINGS_FIELD, progress=False)
    dequity.compute_dequity(
        demo, "b", embeddings=EMBEDDINGS_FIELD, projection="opentsne", eta=0.5, progress=False
    )
    assert dequity.list_dequity_runs(demo) == ["a", "b"]
    assert demo.count("a_weight") == demo.count("b_weight") == 199
    dequity.delete_dequity_run(demo, "a")
    assert demo.count("b_weight") == 199 and not demo.has_sample_field("a_weight")


def test_export_files_read_back(demo, tmp_path):
    results = dequity.compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    ids, paths, weights, likelihoods = demo.values(
        ["id", "filepath", "dequity_weight", "dequity_likelihood"]
    )
    by_id = dict(zip(ids, weights))

    doc = json.loads(dequity.export_weights(demo, "dequity", tmp_path / "w.json").read_text())
    assert doc["config"]["eta"] == 1.0 and len(doc["samples"]) == 199
    assert all(row["weight"] == by_id[row["id"]] for row in doc["samples"])

    with (dequity.export_weights(demo, "dequity", tmp_path / "w.csv")).open() as f:
        rows = list(csv.DictReader(f))
    assert {r["filepath"] for r in rows} == set(paths)
    assert all(float(r["weight"]) == pytest.approx(by_id[r["id"]]) for r in rows)

    pkl = dequity.export_weights(demo, "dequity", tmp_path / "kitti_training_cluster_info.pkl")
    with pkl.open("rb") as f:
        info = pickle.load(f)
    # the authors' loader: likelihood = cluster_size / largest_cluster_size per token
    token_likelihood = {
        token: v["cluster_size"] / v["largest_cluster_size"] for token, v in info.items()
    }
    stems = [p.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in paths]
    assert token_likelihood == pytest.approx(dict(zip(stems, likelihoods)))
    assert {v["cluster_id"] for v in info.values()} == set(results.labels)

    with pytest.raises(dequity.DequityError, match="unknown export format"):
        dequity.export_weights(demo, "dequity", tmp_path / "w.xlsx")


def test_large_collections_stream_through_a_memory_map(computed):
    """Chunked embedding (a memory-mapped store) gives the vectors of the one-pass path."""
    dataset, _ = computed
    view = dataset.take(70, seed=7)
    emb = dequity.sources.embeddings.from_model(view, num_workers=0, chunk_size=32, progress=False)
    assert isinstance(emb.vectors, np.memmap) and emb.vectors.shape == (70, 1776)
    assert emb.sample_ids == view.values("id") and emb.missing_ids == []
    np.testing.assert_allclose(emb.vectors, np.stack(view.values(EMBEDDINGS_FIELD)), atol=1e-4)
