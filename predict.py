"""Score a folder of your own images of one object with APRIL-GAN (no labels needed).

    python predict.py --image_dir my_parts/ --object_name screw --save_path results/my_parts \
        --checkpoint_path exps/pretrained/visa_pretrained.pth
    python predict.py ... --reference_dir my_parts_ok/ --thresholds results/mvtec/thresholds.json

Zero-shot by default (SPEC §4): image score = softmax(100 · f_img · T)[1], anomaly map = sum of
the stage maps. With ``--reference_dir`` (normal images of the same object, all of them used)
it is few-shot (SPEC §5): the memory-bank term is added to the map, and the image score is
0.5 · (text score + s) with s = max(map) min-max normalised over the *scored folder*, as the
released code normalises over a category's test set. So few-shot scores are relative to the
folder: the same image can score differently in another folder, and a folder of one image gets
s = 0.

Outputs (``--save_path``): scores.csv (path,score[,anomalous]), scores.json, heatmaps/*.png
(image | overlay [| predicted mask]), masks/*.png at the original image size (pixels with
map >= pixel threshold) when a threshold is known, config.json, log.txt. Thresholds come from
the thresholds.json that test.py writes (F1-max on that run's test set), or from
--image_threshold / --pixel_threshold.
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datasets import AnomalyDataset, DatasetError, Sample, collate, open_image
from models.anomaly_maps import combined_image_scores
from models.april_gan import build_model
from models.inference import (build_bank, full_maps, progress, reference_tokens, run_category,
                              stop_workers)
from models.projection import load_projections
from prompts import PromptSet, TextFeatureBank
from utils.cli import (ModelConfig, add_model_args, config_from_namespace, config_json,
                       default_workers, flag, resolve_device, run_main, setup_logging)
from utils.io import atomic_savez, atomic_write_json, atomic_write_text
from utils.visualize import save_mask, save_overlay

CHUNK = 256  # images per inference call: bounds host memory on large folders


@dataclass
class PredictConfig(ModelConfig):
    """Resolved settings of one predict.py run (saved as config.json)."""

    image_dir: str = ""
    object_name: str = ""
    save_path: str = "results/predict"
    checkpoint_path: str | None = None
    few_shot_features: list | None = None
    reference_dir: str | None = None
    thresholds: str | None = None
    threshold_category: str | None = None
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    prompt_dir: str | None = None
    recursive: bool = False
    no_heatmaps: bool = False
    save_maps: bool = False


def parse_args(argv: list[str] | None = None) -> PredictConfig:
    p = argparse.ArgumentParser(
        description="Score a folder of images of one object (no labels): anomaly score per "
                    "image, heatmaps, and masks when a threshold is known.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    flag(p, "image_dir", required=True, help="folder of images to score (any format PIL reads)")
    flag(p, "object_name", required=True,
         help="object word used in the prompts, e.g. screw, pcb1 (prompts/overrides.json applies)")
    flag(p, "save_path", default="results/predict", help="output folder")
    flag(p, "checkpoint_path", required=True,
         help="projection weights (released format, e.g. visa_pretrained.pth)")
    add_model_args(p)
    flag(p, "few_shot_features", type=int, nargs="+", default=None,
         help="1-based stages of the few-shot memory banks; None: the --features_list stages")
    flag(p, "reference_dir", default=None,
         help="folder of normal images of the same object: all of them form the few-shot "
              "memory bank (few-shot mode)")
    flag(p, "thresholds", default=None,
         help="thresholds.json written by test.py: {'per_category': {cat: {'pixel', 'image'}}}")
    flag(p, "threshold_category", default=None,
         help="entry of --thresholds to use; --object_name when not given")
    flag(p, "image_threshold", type=float, default=None,
         help="image-score threshold (overrides --thresholds)")
    flag(p, "pixel_threshold", type=float, default=None,
         help="anomaly-map threshold for masks (overrides --thresholds)")
    flag(p, "prompt_dir", default=None,
         help="folder with edited prompt files; the repository's prompts/ when not given")
    flag(p, "recursive", action="store_true", help="also score images in sub-folders")
    flag(p, "no_heatmaps", action="store_true", help="skip the heatmap overlays (faster)")
    flag(p, "save_maps", action="store_true",
         help="also write maps.npz (paths, anomaly_maps [N,S,S] float16)")
    cfg = config_from_namespace(PredictConfig, p.parse_args(argv))
    if cfg.few_shot_features is None:
        cfg.few_shot_features = list(cfg.features_list)
    return cfg


# --------------------------------------------------------------------------- inputs
def image_extensions() -> set[str]:
    """Every file extension PIL can open (lower case, with the dot)."""
    Image.init()
    return {e.lower() for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def list_images(folder: str | Path, recursive: bool = False,
                exclude: Sequence[Path] = ()) -> list[str]:
    """Sorted image paths relative to ``folder`` (hidden files and ``exclude`` trees skipped).

    Raises DatasetError when the folder is missing or holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    exts = image_extensions()
    excluded = [e.resolve() for e in exclude]
    files = folder.rglob("*") if recursive else folder.iterdir()
    out = []
    for f in files:
        rel = f.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not f.is_file():
            continue
        if f.suffix.lower() not in exts:
            continue
        if any(r == f.resolve() or r in f.resolve().parents for r in excluded):
            continue
        out.append(rel.as_posix())
    if not out:
        raise DatasetError(
            f"no images found in {folder}" + ("" if recursive else " (sub-folders are skipped; "
                                              "pass --recursive to include them)"))
    return sorted(out)


class _Tolerant(Dataset):
    """An AnomalyDataset whose unreadable images come back as ``{"error", "path"}``."""

    def __init__(self, base: AnomalyDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        try:
            return self.base[i]
        except (DatasetError, OSError, ValueError, Image.DecompressionBombError) as e:
            return {"error": str(e).splitlines()[0] if str(e) else type(e).__name__,
                    "path": self.base.samples[i].img_path}


def _collate(items: list[dict]) -> dict:
    good = [b for b in items if "error" not in b]
    out = collate(good) if good else {"path": []}
    out["errors"] = [(b["path"], b["error"]) for b in items if "error" in b]
    return out


def readable_batches(root: Path, paths: Sequence[str], size: int, batch_size: int, workers: int,
                     skipped: list[tuple[str, str]], on_skip) -> Iterator[dict]:
    """Collated batches of the readable images; unreadable ones go to ``skipped``."""
    ds = _Tolerant(AnomalyDataset(root, [Sample(p, "", "", "", 0) for p in paths], size))
    it = iter(DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                         collate_fn=_collate))
    try:
        for batch in it:
            for path, err in batch.pop("errors"):
                skipped.append((path, err))
                on_skip(path, err)
            if batch["path"]:
                yield batch
    finally:
        stop_workers(it)


def readable_references(folder: Path, paths: Sequence[str], warn) -> list[str]:
    """The reference images that open; unreadable ones are reported and dropped."""
    ok = []
    for p in paths:
        try:
            open_image(folder / p)
            ok.append(p)
        except DatasetError as e:
            warn(p, str(e))
    if not ok:
        raise DatasetError(f"no readable reference images in {folder}")
    return ok


def resolve_thresholds(cfg: PredictConfig, mode: str, warn) -> dict:
    """{"image": t | None, "pixel": t | None, "source": str} from the file and the flags."""
    out: dict = {"image": None, "pixel": None, "source": None}
    if cfg.thresholds:
        path = Path(cfg.thresholds)
        if not path.is_file():
            raise DatasetError(f"thresholds file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"cannot read thresholds file {path}: {e}") from e
        table = data.get("per_category") if isinstance(data, dict) else None
        if not isinstance(table, dict):
            raise DatasetError(f"{path} has no 'per_category' table (write it with test.py)")
        cat = cfg.threshold_category or cfg.object_name
        if cat not in table:
            raise DatasetError(f"{path} has no thresholds for {cat!r} (it has: "
                               f"{', '.join(table) or 'none'}); pass --threshold_category")
        for key in ("image", "pixel"):
            v = table[cat].get(key) if isinstance(table[cat], dict) else None
            if v is not None and math.isfinite(float(v)):
                out[key] = float(v)
            else:
                warn(str(path), f"no finite {key} threshold for {cat!r}; not used")
        out["source"] = f"{path} [{cat}]"
        if data.get("mode") and data["mode"] != mode:
            warn(str(path), f"thresholds come from a {data['mode']} run but this is {mode}: "
                            "scores are on a different scale, labels may be off")
    if cfg.image_threshold is not None:
        out["image"], out["source"] = cfg.image_threshold, out["source"] or "command line"
    if cfg.pixel_threshold is not None:
        out["pixel"], out["source"] = cfg.pixel_threshold, out["source"] or "command line"
    return out


def output_names(paths: Sequence[str]) -> dict[str, str]:
    """PNG names under heatmaps/ and masks/ mirroring each relative path (``a/b.jpg`` ->
    ``a/b.png``); a PNG keeps its name, and a clash (``b.jpg`` beside ``b.png``) becomes
    ``a/b.jpg.png``."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for rel in sorted(paths, key=lambda r: not r.lower().endswith(".png")):
        name = Path(rel).with_suffix(".png").as_posix()
        if name in taken:
            name = rel + ".png"
        names[rel] = name
        taken.add(name)
    return names


def _csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------- main work
def predict(cfg: PredictConfig) -> dict:
    """Score ``cfg.image_dir``; returns the scores.json content. Raises on bad input."""
    image_dir, save = Path(cfg.image_dir), Path(cfg.save_path)
    paths = list_images(image_dir, cfg.recursive, exclude=[save])
    mode = "few_shot" if cfg.reference_dir else "zero_shot"
    log = setup_logging(save)

    def warn(path: str, why: str) -> None:  # on its own line, also under the progress bar
        tqdm.write(f"warning: {path}: {why}", file=sys.stderr)

    def skip(path: str, why: str) -> None:
        tqdm.write(f"warning: skipped unreadable file {path}: {why}", file=sys.stderr)

    thr = resolve_thresholds(cfg, mode, warn)
    refs: list[str] = []
    if cfg.reference_dir:
        ref_dir = Path(cfg.reference_dir)
        refs = readable_references(ref_dir, list_images(ref_dir, cfg.recursive), skip)
        both = {(ref_dir / r).resolve() for r in refs} & {(image_dir / p).resolve() for p in paths}
        if both:
            warn(str(ref_dir), f"{len(both)} reference image(s) are also scored: their few-shot "
                               "maps are near zero, which lowers the other images' normalisation")
    try:
        prompts = PromptSet.load(cfg.prompt_dir)
        prompts.build_prompts(cfg.object_name)
    except (OSError, ValueError) as e:
        raise DatasetError(f"bad prompt files: {e}") from e

    device = resolve_device(cfg.device)
    workers = default_workers(cfg.num_workers, device)
    model, tokenizer = build_model(cfg.model, cfg.pretrained, cfg.image_size, cfg.features_list,
                                   cfg.few_shot_features if refs else (), cfg.config_path, device)
    load_projections(model.projections, cfg.checkpoint_path)
    model.eval()
    text = TextFeatureBank(model.backbone.encode_text, tokenizer, prompts, device)(cfg.object_name)
    atomic_write_text(save / "config.json", config_json(cfg))
    log.info(f"{mode} on {len(paths)} images of {cfg.object_name!r} in {image_dir}"
             + (f", memory bank of {len(refs)} reference images" if refs else ""))

    banks = []
    if refs:
        tokens = reference_tokens(model, Path(cfg.reference_dir), refs, cfg.batch_size, workers,
                                  device)
        banks = [build_bank(model, cfg.object_name, refs, tokens)]
        del tokens

    size, t0 = cfg.image_size, time.time()
    skipped: list[tuple[str, str]] = []
    done: list[str] = []
    text_score, map_max = [], []
    names = output_names(paths)
    masks_written: set[str] = set()
    maps_out = []
    bar = progress(len(paths), cfg.object_name)
    for a in range(0, len(paths), CHUNK):
        batches = readable_batches(image_dir, paths[a:a + CHUNK], size, cfg.batch_size, workers,
                                   skipped, lambda p, e: (bar.update(1), skip(p, e)))
        first = next(batches, None)
        if first is None:  # nothing readable in this chunk
            continue
        res = run_category(model, itertools.chain([first], batches), text, banks, device,
                           bar.update)
        done += res["paths"]
        text_score.append(res["text_score"])
        i = 0
        for maps in full_maps(res["logits"], res["distances"][0] if banks else None, size):
            map_max.append(maps.max(axis=(1, 2)).astype(np.float64))
            if cfg.save_maps:
                maps_out.append(maps.astype(np.float16))
            for m in maps:
                rel = res["paths"][i]
                i += 1
                if cfg.no_heatmaps and thr["pixel"] is None:
                    continue
                img = open_image(image_dir / rel)
                pred = None
                if thr["pixel"] is not None:
                    pred = m >= thr["pixel"]
                    full = cv2.resize(m, img.size, interpolation=cv2.INTER_LINEAR)  # [H, W]
                    save_mask(save / "masks" / names[rel], full >= thr["pixel"])
                    masks_written.add(rel)
                if not cfg.no_heatmaps:
                    save_overlay(save / "heatmaps" / names[rel], img, m, pred)
        del res
    bar.close()
    if not done:
        raise DatasetError(f"none of the {len(paths)} image files in {image_dir} could be read")

    tscore, mmax = np.concatenate(text_score), np.concatenate(map_max)
    score = tscore
    if banks:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            score = combined_image_scores(tscore, mmax)
        for w in caught:
            warn(str(image_dir), f"{w.message} (few-shot scores are min-max normalised over the "
                                 "scored folder; score more images at once)")
    rows, images = [["path", "score"] + (["anomalous"] if thr["image"] is not None else [])], []
    for rel, s, t, mx in zip(done, score, tscore, mmax):
        rec = {"path": rel, "score": float(s), "text_score": float(t), "map_max": float(mx)}
        row = [rel, f"{s:.6f}"]
        if thr["image"] is not None:
            rec["anomalous"] = bool(s >= thr["image"])
            row.append(int(rec["anomalous"]))
        if rel in masks_written:
            rec["mask"] = f"masks/{names[rel]}"
        images.append(rec)
        rows.append(row)
    result = {
        "object_name": cfg.object_name, "mode": mode, "image_dir": str(image_dir),
        "score": ("0.5 * (text_score + min-max over this folder of map_max)" if banks
                  else "text_score: softmax(100 * image embedding . text features)[1]"),
        "references": refs, "reference_dir": cfg.reference_dir,
        "thresholds": thr, "n_scored": len(done),
        "skipped": [{"path": p, "error": e} for p, e in skipped], "images": images,
    }
    atomic_write_text(save / "scores.csv", _csv_text(rows))
    atomic_write_json(save / "scores.json", result)
    if cfg.save_maps:
        atomic_savez(save / "maps.npz", paths=np.array(done),
                     anomaly_maps=np.concatenate(maps_out))
    n_bad = sum(r.get("anomalous", False) for r in images)
    log.info(f"scored {len(done)} images in {time.time() - t0:.1f} s"
             + (f", {n_bad} above the image threshold {thr['image']:.4g}"
                if thr["image"] is not None else " (no image threshold: no labels)")
             + (f"; skipped {len(skipped)} unreadable file(s)" if skipped else "")
             + f". Results in {save}")
    return result


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_main(lambda: (predict(cfg), 0)[1])


if __name__ == "__main__":
    sys.exit(main())
