r"""Benchmark ``train.py --cache_features``: backbone images, wall time, and equal weights.

For each ``--aug_rate`` it trains the same run from the same initial projections without a cache,
with a fresh (empty) feature cache, and again with that now-filled cache ("cache_warm", e.g. a
second run of a sweep), and reports the images pushed through the frozen backbone
(counted by wrapping ``ClipBackbone.forward``), the time of the training loop and of the whole
run (model build and text features included), the speed-ups, and the largest difference between
the final weights. The model is the tiny random ViT of the golden fixtures; the data is a
synthetic MVTec-layout set (``tools.synthetic``) unless ``--data`` names one with meta.json.

Usage:
    python scripts/benchmark_feature_cache.py                        # aug_rate 0 and 0.2
    python scripts/benchmark_feature_cache.py --data tests/fixtures/golden/data/mvtec \
        --aug_rate 0.2 --out results/cache_bench.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train
from datasets.sets.indexing import prepare
from models.backbone import ClipBackbone
from tools.synthetic import generate_mvtec

MODELS = REPO / "tests" / "fixtures" / "golden" / "models"


class BackboneCounter:
    """Counts the images passed to ``ClipBackbone.forward`` while installed."""

    def __init__(self):
        self.n, self._original = 0, ClipBackbone.forward

    def __enter__(self):
        original = self._original

        def forward(bb, images):
            self.n += images.shape[0]
            return original(bb, images)

        ClipBackbone.forward = forward
        return self

    def __exit__(self, *exc):
        ClipBackbone.forward = self._original


def run(args: argparse.Namespace, data: Path, save: Path, aug: float, epochs: int,
        cache: Path | None) -> dict:
    """One training run; returns backbone count, loop and total seconds, final weights."""
    argv = ["--dataset", "mvtec", "--train_data_path", str(data), "--save_path", str(save),
            "--model", "tiny-vit", "--config_path", str(MODELS / "tiny-vit.json"),
            "--pretrained", str(MODELS / "tiny-vit-random.pt"), "--image_size", str(args.image_size),
            "--features_list", "2", "4", "6", "8", "--batch_size", str(args.batch_size),
            "--aug_rate", str(aug), "--epoch", str(epochs), "--seed", "111",
            "--init_checkpoint", str(MODELS / "linear-random.pth"), "--num_workers",
            str(args.num_workers), "--device", "cpu"]
    if cache is not None:
        argv += ["--cache_features", str(cache)]
    t0 = time.perf_counter()
    with BackboneCounter() as count:
        out = train.train(train.parse_args(argv))
    total = time.perf_counter() - t0
    ckpt = torch.load(out["checkpoints"][-1], map_location="cpu", weights_only=True)
    return {"backbone_images": count.n, "train_loop_seconds": round(out["seconds"], 3),
            "total_seconds": round(total, 3), "final_loss": out["epoch_losses"][-1],
            "weights": ckpt["trainable_linearlayer"]}


def compare(aug: float, best: dict[str, dict]) -> dict:
    """Speed-ups, backbone ratios and weight differences of the cached runs vs no cache."""
    plain, weights = best["no_cache"], {k: v.pop("weights") for k, v in best.items()}
    row = {"aug_rate": aug, **best}
    for kind in ("cache", "cache_warm"):
        c = row[kind]
        c.update(backbone_ratio=round(c["backbone_images"] / plain["backbone_images"], 4),
                 speedup_train_loop=round(plain["train_loop_seconds"] / c["train_loop_seconds"], 3),
                 speedup_total=round(plain["total_seconds"] / c["total_seconds"], 3),
                 max_weight_diff=max((weights["no_cache"][k] - weights[kind][k]).abs().max().item()
                                     for k in weights[kind]))
        print(f"aug_rate {aug}, {kind:10s}: backbone images {plain['backbone_images']} -> "
              f"{c['backbone_images']} (x{c['backbone_ratio']}), training loop "
              f"{plain['train_loop_seconds']:.2f} s -> {c['train_loop_seconds']:.2f} s "
              f"(speed-up {c['speedup_train_loop']:.2f}x; whole run "
              f"{c['speedup_total']:.2f}x), max weight diff {c['max_weight_diff']:.2e}")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None,
                   help="MVTec-layout root with meta.json (default: a synthetic set)")
    p.add_argument("--n_test", type=int, default=40,
                   help="synthetic: test images per category (half defective), 4 categories")
    p.add_argument("--synthetic_size", type=int, default=1024,
                   help="synthetic image side in px (MVTec AD images are 700-1024 px)")
    p.add_argument("--aug_rate", type=float, nargs="+", default=[0.0, 0.2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image_size", type=int, default=84)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs per setting; the fastest is kept")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 keeps timings stable on a shared machine)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "benchmark_feature_cache.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="cache_bench_") as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            half = args.n_test // 2
            data = generate_mvtec(tmp / "data", ("bottle", "grid", "screw", "carpet"), n_train=1,
                                  n_test_good=half, n_test_defect=args.n_test - half,
                                  image_size=args.synthetic_size, seed=0)
            prepare("mvtec", data)
        logging.getLogger("aprilgan").disabled = True
        run(args, data, tmp / "warmup", 0.0, 1, None)  # first-call costs (lazy init, file cache)
        results = []
        for aug in args.aug_rate:
            best: dict[str, dict] = {}
            for r in range(args.repeats):  # the fastest repeat of each kind is kept
                cache = tmp / f"features{aug}_{r}"  # empty for "cache", filled for "cache_warm"
                for kind, folder in (("no_cache", None), ("cache", cache), ("cache_warm", cache)):
                    res = run(args, data, tmp / f"run_{kind}{aug}_{r}", aug, args.epochs, folder)
                    if kind not in best or res["train_loop_seconds"] < best[kind]["train_loop_seconds"]:
                        best[kind] = res
            results.append(compare(aug, best))
        n_images = sum(len(v) for v in json.loads((data / "meta.json").read_text())["test"].values())
    synthetic = (f"synthetic mvtec, 4 categories x {args.n_test} test images, "
                 f"{args.synthetic_size} px")
    report = {"data": str(args.data or synthetic), "train_images": n_images, "epochs": args.epochs,
              "image_size": args.image_size, "batch_size": args.batch_size, "repeats": args.repeats,
              "num_workers": args.num_workers, "model": "tiny-vit", "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "platform": platform.platform(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
