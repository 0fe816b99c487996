r"""Disk a feature store needs for the test splits of some datasets, checked against free space.

    python scripts/feature_store_size.py --store exps/feature_store --data data/mvtec data/visa \
        --model ViT-L-14-336 --image_size 518 --features_list 6 12 18 24

Per image: the stage tokens of every stage (L x C each), the image embedding (D) and the mask
(S x S), in fp16 on a GPU (autocast) or fp32 on the CPU: about 11 MB at ViT-L/14-336, 518 px,
four stages, fp16. Prints the estimate; exit status 1 when the disk under --store has less free
space (the store is filled by train.py --cache_features and test.py --feature_store).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.config import ModelConfig  # light: no torch

DEFAULTS = ModelConfig()  # the one place the defaults are set


def model_config(model: str, config_path: str | None) -> dict:
    if config_path:
        return json.loads(Path(config_path).read_text())
    import open_clip  # the registry of model configs

    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise SystemExit(f"error: unknown model {model!r}")
    return cfg


def bytes_per_image(cfg: dict, image_size: int, stages: list[int], fp16: bool) -> int:
    """(sum over stages of L * C + D + S * S) * bytes per value."""
    v = cfg["vision_cfg"]
    values = 0
    if isinstance(v.get("layers"), (list, tuple)):  # ModifiedResNet: layer n
        for n in stages:
            side = image_size // (4 * 2 ** (n - 1))
            values += side * side * v["width"] * 2 ** (n + 1)
    else:
        side = image_size // v["patch_size"]
        values += len(stages) * side * side * v["width"]
    values += cfg["embed_dim"] + image_size * image_size
    return values * (2 if fp16 else 4)


def count_images(roots: list[Path]) -> int:
    n = 0
    for root in roots:
        meta = root / "meta.json"
        if meta.is_file():
            n += sum(len(v) for v in json.loads(meta.read_text())["test"].values())
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/feature_store_size.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="folder the stores go into")
    p.add_argument("--data", nargs="+", required=True, help="dataset roots (with meta.json)")
    p.add_argument("--model", default=DEFAULTS.model)
    p.add_argument("--config_path", default=None)
    p.add_argument("--image_size", type=int, default=DEFAULTS.image_size)
    p.add_argument("--features_list", type=int, nargs="+", default=DEFAULTS.features_list)
    p.add_argument("--device", default="", help="cuda (fp16 values) or cpu (fp32) [cuda if "
                   "available]")
    a = p.parse_args(argv)
    device = a.device
    if not device:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    per = bytes_per_image(model_config(a.model, a.config_path), a.image_size,
                          sorted(set(a.features_list)), device.startswith("cuda"))
    n = count_images([Path(d) for d in a.data])
    store = Path(a.store)
    probe = store
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = per * n
    print(f"feature store {store}: {n} test images x {per / 2**20:.2f} MiB = "
          f"{need / 2**30:.2f} GiB needed, {free / 2**30:.1f} GiB free")
    if need > 0.98 * free:
        print(f"error: not enough free disk for the feature store under {probe}: free space, "
              "pass --feature_store DIR elsewhere, or run with --no_feature_store",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
