"""High bit-depth images are scaled to 8 bits, not clipped to white."""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image

from dequity.sources.embeddings import from_model
from dequity.sources.models import load_image

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "data"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path, Path]]:
    """Real photos as 8-bit grey PNG, 16-bit PNG and float TIFF of the same pixels."""
    folder = tmp_path_factory.mktemp("depths")
    out = []
    for path in sorted(DEMO.iterdir())[:4]:
        grey = np.asarray(Image.open(path).convert("L"))
        png8, png16, tif = (folder / f"{path.stem}{s}" for s in ("-8.png", "-16.png", "-f.tif"))
        Image.fromarray(grey).save(png8)
        Image.fromarray(grey.astype(np.uint16) * 257).save(png16)
        Image.fromarray(grey.astype(np.float32) / 255).save(tif)
        out.append((png8, png16, tif))
    return out


def test_16_bit_and_float_images_load_as_their_8_bit_pixels(photos):
    for png8, png16, tif in photos:
        want = np.asarray(load_image(str(png8)), dtype=int)
        assert Image.open(png16).mode.startswith("I") and Image.open(tif).mode == "F"
        for path in (png16, tif):
            got = np.asarray(load_image(str(path)), dtype=int)
            assert np.abs(got - want).max() <= 1, path.name
        # what PIL's own conversion does to the 16-bit file: nearly all white
        assert np.asarray(Image.open(png16).convert("RGB")).mean() > 200 > want.mean()


def test_embeddings_of_16_bit_images_match_their_8_bit_twins(photos):
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=str(p)) for trio in photos for p in trio])
    emb = from_model(dataset, "efficientnet-lite0", device="cpu", progress=False)
    vectors = dict(zip(emb.sample_ids, emb.vectors))
    by_path = dict(zip(dataset.values("filepath"), dataset.values("id")))
    for png8, png16, tif in photos:
        a = vectors[by_path[str(png8)]]
        for other in (png16, tif):
            b = vectors[by_path[str(other)]]
            assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999, other.name
    dataset.delete()
