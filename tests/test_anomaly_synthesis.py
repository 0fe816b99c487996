"""Tests of the anomaly synthesizer (``datasets/anomaly_synthesis.py``, ``datasets/synthesis/``).

Every input is drawn from a seeded generator; images are small so the file runs in seconds.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from datasets.anomaly_synthesis import KINDS, AnomalySynthesizer, estimate_foreground, perlin_noise
from datasets.synthesis import DEFECTS

SYNTHESIS_DIR = Path(__file__).resolve().parents[1] / "datasets" / "synthesis"


def _changed(before: Image.Image, after: Image.Image, tolerance: int) -> np.ndarray:
    a, b = np.asarray(before).astype(np.int16), np.asarray(after).astype(np.int16)
    d = np.abs(a - b)
    return (d.max(axis=2) if d.ndim == 3 else d) > tolerance


def _disc_image(h: int = 128, w: int = 160, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A dark, slightly textured disc on a light, slightly noisy background, and the disc mask."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[0:h, 0:w]
    disc = (y - 0.5 * h) ** 2 + (x - 0.55 * w) ** 2 <= (0.33 * min(h, w)) ** 2
    img = np.full((h, w, 3), 210.0)
    img[disc] = (70, 80, 95)
    img[disc] += 25 * np.sin(x * 0.7 + y * 0.3)[disc][:, None]  # some surface texture
    img += rng.normal(0, 3, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)), disc


def _noise_image(h: int = 96, w: int = 96, seed: int = 1) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_deterministic_per_seed_epoch_index():
    img, _ = _disc_image()
    a = AnomalySynthesizer(seed=3)
    out1, m1 = a.synth(img, epoch=2, index=5)
    out2, m2 = AnomalySynthesizer(seed=3).synth(img, epoch=2, index=5)
    assert np.array_equal(np.asarray(out1), np.asarray(out2)) and np.array_equal(m1, m2)
    outs = {np.asarray(a.synth(img, 2, i)[0]).tobytes() for i in range(6)}
    outs |= {np.asarray(a.synth(img, e, 5)[0]).tobytes() for e in range(3, 6)}
    assert len(outs) == 9  # every (epoch, index) its own defect
    other, _ = AnomalySynthesizer(seed=4).synth(img, 2, 5)
    assert not np.array_equal(np.asarray(other), np.asarray(out1))


def test_pickled_synthesizer_gives_identical_output(tmp_path):
    """DataLoader workers receive a pickled copy; it must draw the same defects."""
    rng = np.random.default_rng(11)
    Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    img, _ = _disc_image()
    s = AnomalySynthesizer(seed=9, texture_dir=tmp_path)
    copy = pickle.loads(pickle.dumps(s))
    for i in range(4):
        (o1, m1), (o2, m2) = s.synth(img, 0, i), copy.synth(img, 0, i)
        assert np.array_equal(np.asarray(o1), np.asarray(o2)) and np.array_equal(m1, m2)


@pytest.mark.parametrize("tolerance", [0, 8, 40])
def test_mask_is_exactly_the_changed_pixels(tolerance):
    img, _ = _disc_image()
    s = AnomalySynthesizer(seed=0, tolerance=tolerance)
    for i in range(8):
        out, mask = s.synth(img, 0, i)
        assert out.size == img.size and out.mode == img.mode
        assert mask.dtype == bool and mask.shape == (img.height, img.width)
        assert mask.any()
        assert np.array_equal(mask, _changed(img, out, tolerance))


def test_defect_area_range():
    img = _noise_image(128, 128)
    s = AnomalySynthesizer(seed=5)
    fractions = np.array([s.synth(img, 0, i)[1].mean() for i in range(30)])
    assert fractions.min() > 0 and fractions.max() < 0.2
    assert np.median(fractions) > 0.003


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_can_be_forced(kind):
    img, _ = _disc_image(seed=2)
    s = AnomalySynthesizer(seed=1, kinds=(kind,), p_multiple=0.0)
    for i in range(4):
        out, mask = s.synth(img, 1, i)
        assert mask.any() and np.array_equal(mask, _changed(img, out, s.tolerance))


def test_several_defects_per_image():
    img = _noise_image(128, 128)
    s = AnomalySynthesizer(seed=2, p_multiple=1.0, max_defects=4, kinds=("cutpaste",))
    _, mask = s.synth(img, 0, 0)
    parts = cv2.connectedComponents(mask.astype(np.uint8))[0] - 1
    assert parts >= 2


def test_estimate_foreground_finds_the_disc():
    img, disc = _disc_image()
    fg = estimate_foreground(img)
    assert fg is not None and fg.shape == disc.shape
    iou = (fg & disc).sum() / (fg | disc).sum()
    assert iou > 0.9


def test_estimate_foreground_saturated_object_on_gray():
    rng = np.random.default_rng(4)
    img = np.full((100, 140, 3), 128.0) + rng.normal(0, 4, (100, 140, 3))
    obj = np.zeros((100, 140), bool)
    obj[30:75, 40:110] = True
    img[obj] = (128, 128, 128) + np.array([90.0, -60.0, -60.0])  # as bright as the gray, but red
    fg = estimate_foreground(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)))
    assert fg is not None and (fg & obj).sum() / (fg | obj).sum() > 0.9


def test_defects_land_on_the_foreground():
    img, disc = _disc_image()
    s = AnomalySynthesizer(seed=6)
    inside = [(m & disc).sum() / m.sum() for m in (s.synth(img, 0, i)[1] for i in range(16))]
    assert min(inside) >= 0.9
    # without placement they land anywhere
    free = AnomalySynthesizer(seed=6, on_foreground=False)
    shares = [(m & disc).sum() / m.sum() for m in (free.synth(img, 0, i)[1] for i in range(16))]
    assert min(shares) < 0.9


def test_no_foreground_falls_back_to_anywhere():
    img = _noise_image()
    assert estimate_foreground(img) is None
    s = AnomalySynthesizer(seed=0)
    centres = []
    for i in range(12):
        out, mask = s.synth(img, 0, i)
        assert mask.any() and np.array_equal(mask, _changed(img, out, s.tolerance))
        centres.append(np.argwhere(mask).mean(0))
    assert np.ptp(np.array(centres), axis=0).min() > 20  # spread over the image


def test_grayscale_stays_grayscale():
    img, disc = _disc_image()
    gray = img.convert("L")
    s = AnomalySynthesizer(seed=0)
    for i in range(len(KINDS) + 3):
        out, mask = s.synth(gray, 0, i)
        assert out.mode == "L" and out.size == gray.size
        assert mask.any() and np.array_equal(mask, _changed(gray, out, s.tolerance))
        assert (mask & disc).sum() >= 0.9 * mask.sum()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA"])
@pytest.mark.parametrize("size", [(120, 90), (90, 120), (7, 5), (420, 350)])
def test_non_square_and_modes(mode, size):
    img = _noise_image(size[1], size[0], seed=3).convert(mode)
    s = AnomalySynthesizer(seed=2)
    for i in range(3):
        out, mask = s.synth(img, 0, i)
        assert out.mode == mode and out.size == size and mask.shape == (size[1], size[0])
        assert mask.any() and np.array_equal(mask, _changed(img, out, s.tolerance))
        if mode in ("RGBA", "LA"):  # alpha untouched
            assert np.array_equal(np.asarray(out)[..., -1], np.asarray(img)[..., -1])


def test_large_grayscale_object():
    img, disc = _disc_image(400, 520)
    gray = img.convert("L")
    fg = estimate_foreground(gray)
    assert fg is not None and (fg & disc).sum() / (fg | disc).sum() > 0.9
    out, mask = AnomalySynthesizer(seed=1).synth(gray, 0, 0)
    assert out.mode == "L" and mask.any() and (mask & disc).sum() >= 0.9 * mask.sum()


def test_synth_array_matches_synth():
    img, _ = _disc_image()
    s = AnomalySynthesizer(seed=8)
    out, mask = s.synth(img, 1, 2)
    arr_out, arr_mask = s.synth_array(np.asarray(img), 1, 2)
    assert np.array_equal(arr_out, np.asarray(out)) and np.array_equal(arr_mask, mask)
    g_out, g_mask = s.synth_array(np.asarray(img.convert("L")), 1, 2)
    assert g_out.ndim == 2 and g_mask.any()


def test_texture_dir_with_images_of_other_sizes(tmp_path):
    rng = np.random.default_rng(12)
    Image.fromarray(rng.integers(0, 256, (37, 300, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(rng.integers(0, 256, (500, 45), dtype=np.uint8)).save(tmp_path / "tall_gray.jpg")
    (tmp_path / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)).save(tmp_path / "sub" / "tiny.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(UserWarning, match="broken.png"):
        s = AnomalySynthesizer(seed=0, texture_dir=tmp_path, kinds=("texture",),
                               texture_weights={"self": 0, "procedural": 0, "folder": 1})
    assert len(s._textures) == 3
    img, _ = _disc_image()
    for image in (img, img.convert("L")):
        for i in range(4):
            out, mask = s.synth(image, 0, i)
            assert out.mode == image.mode and mask.any()
            assert np.array_equal(mask, _changed(image, out, s.tolerance))


def test_texture_dir_file_failing_on_decode_is_skipped(tmp_path):
    rng = np.random.default_rng(13)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "good.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])  # the header opens, decoding fails
    s = AnomalySynthesizer(seed=0, texture_dir=tmp_path, kinds=("texture",),
                           texture_weights={"self": 0, "procedural": 0, "folder": 1})
    img, _ = _disc_image()
    with pytest.warns(UserWarning, match="cut.png"):
        results = [s.synth(img, 0, i) for i in range(8)]
    assert all(m.any() for _, m in results)


def test_texture_dir_errors(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + ".*no image files"):
        AnomalySynthesizer(seed=0, texture_dir=tmp_path)
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=re.escape(str(missing)) + ": no such folder"):
        AnomalySynthesizer(seed=0, texture_dir=missing)
    (tmp_path / "bad.jpg").write_bytes(b"\x00" * 10)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="could be read"):
        AnomalySynthesizer(seed=0, texture_dir=tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kinds"):
        AnomalySynthesizer(seed=0, kinds=("bogus",))
    with pytest.raises(ValueError, match="tolerance"):
        AnomalySynthesizer(seed=0, tolerance=64)
    with pytest.raises(ValueError, match="weights"):
        AnomalySynthesizer(seed=0, kinds=("scar",), weights={"scar": 0})
    with pytest.raises(ValueError, match="mode"):
        AnomalySynthesizer(seed=0).synth(Image.new("CMYK", (10, 10)), 0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        AnomalySynthesizer(seed=0).synth(Image.new("RGB", (10, 10)), -1, 0)


def test_fallback_when_no_draw_changes_anything(monkeypatch):
    """All draws empty → the documented fallback ellipse, still an exact non-empty mask."""
    monkeypatch.setitem(DEFECTS, "texture", lambda rng, canvas, area: None)
    for image in (Image.new("RGB", (60, 40), (0, 128, 255)), _disc_image()[0].convert("L")):
        out, mask = AnomalySynthesizer(seed=0, kinds=("texture",), max_tries=3).synth(image, 0, 0)
        assert mask.any() and np.array_equal(mask, _changed(image, out, 8))
        assert np.abs(np.asarray(out).astype(int) - np.asarray(image))[mask].max() == 64


def test_flat_image_still_gets_a_defect():
    flat = Image.new("RGB", (64, 48), (200, 200, 200))
    for kind in KINDS:
        out, mask = AnomalySynthesizer(seed=1, kinds=(kind,)).synth(flat, 0, 0)
        assert mask.any() and np.array_equal(mask, _changed(flat, out, 8))


def test_perlin_noise():
    rng = np.random.default_rng(0)
    n = perlin_noise(rng, (64, 96), (4, 6))
    assert n.shape == (64, 96) and n.dtype == np.float32
    assert np.abs(n).max() <= 0.75 and n.std() > 0.05
    # smooth: neighbouring samples differ far less than the range
    assert np.abs(np.diff(n, axis=1)).max() < 0.1 * (n.max() - n.min()) + 0.05
    assert np.array_equal(n, perlin_noise(np.random.default_rng(0), (64, 96), (4, 6)))


def test_independent_of_the_test_defect_generator():
    """The synthesizer must not use the code that draws the evaluation defects."""
    sources = list(SYNTHESIS_DIR.glob("*.py")) + [SYNTHESIS_DIR.parent / "anomaly_synthesis.py"]
    for path in sources:
        for line in path.read_text().splitlines():
            if re.match(r"\s*(from|import)\s", line):
                assert "synthetic" not in line, f"{path.name}: {line.strip()}"
