"""Deterministic synthetic anomaly datasets in the MVTec-AD and VisA folder layouts.

Small stand-ins for MVTec AD (Bergmann et al., CVPR 2019) and VisA (Zou et al., ECCV 2022), the
benchmarks of APRIL-GAN (Chen et al., 2023, arXiv:2305.17382), for tests and smoke runs without
the real data. Each category is a simple drawn object or texture; every test anomaly gets one
painted defect (scratch, stain, crack or missing part) and its mask is exactly the set of pixels
that the defect changed. All images then get a light blur and noise. The same seed gives
byte-identical files; each category draws from its own RNG stream (seed + CRC32 of its name).
No meta.json is written here: another module indexes the generated folders.

    python -m datasets.synthetic mvtec /tmp/synth_mvtec --categories bottle grid
    python -m datasets.synthetic visa /tmp/synth_visa --image-size 120 90
"""

from __future__ import annotations

import argparse
import csv
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image

# A scene: image (H, W, 3) float32 0..255, background under removable parts (H, W, 3), object (H, W) bool.
Scene = tuple[np.ndarray, np.ndarray, np.ndarray]
VISA_CSV_HEADER = ["object", "split", "label", "image", "mask"]


# ----------------------------------------------------------------------------- drawing helpers
def _canvas(w: int, h: int, color) -> np.ndarray:
    return np.zeros((h, w, 3), np.float32) + np.asarray(color, np.float32)  # (H, W, 3)


def _jitter(rng: np.random.Generator, color, amount: float = 10.0) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _disk(w: int, h: int, c, r: float) -> np.ndarray:
    y, x = np.ogrid[0:h, 0:w]
    return (x - c[0]) ** 2 + (y - c[1]) ** 2 <= max(r, 1.0) ** 2  # (H, W) bool


def _poly(w: int, h: int, pts, thickness: int = 0) -> np.ndarray:
    """Filled polygon (thickness 0) or open polyline through pts (N, 2) x,y, as (H, W) bool."""
    m, pts = np.zeros((h, w), np.uint8), [np.round(np.asarray(pts)).astype(np.int32).reshape(-1, 1, 2)]
    cv2.polylines(m, pts, False, 255, int(thickness)) if thickness > 0 else cv2.fillPoly(m, pts, 255)
    return m > 0


def _blob(rng: np.random.Generator, c, r: float, k: int = 12) -> np.ndarray:
    """Vertices (k, 2) of an irregular closed polygon of mean radius r around c."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    return np.asarray(c) + np.stack([np.cos(ang), np.sin(ang)], 1) * r * rng.uniform(0.65, 1.3, (k, 1))


def _centre(rng: np.random.Generator, w: int, h: int, amount: float = 0.04) -> np.ndarray:
    return np.array([w, h]) / 2 + rng.uniform(-amount, amount, 2) * min(w, h)


# ----------------------------------------------------------------------------- category renderers
def _bottle(rng: np.random.Generator, w: int, h: int) -> Scene:
    """Top view of a bottle: concentric coloured rings on a dark background."""
    s, c = min(w, h), _centre(rng, w, h)
    img = _canvas(w, h, _jitter(rng, (22, 22, 28), 5))
    bg = img.copy()
    col, r = _jitter(rng, (70, 190, 120), 20), 0.42 * s * rng.uniform(0.95, 1.02)
    obj = _disk(w, h, c, r)
    img[obj] = col
    img[_disk(w, h, c, 0.8 * r)] = col * 0.55
    img[_disk(w, h, c, 0.35 * r)] = col * 0.35
    img[_disk(w, h, c - 0.5 * r, 0.1 * r)] = 230
    return img, bg, obj


def _grid(rng: np.random.Generator, w: int, h: int) -> Scene:
    """Periodic wire mesh (grayscale); missing parts show the dark backing."""
    period = min(w, h) / rng.uniform(10, 13)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ox, oy = rng.uniform(0, period, 2)
    wires = ((x + ox) % period < 0.3 * period) | ((y + oy) % period < 0.3 * period)
    img = _canvas(w, h, rng.uniform(70, 90))
    img[wires] = rng.uniform(160, 185)
    return img, _canvas(w, h, rng.uniform(20, 35)), np.ones((h, w), bool)


def _screw(rng: np.random.Generator, w: int, h: int) -> Scene:
    """A threaded screw at a random angle on a light background (grayscale)."""
    s, c = min(w, h), _centre(rng, w, h, 0.05)
    img = _canvas(w, h, rng.uniform(190, 210))
    bg = img.copy()
    a = rng.uniform(0, np.pi)
    d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    length, half_w, tone = 0.3 * s, 0.07 * s, rng.uniform(95, 125)
    shaft = _poly(w, h, [c - length * d - half_w * n, c + length * d - half_w * n,
                         c + length * d + half_w * n, c - length * d + half_w * n])
    head = _disk(w, h, c - length * d, 0.14 * s)
    obj = shaft | head
    img[obj] = tone
    for t in np.linspace(-0.6, 0.9, 9) * length:  # thread ridges across the shaft
        ridge = _poly(w, h, [c + t * d - half_w * n, c + (t + 0.05 * s) * d + half_w * n], 1)
        img[ridge & shaft] = tone * 0.65
    img[_poly(w, h, [c - length * d - 0.1 * s * n, c - length * d + 0.1 * s * n], 2) & head] = tone * 0.4
    return img, bg, obj


def _carpet(rng: np.random.Generator, w: int, h: int) -> Scene:
    """Woven coloured texture with fibre noise; missing parts show a dark backing."""
    f = 2 * np.pi * rng.uniform(14, 18) / min(w, h)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    weave = np.sin(x * f + rng.uniform(0, 6.3)) * np.sin(y * f + rng.uniform(0, 6.3))  # (H, W)
    fuzz = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
    base = _jitter(rng, (150, 60, 50), 25)
    img = np.clip(base * (1 + 0.15 * weave + 0.12 * fuzz)[..., None], 0, 255).astype(np.float32)
    return img, _canvas(w, h, base * 0.25), np.ones((h, w), bool)


def _capsule(rng: np.random.Generator, w: int, h: int) -> Scene:
    """A horizontal two-coloured pill on a light background."""
    s, c = min(w, h), _centre(rng, w, h)
    img = _canvas(w, h, _jitter(rng, (225, 225, 220), 6))
    bg = img.copy()
    r, half = 0.16 * s, min(0.36 * s, 0.45 * w)
    lc, rc = c - [half - r, 0], c + [half - r, 0]
    body = _poly(w, h, [lc - [0, r], rc - [0, r], rc + [0, r], lc + [0, r]])
    obj = _disk(w, h, lc, r) | _disk(w, h, rc, r) | body
    left = obj & (np.arange(w)[None, :] < c[0])
    img[left], img[obj & ~left] = _jitter(rng, (35, 35, 35), 8), _jitter(rng, (215, 110, 50), 12)
    return img, bg, obj


def _candle(rng: np.random.Generator, w: int, h: int) -> Scene:
    """Top view of candles (cream discs with wicks) on a dark brown background."""
    n = max(1, round(1.5 * w / h))
    img = _canvas(w, h, _jitter(rng, (60, 40, 30), 6))
    bg, obj = img.copy(), np.zeros((h, w), bool)
    r = min(0.25 * h, 0.4 * w / n)
    for i in range(n):
        c = np.array([w * (i + 0.5) / n, h / 2]) + rng.uniform(-0.04, 0.04, 2) * min(w, h)
        disc = _disk(w, h, c, r * rng.uniform(0.92, 1.05))
        obj |= disc
        img[disc] = _jitter(rng, (240, 225, 200), 6)
        img[_disk(w, h, c + rng.uniform(-0.1, 0.1, 2) * r, 0.12 * r)] = (30, 25, 20)
    return img, bg, obj


def _pcb(rng: np.random.Generator, w: int, h: int) -> Scene:
    """A green circuit board with traces, a chip and pads; missing parts show bare board."""
    s = min(w, h)
    img = _canvas(w, h, _jitter(rng, (30, 120, 50), 8))
    for y in np.linspace(0.13, 0.87, 5) * h + rng.uniform(-0.02, 0.02) * h:
        img[_poly(w, h, [(0.04 * w, y), (0.96 * w, y)], max(1, s // 45))] = _jitter(rng, (200, 180, 70), 8)
    bg = img.copy()
    c = _centre(rng, w, h, 0.05)
    chip = _poly(w, h, [c - [0.15 * w, 0.2 * h], c + [0.15 * w, -0.2 * h], c + [0.15 * w, 0.2 * h],
                        c + [-0.15 * w, 0.2 * h]])
    pads = np.zeros((h, w), bool)
    for i in range(4):
        pads |= _disk(w, h, (0.1 * w + i * 0.045 * s, 0.8 * h), 0.022 * s)
    img[chip], img[pads] = _jitter(rng, (25, 25, 25), 5), _jitter(rng, (220, 230, 220), 5)
    return img, bg, chip | pads


# ----------------------------------------------------------------------------- defect painters
# A painter takes (rng, image, background, object mask) and returns (region (H, W) bool, its new
# values (M, 3)). Regions are centred on an object pixel and scaled with the image.
def _contrast(rng: np.random.Generator, img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """A paint colour far from the mean brightness of img under mask m."""
    lum = float(img[m].mean()) if m.any() else 128.0
    return _jitter(rng, (35, 30, 28) if lum > 110 else (225, 220, 205), 10)


def _seed_point(rng: np.random.Generator, obj: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(obj)
    i = rng.integers(len(ys))
    return np.array([xs[i], ys[i]], np.float64)


def _scratch(rng, img, bg, obj):
    """A thin curved line (quadratic Bezier) in a contrasting colour."""
    (h, w), c, a = obj.shape, _seed_point(rng, obj), rng.uniform(0, np.pi)
    d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    half = rng.uniform(0.2, 0.35) * min(w, h)
    p0, p1, ctrl = c - half * d, c + half * d, c + rng.uniform(-0.5, 0.5) * half * n
    t = np.linspace(0, 1, 24)[:, None]  # (24, 1)
    m = _poly(w, h, (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p1, max(2, round(min(w, h) / 32)))
    return m, _contrast(rng, img, m)


def _stain(rng, img, bg, obj):
    """An irregular brownish blob, mostly opaque."""
    h, w = obj.shape
    m = _poly(w, h, _blob(rng, _seed_point(rng, obj), rng.uniform(0.07, 0.12) * min(w, h)))
    return m, 0.15 * img[m] + 0.85 * _contrast(rng, img, m) * np.array([1.0, 0.85, 0.7], np.float32)


def _crack(rng, img, bg, obj):
    """A dark random-walk polyline with one short branch."""
    (h, w), a = obj.shape, rng.uniform(0, 2 * np.pi)
    pts, s = [_seed_point(rng, obj)], min(w, h)
    for _ in range(rng.integers(8, 13)):
        a += rng.normal(0, 0.5)
        pts.append(pts[-1] + s / 18 * np.array([np.cos(a), np.sin(a)]))
    branch, b = [pts[len(pts) // 2]], a + rng.choice([-1.0, 1.0]) * 0.9
    for _ in range(4):
        b += rng.normal(0, 0.4)
        branch.append(branch[-1] + s / 20 * np.array([np.cos(b), np.sin(b)]))
    m = _poly(w, h, pts, max(2, round(s / 48))) | _poly(w, h, branch, max(1, round(s / 64)))
    return m, _contrast(rng, img, m) * 0.8


def _missing(rng, img, bg, obj):
    """An irregular region of the object replaced by the background."""
    h, w = obj.shape
    m = _poly(w, h, _blob(rng, _seed_point(rng, obj), rng.uniform(0.11, 0.17) * min(w, h)))
    return m, bg[m]


DEFECTS = {"scratch": _scratch, "stain": _stain, "crack": _crack, "missing": _missing}


@dataclass(frozen=True)
class Category:
    render: Callable[[np.random.Generator, int, int], Scene]
    gray: bool  # saved as 8-bit "L" images
    defects: tuple[str, ...]  # test anomalies cycle through these; VisA mask id = index + 1


CATEGORIES: dict[str, Category] = {
    "bottle": Category(_bottle, False, ("missing", "stain", "scratch")),
    "grid": Category(_grid, True, ("crack", "scratch", "missing")),
    "screw": Category(_screw, True, ("scratch", "missing")),
    "carpet": Category(_carpet, False, ("stain", "crack", "missing")),
    "capsule": Category(_capsule, False, ("crack", "stain", "missing")),
    "candle": Category(_candle, False, ("stain", "missing")),
    "pcb1": Category(_pcb, False, ("scratch", "missing", "stain")),
}


# ----------------------------------------------------------------------------- image synthesis
def _rng(seed: int, name: str) -> np.random.Generator:
    """Per-category stream from the seed and a stable hash of the name (not Python's hash())."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def _finish(rng: np.random.Generator, img: np.ndarray, gray: bool) -> Image.Image:
    """Gray conversion, light blur and noise, then quantise: (H, W, 3) float -> PIL "L" or "RGB"."""
    img = cv2.GaussianBlur(img.mean(-1) if gray else img, (0, 0), 0.6)  # (H, W) or (H, W, 3)
    img = img + rng.normal(0, 2.0, img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def _anomaly(rng: np.random.Generator, cat: Category, defect: str, w: int, h: int):
    """Returns (PIL image, mask (H, W) bool); redraws until the mask covers 1-10 % if it can."""
    best = None
    for _ in range(30):
        img, bg, obj = cat.render(rng, w, h)
        region, values = DEFECTS[defect](rng, img, bg, obj)
        bad = img.copy()
        bad[region] = values
        diff = np.abs(bad.mean(-1) - img.mean(-1)) if cat.gray else np.abs(bad - img).max(-1)  # (H, W)
        mask = diff > 0.5  # the pixels the defect changed
        ok = 0.01 <= mask.mean() <= 0.10
        if ok or (best is None and mask.any()):
            best = (bad, mask)
        if ok:
            break
    if best is None:
        raise RuntimeError(f"could not paint a visible {defect!r} defect at {w}x{h}")
    return _finish(rng, best[0], cat.gray), best[1]


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    jpg = path.suffix.upper() == ".JPG"
    img.save(path, "JPEG", quality=95, subsampling=0) if jpg else img.save(path, "PNG")


def _prepare(root, categories, image_size, counts, overwrite) -> tuple[Path, list[str], int, int]:
    """Validates arguments and clears (or refuses to touch) existing category folders."""
    categories = [categories] if isinstance(categories, str) else list(categories)
    w, h = (int(image_size),) * 2 if np.ndim(image_size) == 0 else map(int, image_size)
    if min(w, h) < 16 or min(counts) < 0:
        raise ValueError(f"need image_size >= 16 px and counts >= 0, got {image_size}, {list(counts)}")
    if not categories or len(set(categories)) != len(categories) or set(categories) - set(CATEGORIES):
        raise ValueError(f"categories must be distinct names from {list(CATEGORIES)}, got {list(categories)}")
    root = Path(root)
    busy = [root / c for c in categories if (root / c).is_dir() and any((root / c).iterdir())]
    if busy and not overwrite:
        raise ValueError(f"refusing to write into non-empty {[str(p) for p in busy]}; "
                         "pass overwrite=True (CLI: --overwrite) to replace them")
    for p in busy:
        shutil.rmtree(p)
    return root, categories, w, h


# ----------------------------------------------------------------------------- public API
def generate_mvtec(root: str | Path, categories: Sequence[str] = ("bottle", "grid"), n_train: int = 5,
                   n_test_good: int = 3, n_test_defect: int = 3, image_size: int | Sequence[int] = 96,
                   seed: int = 0, overwrite: bool = False) -> Path:
    """Writes an MVTec-AD style dataset.

    Layout: `<cat>/train/good/NNN.png`, `<cat>/test/good/NNN.png`, `<cat>/test/<defect>/NNN.png`
    and `<cat>/ground_truth/<defect>/NNN_mask.png` (0/255, "L"). Defects cycle through
    `CATEGORIES[cat].defects`; numbering restarts at 000 in each defect folder.

    Args:
        root: dataset root, created if needed.
        categories: names from `CATEGORIES` (or one name).
        n_train, n_test_good, n_test_defect: numbers of images per category.
        image_size: int (square) or (width, height).
        seed: master seed; each category draws from its own stream.
        overwrite: replace non-empty category folders instead of raising ValueError.

    Returns:
        root as a Path.
    """
    counts = (n_train, n_test_good, n_test_defect)
    root, categories, w, h = _prepare(root, categories, image_size, counts, overwrite)
    for name in categories:
        cat, rng, d = CATEGORIES[name], _rng(seed, name), root / name
        for split, n in (("train", n_train), ("test", n_test_good)):
            for i in range(n):
                _save(_finish(rng, cat.render(rng, w, h)[0], cat.gray), d / split / "good" / f"{i:03d}.png")
        seen: Counter[str] = Counter()
        for i in range(n_test_defect):
            defect = cat.defects[i % len(cat.defects)]
            img, mask = _anomaly(rng, cat, defect, w, h)
            _save(img, d / "test" / defect / f"{seen[defect]:03d}.png")
            mask_img = Image.fromarray(mask.astype(np.uint8) * 255)  # (H, W) 0/255
            _save(mask_img, d / "ground_truth" / defect / f"{seen[defect]:03d}_mask.png")
            seen[defect] += 1
    return root


def generate_visa(root: str | Path, categories: Sequence[str] = ("candle", "pcb1"), n_train: int = 5,
                  n_test_normal: int = 3, n_test_anomaly: int = 3,
                  image_size: int | Sequence[int] = (120, 90), seed: int = 0,
                  overwrite: bool = False) -> Path:
    """Writes a VisA style dataset and its `split_csv/1cls.csv`.

    Layout: `<cat>/Data/Images/Normal/NNNN.JPG` (train normals first, then test normals),
    `<cat>/Data/Images/Anomaly/NNN.JPG` and `<cat>/Data/Masks/Anomaly/NNN.png` ("L"; pixels are 0
    or the defect's class id, its index in `CATEGORIES[cat].defects` + 1). The CSV (object, split,
    label, image, mask; paths relative to root; empty mask for normals) keeps the rows of other
    categories already in it and replaces those of the generated ones.

    Args:
        root, categories, image_size, seed, overwrite: as for `generate_mvtec`.
        n_train, n_test_normal, n_test_anomaly: numbers of images per category.

    Returns:
        root as a Path.
    """
    counts = (n_train, n_test_normal, n_test_anomaly)
    root, categories, w, h = _prepare(root, categories, image_size, counts, overwrite)
    rows = []
    for name in categories:
        cat, rng = CATEGORIES[name], _rng(seed, name)
        for i in range(n_train + n_test_normal):
            rel = f"{name}/Data/Images/Normal/{i:04d}.JPG"
            _save(_finish(rng, cat.render(rng, w, h)[0], cat.gray), root / rel)
            rows.append([name, "train" if i < n_train else "test", "normal", rel, ""])
        for i in range(n_test_anomaly):
            k = i % len(cat.defects)
            img, mask = _anomaly(rng, cat, cat.defects[k], w, h)
            rel, mrel = f"{name}/Data/Images/Anomaly/{i:03d}.JPG", f"{name}/Data/Masks/Anomaly/{i:03d}.png"
            _save(img, root / rel)
            _save(Image.fromarray(mask.astype(np.uint8) * (k + 1)), root / mrel)
            rows.append([name, "test", "anomaly", rel, mrel])
    csv_path = root / "split_csv" / "1cls.csv"
    if csv_path.exists():
        with open(csv_path, newline="") as f:
            rows = [r for r in list(csv.reader(f))[1:] if r and r[0] not in categories] + rows
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([VISA_CSV_HEADER, *rows])  # csv default CRLF, as in VisA
    return root


# ----------------------------------------------------------------------------- command line
class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    kinds = "categories (image mode: defect types):\n" + "\n".join(
        f"  {k:8s} {'L' if c.gray else 'RGB'}: {', '.join(c.defects)}" for k, c in CATEGORIES.items())
    p = argparse.ArgumentParser(prog="python -m datasets.synthetic", description=__doc__, epilog=kinds,
                                formatter_class=_HelpFormatter)
    sub = p.add_subparsers(dest="layout", required=True, metavar="{mvtec,visa}")
    for layout, cats, size, good, bad in (("mvtec", "bottle grid", [96], "good", "defect"),
                                          ("visa", "candle pcb1", [120, 90], "normal", "anomaly")):
        s = sub.add_parser(layout, help=f"write the {layout} folder layout", epilog=kinds,
                           formatter_class=_HelpFormatter)
        s.add_argument("root", type=Path, help="dataset root to write into")
        s.add_argument("--categories", nargs="+", default=cats.split(), metavar="CAT", help="categories")
        s.add_argument("--seed", type=int, default=0, help="master seed")
        s.add_argument("--image-size", nargs="+", type=int, default=size, metavar="N",
                       help="one int for square images, or W H")
        s.add_argument("--n-train", type=int, default=5, help="training normals per category")
        for kind in (good, bad):
            s.add_argument(f"--n-test-{kind}", type=int, default=3, help=f"test {kind} images per category")
        s.add_argument("--overwrite", action="store_true", help="replace existing category folders")
    args = p.parse_args(argv)
    if len(args.image_size) not in (1, 2):
        p.error("--image-size takes one or two integers")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    a = parse_args(argv)
    kw = dict(categories=a.categories, n_train=a.n_train, seed=a.seed, overwrite=a.overwrite,
              image_size=a.image_size[0] if len(a.image_size) == 1 else tuple(a.image_size))
    try:
        if a.layout == "mvtec":
            root = generate_mvtec(a.root, n_test_good=a.n_test_good, n_test_defect=a.n_test_defect, **kw)
        else:
            root = generate_visa(a.root, n_test_normal=a.n_test_normal, n_test_anomaly=a.n_test_anomaly, **kw)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    for name in a.categories:
        files = [p for p in sorted((root / name).rglob("*")) if p.is_file()]
        counts = Counter(p.parent.relative_to(root / name).as_posix() for p in files)
        print(f"{root / name}: " + ", ".join(f"{k} ({v})" for k, v in sorted(counts.items())))
    if a.layout == "visa":
        print(root / "split_csv" / "1cls.csv")
    print(f"wrote synthetic {a.layout} data (seed {a.seed}) to {root}; no meta.json written")


if __name__ == "__main__":
    main()
