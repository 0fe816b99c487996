"""Benchmark one category's metrics: scikit-learn, the former algorithm, the new CPU and GPU paths.

Builds a category-sized input (``--n`` maps of ``--size``^2, masks with blobs on every
other image, smooth noisy maps quantised so that ties occur: ``benchmark_pro.make_case``)
and times, in one run:

* scikit-learn's three pixel calls ``roc_auc_score`` + ``average_precision_score`` +
  ``precision_recall_curve`` (once; the F1-max is read off the curve untimed);
* the former ``category_metrics`` (``metrics.reference.category_metrics_reference``:
  an argsort of all pixels, the one-pass ``pro``, the partition-based ``mvtec_aupro``; once);
* the new ``metrics.category_metrics(..., with_mvtec_aupro=True)`` on the CPU (numpy),
  as a whole (connected components included) and with ``regions=`` precomputed;
* the same on the GPU (torch, inputs already CUDA tensors, ``torch.cuda.synchronize``)
  when CUDA is present.

Prints each time, the ratios, the largest absolute difference of every value (pixel and
image AUROC/AP/F1-max/threshold vs scikit-learn, ``pro`` vs the one-pass ``pro`` -- equal
to the released loop, which is too slow at this size -- and ``mvtec_aupro`` vs the former
implementation), and the peak memory of the new paths relative to the maps' size. The
last line is ``speed-up vs scikit-learn: CPU <x>x, GPU <y>x`` (GPU ``n/a`` without CUDA).

Usage:
    python scripts/benchmark_metrics.py                      # 160 maps of 518^2
    python scripts/benchmark_metrics.py --n 60 --size 518 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from benchmark_pro import make_case

from metrics import category_metrics, mask_regions
from metrics.reference import category_metrics_reference

TOLERANCE = {"pro": 0.0, "mvtec_aupro": 1e-12}  # absolute; classification: 1e-9 relative


def timed(fn: Callable, repeats: int = 1, sync: Callable[[], None] = lambda: None) -> tuple[object, float]:
    """(last value, median wall time over ``repeats`` calls)."""
    times, value = [], None
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        value = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return value, statistics.median(times)


def sklearn_values(labels: np.ndarray, scores: np.ndarray) -> tuple[dict[str, float], float]:
    """scikit-learn's AUROC, AP, F1-max and its threshold; the time of the three calls."""
    t0 = time.perf_counter()
    auroc = roc_auc_score(labels, scores)
    ap = average_precision_score(labels, scores)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    seconds = time.perf_counter() - t0
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    best = int(np.argmax(np.where(np.isfinite(f1), f1, -np.inf)))
    return {"auroc": auroc, "ap": ap, "f1": float(f1[best]), "threshold": float(thresholds[best])}, seconds


def peak_ratio(fn: Callable, nbytes: int) -> float:
    """Peak traced host memory of ``fn()`` over ``nbytes``."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / nbytes


def differences(got: dict, truth: dict) -> dict[str, float]:
    """``|got[k] - truth[k]|`` for the keys of ``truth``."""
    return {k: abs(float(got[k]) - float(v)) for k, v in truth.items()}


def within_tolerance(diffs: dict[str, float], truth: dict) -> bool:
    return all(
        d <= TOLERANCE[k] if k in TOLERANCE else d <= 1e-9 * max(abs(truth[k]), 1e-300)
        for k, d in diffs.items()
    )


def gpu_run(masks, maps, gt_sp, pr_sp, repeats: int) -> dict | None:
    """The torch path on CUDA tensors, or ``None`` without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    gt_t, pr_t = torch.from_numpy(masks).cuda(), torch.from_numpy(maps).cuda()
    sync = torch.cuda.synchronize
    regions = mask_regions(gt_t)

    def run(**kw):
        return category_metrics(gt_t, pr_t, gt_sp, pr_sp, with_mvtec_aupro=True, device="cuda", **kw)

    run()  # warm-up: CUDA context, kernels
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    values, seconds = timed(run, repeats, sync)
    peak = (torch.cuda.max_memory_allocated() - base) / maps.nbytes
    _, with_regions = timed(lambda: run(regions=regions), repeats, sync)
    return {"values": values, "s": seconds, "s_with_regions": with_regions, "peak_gpu_x_maps": peak,
            "device": torch.cuda.get_device_name()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=160, help="maps in the category (default 160)")
    p.add_argument("--size", type=int, default=518, help="map side (default 518)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs of the new paths (median kept)")
    p.add_argument("--json", type=Path, default=None, help="also save the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    masks, maps = make_case(args.n, args.size, args.seed)  # (N,S,S) uint8, float32
    gt_sp = masks.reshape(args.n, -1).max(axis=1)  # (N,)
    pr_sp = maps.reshape(args.n, -1).max(axis=1)  # (N,)
    print(f"input: {args.n} maps x {args.size}^2 = {maps.size:,} pixels ({int(masks.sum()):,} anomalous, "
          f"{int(gt_sp.sum())} anomalous images), {maps.dtype}, seed {args.seed}", flush=True)

    px_sk, sk_s = sklearn_values(masks.ravel(), maps.ravel())
    sp_sk, _ = sklearn_values(gt_sp, pr_sp)
    truth_sk = {f"{k}_px": v for k, v in px_sk.items()} | {f"{k}_sp": v for k, v in sp_sk.items()}
    print(f"scikit-learn roc_auc_score + average_precision_score + precision_recall_curve: {sk_s:.3f} s",
          flush=True)
    ref, ref_s = timed(lambda: category_metrics_reference(masks, maps, gt_sp, pr_sp, True))
    print(f"former category_metrics (metrics.reference, with mvtec_aupro): {ref_s:.3f} s "
          f"({sk_s / ref_s:.1f}x scikit-learn)", flush=True)
    truth = truth_sk | {"pro": ref["pro"], "mvtec_aupro": ref["mvtec_aupro"]}

    cpu, cpu_s = timed(lambda: category_metrics(masks, maps, gt_sp, pr_sp, True), args.repeats)
    regions, regions_s = timed(lambda: mask_regions(masks), args.repeats)
    _, cpu_reg_s = timed(lambda: category_metrics(masks, maps, gt_sp, pr_sp, True, regions=regions),
                         args.repeats)
    cpu_peak = peak_ratio(lambda: category_metrics(masks, maps, gt_sp, pr_sp, True), maps.nbytes)
    print(f"new category_metrics, CPU (numpy), with mvtec_aupro: {cpu_s:.3f} s "
          f"({sk_s / cpu_s:.1f}x scikit-learn, {ref_s / cpu_s:.1f}x the former); "
          f"mask_regions {regions_s:.3f} s, with regions= given {cpu_reg_s:.3f} s "
          f"(median of {args.repeats})", flush=True)
    gpu = gpu_run(masks, maps, gt_sp, pr_sp, args.repeats)
    if gpu is None:
        print("new category_metrics, GPU: n/a (no CUDA device)")
    else:
        print(f"new category_metrics, GPU ({gpu['device']}), CUDA tensors in: {gpu['s']:.4f} s "
              f"({sk_s / gpu['s']:.1f}x scikit-learn); with regions= given {gpu['s_with_regions']:.4f} s")

    diffs = {"cpu": differences(cpu, truth), "former": differences(ref, truth_sk)}  # its pro, mvtec_aupro are the truth
    if gpu is not None:
        diffs["gpu"] = differences(gpu["values"], truth)
        diffs["gpu_vs_cpu"] = differences(gpu["values"], cpu)
    print("max |difference| per value (vs scikit-learn; pro vs the one-pass pro = released loop; "
          "mvtec_aupro vs the former implementation):")
    print("  " + "".join(f"{c:>14}" for c in ["value", *diffs]))
    for key in truth:
        print("  " + f"{key:>14}" + "".join(f"{d[key]:>14.3g}" if key in d else f"{'-':>14}" for d in diffs.values()))
    equal = within_tolerance(diffs["cpu"], truth) and (gpu is None or within_tolerance(diffs["gpu"], truth))
    print(f"values equal (classification <= 1e-9 relative, pro exactly, mvtec_aupro <= 1e-12): "
          f"{'yes' if equal else 'NO'}")
    gpu_peak = "" if gpu is None else f", GPU {gpu['peak_gpu_x_maps']:.2f}x (CUDA allocator)"
    print(f"peak memory of the new path beyond its inputs: CPU {cpu_peak:.2f}x the maps' size "
          f"(tracemalloc){gpu_peak}; maps {maps.nbytes / 2**20:.1f} MiB")

    report = {
        "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
        "n": args.n, "size": args.size, "seed": args.seed, "pixels": int(maps.size),
        "sklearn_s": sk_s, "former_s": ref_s, "cpu_s": cpu_s, "cpu_with_regions_s": cpu_reg_s,
        "mask_regions_s": regions_s, "cpu_peak_x_maps": cpu_peak,
        "speedup_cpu": sk_s / cpu_s, "speedup_gpu": None if gpu is None else sk_s / gpu["s"],
        "values_equal": equal, "max_abs_diff": diffs, "values": {"cpu": cpu, "reference": truth},
        "gpu": None if gpu is None else {k: v for k, v in gpu.items() if k != "values"},
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    gpu_x = "n/a" if gpu is None else f"{sk_s / gpu['s']:.1f}x"
    print(f"speed-up vs scikit-learn: CPU {sk_s / cpu_s:.1f}x, GPU {gpu_x}")
    return report


if __name__ == "__main__":
    main()
