"""Images whose name, header or file lies: each is embedded as it looks, or named and skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image, ImageOps

from dequity.sources.embeddings import from_model
from dequity.sources.models import load_image

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "data"
#: EXIF orientation tag, and the value "rotate 90 degrees clockwise to display"
ORIENTATION, ROTATED = 0x0112, 6


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real demo frame (384 x 288): wider than tall, so a rotation shows."""
    return Image.open(sorted(DEMO.iterdir())[0]).convert("RGB")


@pytest.fixture(scope="module")
def liars(photo: Image.Image, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files that lie about themselves, written from the same real photo."""
    folder = tmp_path_factory.mktemp("liars")
    files = {name: folder / name for name in (
        "png-named.jpg", "exif-rotated.jpg", "palette.png", "palette-transparent.png",
        "cmyk.jpg", "animated.gif", "grey16.png",
    )}  # fmt: skip
    photo.save(files["png-named.jpg"], format="PNG")
    exif = Image.Exif()
    exif[ORIENTATION] = ROTATED
    photo.save(files["exif-rotated.jpg"], exif=exif, quality=95)
    photo.convert("P", palette=Image.ADAPTIVE).save(files["palette.png"])
    photo.convert("P", palette=Image.ADAPTIVE).save(
        files["palette-transparent.png"], transparency=0
    )
    photo.convert("CMYK").save(files["cmyk.jpg"], quality=95)
    frames = [photo, ImageOps.invert(photo)]
    frames[0].save(files["animated.gif"], save_all=True, append_images=frames[1:], duration=100)
    grey = np.asarray(photo.convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(files["grey16.png"])
    return files


def _as_displayed(path: Path) -> np.ndarray:
    """What Pillow shows: the first frame, EXIF orientation applied, in RGB."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode.startswith("I"):
            return np.repeat(np.rint(np.asarray(img) / 257)[..., None], 3, axis=2)
        return np.asarray(img.convert("RGB"), dtype=float)


def test_each_lying_file_decodes_to_the_pixels_pillow_displays(liars):
    for name, path in liars.items():
        got = np.asarray(load_image(str(path)), dtype=float)
        want = _as_displayed(path)
        assert got.shape == want.shape, name
        assert np.abs(got - want).max() <= 1, name


def test_an_exif_rotation_is_applied_also_when_decoding_at_reduced_size(liars, photo):
    width, height = photo.size
    full = load_image(str(liars["exif-rotated.jpg"]))
    small = load_image(str(liars["exif-rotated.jpg"]), min_size=64)
    assert full.size == (height, width)  # displayed upright: taller than wide
    assert small.size[1] > small.size[0] and min(small.size) >= 64


def test_unreadable_and_vanished_images_are_skipped_by_name(liars, tmp_path, caplog):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    vanished = tmp_path / "vanished.jpg"
    Image.open(liars["cmyk.jpg"]).save(vanished)
    dataset = fo.Dataset()
    paths = [*map(str, liars.values()), str(empty), str(vanished)]
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    vanished.unlink()  # listed, then gone before it is read
    with caplog.at_level(logging.WARNING, logger="dequity"):
        emb = from_model(dataset, "efficientnet-lite0", device="cpu", progress=False)
    ids = dict(zip(dataset.values("filepath"), dataset.values("id")))
    assert set(emb.missing_ids) == {ids[str(empty)], ids[str(vanished)]}
    assert len(emb.sample_ids) == len(liars) and np.isfinite(emb.vectors).all()
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("dequity"))
    assert str(empty) in ours and str(vanished) in ours
    assert f"{empty} (an empty file)" in ours and "FileNotFoundError" in ours
    dataset.delete()


def test_an_exif_rotated_photo_embeds_as_its_upright_twin(liars, photo, tmp_path):
    upright = tmp_path / "upright.jpg"
    ImageOps.exif_transpose(Image.open(liars["exif-rotated.jpg"])).save(upright, quality=95)
    unrotated = tmp_path / "unrotated.jpg"
    photo.save(unrotated, quality=95)
    dataset = fo.Dataset()
    files = [liars["exif-rotated.jpg"], upright, unrotated]
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in files])
    emb = from_model(dataset, "efficientnet-lite0", device="cpu", progress=False)
    v = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    assert v[0] @ v[1] > 0.99  # the rotated file is embedded as displayed
    assert v[0] @ v[2] < v[0] @ v[1]  # not as stored
    dataset.delete()
