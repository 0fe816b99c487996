r"""Measure evaluation throughput and peak memory of the test.py inner loop on random images.

Speed and memory do not depend on the weights, so the model is built with random weights
(``--pretrained none``) and nothing is downloaded. Per batch it times what ``test.py`` does:
one backbone pass, the projection head, the memory-bank search of ``--runs`` few-shot banks of
``--k_shot`` images each, and the final maps at S x S as test.py's metrics make them
(``models.anomaly_maps.zero_shot_maps`` then ``final_maps``, on the CPU). Reports images/s per
part, peak GPU memory (CUDA), and writes JSON.

    python scripts/benchmark_inference.py                          # ViT-L-14-336 at 518, GPU
    python scripts/benchmark_inference.py --device cpu --n_images 4 \
        --model tiny-vit --config_path tests/fixtures/golden/models/tiny-vit.json \
        --image_size 84 --features_list 2 4 6 8
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from models.anomaly_maps import final_maps, zero_shot_maps
from models.memory_bank import MemoryBank

from engine.config import ModelConfig
from engine.core.loading import build_model

DEFAULTS = ModelConfig()  # the one place the defaults are set


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=DEFAULTS.model)
    p.add_argument("--config_path", default=None)
    p.add_argument("--image_size", type=int, default=DEFAULTS.image_size)
    p.add_argument("--features_list", type=int, nargs="+", default=DEFAULTS.features_list)
    p.add_argument("--batch_size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--n_images", type=int, default=64, help="images timed (after one warm-up batch)")
    p.add_argument("--k_shot", type=int, default=4, help="reference images per memory bank")
    p.add_argument("--runs", type=int, default=15, help="few-shot banks searched per image (k x seeds)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=REPO / "results" / "benchmark_inference.json")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    torch.manual_seed(0)
    model, _ = build_model(a.model, "none", a.image_size, a.features_list, a.features_list,
                           a.config_path, device)
    model.eval()
    s, b = a.image_size, a.batch_size
    text = torch.nn.functional.normalize(torch.randn(model.backbone.embed_dim, 2, device=device), dim=0)
    refs = model.encode(torch.randn(a.k_shot, 3, s, s, device=device))["patch_tokens"]
    banks = [MemoryBank(model.few_shot_features).setup("x", refs, ["r"] * a.k_shot)
             for _ in range(a.runs)]
    times = {"backbone": 0.0, "head": 0.0, "memory_banks": 0.0, "full_maps": 0.0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n_batches = max(1, a.n_images // b)
    for i in range(n_batches + 1):  # batch 0 warms up
        x = torch.randn(b, 3, s, s, device=device)
        sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            enc = model.encode(x)
            sync(device)
            t1 = time.perf_counter()
            head = model.head(enc["patch_tokens"], enc["image_embed"], text)
            sync(device)
            t2 = time.perf_counter()
            dists = [bank.distances(enc["patch_tokens"]) for bank in banks]
            sync(device)
            t3 = time.perf_counter()
            logits = [l.float().cpu() for l in head["stage_logits"]]
            zs = zero_shot_maps(logits, s, torch.device("cpu"))  # as test.py: once per category
            for d in dists[:1]:  # then each run's final maps (one run timed), on the CPU
                final_maps(zs, [x.cpu() for x in d], s)
            t4 = time.perf_counter()
        if i:
            for k, dt in zip(times, (t1 - t, t2 - t1, t3 - t2, t4 - t3)):
                times[k] += dt
    n = n_batches * b
    res = {"model": a.model, "image_size": s, "stages": model.features_list, "batch_size": b,
           "images": n, "k_shot": a.k_shot, "runs": a.runs, "device": str(device),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "images_per_s": {k: n / v if v else None for k, v in times.items()},
           "images_per_s_total": n / sum(times.values()),
           "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                                   if device.type == "cuda" else None)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
