"""Natural-media corpus: photos and clips found inside an installed package (never imported),
random crops written once, clips copied; a missing package is named with the install hint."""

import sys

import numpy as np
import pytest
from PIL import Image

from pretrain.data.corpus import NaturalMediaConfig, build_natural_media, package_folder, random_crops


@pytest.fixture
def media_package(tmp_path, monkeypatch):
    """A package `fakemedia` on sys.path whose import would fail: the corpus must not import it."""
    pkg = tmp_path / "site" / "fakemedia"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('importing the media package is not allowed')\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(pkg / "data" / "photo.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(pkg / "data" / "icon.png")  # too small
    (pkg / "data" / "clip.mp4").write_bytes(b"not decoded here")
    (pkg / "data" / "clip_distorted.mp4").write_bytes(b"excluded")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield pkg
    sys.modules.pop("fakemedia", None)


def test_builds_crops_and_copies_clips_without_importing(media_package, tmp_path):
    cfg = NaturalMediaConfig(image_packages=["fakemedia/data"], video_packages=["fakemedia/data"],
                             exclude=["distorted"], crops_per_image=5, size=64)
    stats = build_natural_media(cfg, tmp_path / "out")
    assert stats == {"photos": 1, "skipped_photos": 1, "crops": 5, "clips": 1}
    crops = sorted((tmp_path / "out" / "images").iterdir())
    assert [p.name for p in crops] == [f"photo_{k:03d}.png" for k in range(5)]
    assert all(np.asarray(Image.open(p)).shape == (64, 64, 3) for p in crops)
    assert [p.name for p in (tmp_path / "out" / "videos").iterdir()] == ["clip.mp4"]
    before = {p: p.stat().st_mtime_ns for p in crops}
    assert build_natural_media(cfg, tmp_path / "out") == stats  # a rerun keeps what is there
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert "fakemedia" not in sys.modules


def test_random_crops_are_seeded_and_start_with_the_centre():
    image = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    a = random_crops(image, 4, 0.5, 32, np.random.default_rng(7))
    b = random_crops(image, 4, 0.5, 32, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[1], a[2])
    centre = np.asarray(Image.fromarray(image[:, 15:105]).resize((32, 32), Image.Resampling.BOX))
    assert np.array_equal(a[0], centre)


def test_missing_package_names_the_install_extra():
    with pytest.raises(FileNotFoundError, match=r"package 'no_such_media_pkg' is not installed: pip install -e \"\.\[corpus\]\""):
        package_folder("no_such_media_pkg/data")
