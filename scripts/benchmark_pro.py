"""Benchmark the fast ``metrics.pro`` against the released ``cal_pro_score`` loop.

Builds synthetic categories (masks with disc/ellipse blobs on about half the
images, noisy smooth maps that respond to the blobs), times ``pro_reference``
(the released loop) and ``pro`` (one pass), and reports the speed-up and the
absolute difference of the two values. ``mvtec_aupro`` is timed too.

Usage:
    python scripts/benchmark_pro.py                       # 40 x 256 px and 100 x 518 px
    python scripts/benchmark_pro.py --n-maps 40 --size 256 --repeats 5 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metrics import mvtec_aupro, pro, pro_reference


def make_case(n_maps: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic (masks uint8 [N,S,S], maps float32 [N,S,S]); every other image has 1-3 blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # (S,S) each
    masks = np.zeros((n_maps, size, size), dtype=np.uint8)
    maps = np.empty((n_maps, size, size), dtype=np.float32)
    coarse = max(size // 16, 2)
    for i in range(n_maps):
        if i % 2 == 1:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(0.1, 0.9, 2) * size
                ry, rx = rng.uniform(0.02, 0.12, 2) * size
                masks[i] |= (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
        # Smooth background noise: coarse grid upsampled by block repetition, plus pixel noise.
        low = rng.normal(0, 0.4, (coarse, coarse)).astype(np.float32)
        rep = -(-size // coarse)
        smooth = np.kron(low, np.ones((rep, rep), np.float32))[:size, :size]
        noise = rng.normal(0, 0.3, (size, size)).astype(np.float32)
        maps[i] = masks[i] * rng.uniform(0.5, 1.5) + smooth + noise
    # Quantise a little so that ties occur, as with real maps.
    maps = np.round(maps * 512).astype(np.float32) / 512
    return masks, maps


def timed(fn, *args, repeats: int = 1) -> tuple[float, float]:
    """(value, best wall time over ``repeats`` calls)."""
    best, value = float("inf"), float("nan")
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return value, best


def run_config(n_maps: int, size: int, seed: int, repeats: int, ref_maps: int | None) -> dict:
    masks, maps = make_case(n_maps, size, seed)
    fast_value, fast_s = timed(pro, masks, maps, repeats=repeats)
    aupro_value, aupro_s = timed(mvtec_aupro, masks, maps, repeats=repeats)
    result = {
        "n_maps": n_maps,
        "size": size,
        "pixels": int(masks.size),
        "fast_s": fast_s,
        "pro_fast": fast_value,
        "mvtec_aupro": aupro_value,
        "mvtec_aupro_s": aupro_s,
    }
    if ref_maps is None or ref_maps >= n_maps:
        ref_value, ref_s = timed(pro_reference, masks, maps)
        result.update(pro_reference=ref_value, reference_s=ref_s, reference_extrapolated=False)
        result["abs_diff"] = abs(ref_value - fast_value)
    else:  # the released loop is linear in the number of maps; time a subset and scale up
        sub_value, sub_s = timed(pro_reference, masks[:ref_maps], maps[:ref_maps])
        sub_fast = pro(masks[:ref_maps], maps[:ref_maps])
        ref_s = sub_s * n_maps / ref_maps
        result.update(reference_s=ref_s, reference_extrapolated=True, reference_timed_maps=ref_maps)
        result["abs_diff_on_subset"] = abs(sub_value - sub_fast)
    result["speedup"] = ref_s / fast_s
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-maps", type=int, nargs="+", default=[40, 100], help="maps per config")
    p.add_argument("--size", type=int, nargs="+", default=[256, 518], help="map side per config")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="fast-version timings (best is kept)")
    p.add_argument(
        "--reference-maps",
        type=int,
        default=None,
        help="time the released loop on only this many maps and extrapolate linearly (labelled)",
    )
    p.add_argument("--out", type=Path, default=Path("benchmark_pro.json"))
    args = p.parse_args(argv)
    if len(args.n_maps) != len(args.size):
        if len(args.size) == 1:
            args.size = args.size * len(args.n_maps)
        elif len(args.n_maps) == 1:
            args.n_maps = args.n_maps * len(args.size)
        else:
            p.error("--n-maps and --size need the same number of values (or one of them one)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = []
    for n_maps, size in zip(args.n_maps, args.size):
        r = run_config(n_maps, size, args.seed, args.repeats, args.reference_maps)
        results.append(r)
        ref = f"{r['reference_s']:.2f} s" + (
            f" (EXTRAPOLATED from {r['reference_timed_maps']} maps)" if r["reference_extrapolated"] else ""
        )
        diff = r.get("abs_diff", r.get("abs_diff_on_subset"))
        print(
            f"{n_maps} maps x {size}^2: reference {ref} | fast {r['fast_s']:.3f} s | "
            f"speed-up {r['speedup']:.0f}x | |ref - fast| = {diff:.3g} | pro = {r['pro_fast']:.6f} | "
            f"mvtec_aupro = {r['mvtec_aupro']:.6f} in {r['mvtec_aupro_s']:.3f} s",
            flush=True,
        )
    report = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "seed": args.seed,
        "repeats": args.repeats,
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
