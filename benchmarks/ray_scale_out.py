"""Embedding on a local Ray instance against the normal path, on the demo images.

Both paths embed the bundled demo frames (199 JPEGs) and the same frames three
times over (597), with EfficientNet-Lite0, batch 32 and 2 workers. The
normal path is ``dequity.sources.embeddings.from_model``; Ray's is
``dequity.sources.ray.embed_with_ray`` on a local instance with 2 CPUs.
"Per extra image" is the throughput between the two sizes, which leaves out
each call's fixed start-up (Ray starts its actors, importing torch and
loading the model, on every call). Raw values go to
``benchmarks/results-ray.json``; the table in ``docs/scale_out.md`` is
generated from them.
"""

from __future__ import annotations

from benchmarks.common import save_raw, timed
from benchmarks.embedding import BATCH, demo_images_dataset
from reporting import md_table

NAME = "ray"
#: the page whose generated block this benchmark fills
DOCUMENT = "docs/scale_out.md"
MODEL = "efficientnet-lite0"
WORKERS = 2


def measure(sizes: tuple[int, ...]) -> dict:
    """Seconds of each path per size, Ray's start-up, and the vectors' worst cosine."""
    import ray
    from sklearn.metrics.pairwise import paired_cosine_distances

    from dequity.sources.embeddings import from_model
    from dequity.sources.models import load_model
    from dequity.sources.ray import embed_with_ray

    fo_model = load_model(MODEL, device="cpu")
    start_s, _ = timed(
        ray.init, address="local", num_cpus=WORKERS, include_dashboard=False, log_to_driver=False
    )
    values = {"ray_start_s": start_s, "sizes": []}
    try:
        for n in sizes:
            dataset = demo_images_dataset(n)
            try:
                normal_s, normal = timed(
                    from_model, dataset, fo_model, batch_size=BATCH, num_workers=WORKERS
                )
                ray_s, on_ray = timed(
                    embed_with_ray, dataset, MODEL, num_workers=WORKERS, batch_size=BATCH
                )
            finally:
                dataset.delete()
            cosine = 1 - paired_cosine_distances(normal.vectors, on_ray.vectors)
            values["sizes"].append(
                {"n": n, "normal_s": normal_s, "ray_s": ray_s, "min_cosine": float(cosine.min())}
            )
    finally:
        ray.shutdown()
    return values


def table(values: dict) -> str:
    """Rows per path: seconds (images/s) per size, and images/s between the sizes."""
    sizes = values["sizes"]
    first, last = sizes[0], sizes[-1]
    rows = []
    for label, key in (
        (f"normal path, `from_model(num_workers={WORKERS})`", "normal_s"),
        (f"`embed_with_ray(num_workers={WORKERS})`", "ray_s"),
    ):
        cells = [f"{s[key]:.1f} s ({s['n'] / s[key]:.1f} img/s)" for s in sizes]
        extra = (last["n"] - first["n"]) / (last[key] - first[key])
        rows.append([label, *cells, f"{extra:.1f} img/s"])
    headers = ["path", *(f"{s['n']} images" for s in sizes), "per extra image"]
    worst = min(s["min_cosine"] for s in sizes)
    return (
        md_table(headers, rows)
        + f"\n\nStarting the local Ray instance took {values['ray_start_s']:.1f} s. "
        f"The two paths' vectors of each image differ in cosine similarity by at most "
        f"{1 - worst:.1e}."
    )


def readme_block(record: dict) -> str:
    """The block of ``docs/scale_out.md`` from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    return table(record["values"])


def run(quick: bool) -> str:
    """199 and 597 images (64 and 128 in quick mode)."""
    values = measure((64, 128) if quick else (199, 597))
    if not quick:
        save_raw(
            NAME,
            values,
            {"model": MODEL, "batch": BATCH, "workers": WORKERS},
            block=readme_block,
            document=DOCUMENT,
        )
    return "### Embedding on a local Ray instance against the normal path\n\n" + table(values)


if __name__ == "__main__":
    print(run(quick=False))
