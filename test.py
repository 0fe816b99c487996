"""Evaluate APRIL-GAN zero-shot or few-shot on a dataset indexed by meta.json (SPEC §4, §5, §7).

    python test.py --mode zero_shot --dataset visa --data_path data/visa \
        --checkpoint_path exps/pretrained/mvtec_pretrained.pth --save_path results/visa_0shot
    python test.py --mode few_shot --dataset mvtec --data_path data/mvtec \
        --checkpoint_path exps/pretrained/visa_pretrained.pth --k_shot 1 2 4 --seed 1 2 3 4 5 \
        --save_path results/mvtec_fewshot

Every test image goes through the backbone once, whatever the number of (k, seed) runs; every
distinct reference image once. Outputs (``--save_path``): metrics.json, metrics.md, metrics.csv,
thresholds.json, config.json, log.txt; few-shot: references.json; ``--save_predictions``:
predictions.npz; ``--visualize``: overlays/<category>/*.png. With several (k, seed) runs each
run writes into ``k{K}_seed{S}/`` and summary_k{K}.{md,csv} / summary.json hold mean ± std.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets import DATASETS, DatasetError, load_meta, make_samples
from datasets.references import check_train_split, draw_references, read_reference_list
from datasets.transforms import open_image
from metrics import METRIC_KEYS
from models.april_gan import build_model
from models.inference import (MetricPool, build_bank, full_maps, loader, progress,
                              reference_tokens, run_category)
from models.projection import load_projections
from prompts import PromptSet, TextFeatureBank
from utils.cli import (ModelConfig, add_model_args, config_from_namespace, config_json,
                       default_workers, flag, resolve_device, run_main, setup_logging)
from utils.io import atomic_write_json, atomic_write_text
from utils.npz_stream import NpzStreamWriter
from utils.reports import write_metrics, write_summary
from utils.visualize import save_overlay


@dataclass
class EvalConfig(ModelConfig):
    """Resolved settings of one test.py run (saved as config.json)."""

    mode: str = "zero_shot"
    dataset: str = "mvtec"
    data_path: str = "data/mvtec"
    save_path: str = "results/test"
    checkpoint_path: str | None = None
    few_shot_features: list | None = None
    k_shot: list = field(default_factory=lambda: [10])
    seed: list = field(default_factory=lambda: [10])
    reference_list: str | None = None
    categories: list | None = None
    prompt_dir: str | None = None
    save_predictions: bool = False
    visualize: bool = False
    no_mvtec_aupro: bool = False
    metric_workers: int = 0


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    p = argparse.ArgumentParser(
        description="Zero-/few-shot anomaly classification and segmentation with APRIL-GAN.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    flag(p, "mode", choices=["zero_shot", "few_shot"], default="zero_shot", help="evaluation mode")
    flag(p, "dataset", default="mvtec", help=f"dataset layout: {', '.join(DATASETS)}")
    flag(p, "data_path", default="data/mvtec", help="dataset root holding meta.json")
    flag(p, "save_path", default="results/test", help="output folder")
    flag(p, "checkpoint_path", default=None,
         help="projection weights (released format, e.g. mvtec_pretrained.pth); required")
    add_model_args(p)
    flag(p, "few_shot_features", type=int, nargs="+", default=None,
         help="1-based stages of the few-shot memory banks; None: the --features_list stages")
    flag(p, "k_shot", type=int, nargs="+", default=[10],
         help="reference images per category; several values run them all in one pass")
    flag(p, "seed", type=int, nargs="+", default=[10],
         help="seed(s) of the reference draw; several values run them all in one pass")
    flag(p, "reference_list", default=None,
         help="JSON {category: [image paths relative to the data root]} used as the memory-bank "
              "images instead of a seeded draw (the format of references.json)")
    flag(p, "categories", nargs="+", default=None, help="evaluate only these categories")
    flag(p, "prompt_dir", default=None, help="folder with edited prompt files (default: prompts/)")
    flag(p, "save_predictions", action="store_true",
         help="write predictions.npz (paths, labels, scores, maps [N,S,S] float32)")
    flag(p, "visualize", action="store_true", help="write heatmap overlays (slower)")
    flag(p, "no_mvtec_aupro", action="store_true",
         help="skip the MVTec AD benchmark's AU-PRO (extra column in metrics.json)")
    flag(p, "metric_workers", type=int, default=0,
         help="processes computing metrics while the backbone runs on (0: inline); each needs "
              "about 2 GB for a 200-image category at 518 px")
    cfg = config_from_namespace(EvalConfig, p.parse_args(argv))
    if cfg.few_shot_features is None:
        cfg.few_shot_features = list(cfg.features_list)
    if cfg.dataset not in DATASETS:
        p.error(f"unknown --dataset {cfg.dataset!r}: choose one of {', '.join(DATASETS)}")
    if not cfg.checkpoint_path:
        p.error("--checkpoint_path is required (the projection weights, e.g. mvtec_pretrained.pth)")
    return cfg


def runs_of(cfg: EvalConfig) -> list[tuple[int, int] | None]:
    """(k, seed) pairs of a few-shot run; [None] for zero-shot."""
    if cfg.mode == "zero_shot":
        return [None]
    return [(k, s) for k in cfg.k_shot for s in cfg.seed]


def run_dir(cfg: EvalConfig, run, n_runs: int) -> Path:
    base = Path(cfg.save_path)
    return base if n_runs == 1 else base / f"k{run[0]}_seed{run[1]}"


def evaluate(cfg: EvalConfig) -> dict:
    """Run the whole evaluation; returns {run: metrics dict}. Raises on bad input."""
    root = Path(cfg.data_path)
    meta = load_meta(root, cfg.dataset)
    test = make_samples(root, "test", cfg.categories, cfg.dataset, meta)
    cats = list(test)
    runs = runs_of(cfg)
    refs: dict = {}
    if cfg.mode == "few_shot" and cfg.reference_list:
        listed = read_reference_list(cfg.reference_list, cats, root, test)
        runs = [(max(map(len, listed.values())), -1)]  # one run, replaying the given images
        refs = {runs[0]: listed}
    elif cfg.mode == "few_shot":
        check_train_split(meta, cats, root)
        train = make_samples(root, "train", cats, cfg.dataset, meta)
        refs = {r: draw_references(train, r[0], r[1]) for r in runs}

    try:  # check the prompt files (and every category's overrides) before any work
        prompts = PromptSet.load(cfg.prompt_dir)
        for cls in cats:
            prompts.build_prompts(cls)
    except (OSError, ValueError) as e:
        raise DatasetError(f"bad prompt files: {e}") from e

    save = Path(cfg.save_path)
    log = setup_logging(save)
    device = resolve_device(cfg.device)
    workers = default_workers(cfg.num_workers, device)
    model, tokenizer = build_model(
        cfg.model, cfg.pretrained, cfg.image_size, cfg.features_list,
        cfg.few_shot_features if cfg.mode == "few_shot" else (), cfg.config_path, device)
    load_projections(model.projections, cfg.checkpoint_path)
    model.eval()
    text_bank = TextFeatureBank(model.backbone.encode_text, tokenizer, prompts, device)
    log.info(f"{cfg.mode} on {cfg.dataset} ({len(cats)} categories, "
             f"{sum(map(len, test.values()))} test images), stages {model.features_list}"
             + (f", memory stages {model.few_shot_features}, runs {runs}" if refs else ""))

    n_runs, size = len(runs), cfg.image_size
    writers = {}
    if cfg.save_predictions:
        n = sum(map(len, test.values()))
        for r in runs:
            w = writers[r] = NpzStreamWriter(run_dir(cfg, r, n_runs) / "predictions.npz")
            w.begin("anomaly_maps", (n, size, size), np.float32)
    per_cat = {r: {} for r in runs}
    columns = {r: {"img_paths": [], "cls_names": [], "gt_sp": [], "pr_sp": []} for r in runs}
    backbone_images = 0
    pool, pending = MetricPool(cfg.metric_workers), {}
    t0 = time.time()
    try:
        for cls in cats:
            banks = []
            if refs:
                wanted = [p for r in runs for p in refs[r][cls]]
                tokens = reference_tokens(model, root, wanted, cfg.batch_size, workers, device)
                backbone_images += len(tokens)
                banks = [build_bank(model, cls, refs[r][cls], tokens) for r in runs]
            bar = progress(len(test[cls]), cls)
            try:
                res = run_category(model, loader(root, test[cls], size, cfg.batch_size, workers),
                                   text_bank(cls), banks, device, bar.update)
            finally:  # also on error: clear the bar so an error message starts its own line
                bar.close()
            backbone_images += len(res["paths"])
            for i, r in enumerate(runs):
                dist = res["distances"][i] if banks else None
                maps = None  # made here only when written; a worker process makes its own
                if r in writers or cfg.visualize:
                    maps = np.concatenate(list(full_maps(res["logits"], dist, size)))
                pending[r, cls] = pool.submit(res["logits"], dist, res["text_score"], res["gt_px"],
                                              res["gt_sp"], size, not cfg.no_mvtec_aupro,
                                              maps if pool.inline else None)
                c = columns[r]
                c["img_paths"] += res["paths"]
                c["cls_names"] += [cls] * len(res["paths"])
                c["gt_sp"].append(res["gt_sp"])
                if maps is None:
                    continue
                if r in writers:
                    writers[r].write(maps)
                if cfg.visualize:
                    vis = run_dir(cfg, r, n_runs) / "overlays" / cls
                    for p, m, g in zip(res["paths"], maps, res["gt_px"]):
                        save_overlay(vis / (p.replace("/", "_").rsplit(".", 1)[0] + ".png"),
                                     open_image(root / p), m, g, vmax=None)
                del maps
            if not cfg.metric_workers:
                log_category(log, cls, pending[runs[0], cls].result()[0])
        for (r, cls), fut in pending.items():
            per_cat[r][cls], score = fut.result()
            columns[r]["pr_sp"].append(score)
            if cfg.metric_workers and r == runs[0]:
                log_category(log, cls, per_cat[r][cls])
        for r, w in writers.items():
            c = columns[r]
            w.add("img_paths", np.array(c["img_paths"]))
            w.add("cls_names", np.array(c["cls_names"]))
            w.add("gt_sp", np.concatenate(c["gt_sp"]))
            w.add("pr_sp", np.concatenate(c["pr_sp"]).astype(np.float64))
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        pool.close()

    results = {}
    for r in runs:
        out = run_dir(cfg, r, n_runs)
        extra = {"mode": cfg.mode, "dataset": cfg.dataset}
        if r is not None:
            extra.update(k_shot=r[0], seed=None if r[1] < 0 else r[1])
            atomic_write_json(out / "references.json", refs[r])
        title = f"{cfg.dataset} {cfg.mode}" + (f" k={r[0]} seed={r[1]}" if r and n_runs > 1 else "")
        results[r] = write_metrics(out, per_cat[r], extra, title=title,
                                   echo=n_runs == 1, log=log)
    atomic_write_text(save / "config.json", config_json(cfg))
    if n_runs > 1:
        write_summary(save, {r: results[r] for r in runs}, log=log)
    log.info(f"{backbone_images} images through the backbone in {time.time() - t0:.1f} s; "
             f"results in {save}")
    return results


def log_category(log, cls: str, m: dict) -> None:
    log.info(f"{cls}: " + ", ".join(f"{k} {m[k] * 100:.1f}" for k in METRIC_KEYS))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_main(lambda: (evaluate(cfg), 0)[1])


if __name__ == "__main__":
    sys.exit(main())
