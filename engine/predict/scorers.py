"""What predict.py scores with: the torch model, or an exported ONNX graph (``--onnx``).

Both read batches of preprocessed images and yield, per batch, the text scores and the final
anomaly maps; the image score is made from them by the caller (``models.anomaly_maps``), so the
two paths write the same files.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from datasets.folder import readable_batches, readable_images
from models.anomaly_maps import final_maps, zero_shot_maps
from prompts import TextFeatureBank, load_prompts

from engine.config import PredictConfig
from engine.core.inference import build_bank, infer_batches, normal_level, reference_tokens
from engine.core.loading import resolve_device, scoring_model


class TorchScorer:
    """The AprilGAN model with the object's text features (and memory bank)."""

    def __init__(self, cfg: PredictConfig, device_name: str | None, refs: Sequence[str],
                 log: logging.Logger):
        self.device = resolve_device(device_name)
        self.workers = cfg.loader_workers(self.device)
        self.size = cfg.image_size
        prompts = load_prompts(cfg.prompt_dir, [cfg.object_name])
        self.model, tokenizer = scoring_model(cfg, self.device, bool(refs))
        self.text = TextFeatureBank(self.model.backbone.encode_text, tokenizer, prompts,
                                    self.device)(cfg.object_name)
        self.banks, self.normal_level = [], None
        if refs:
            tokens = reference_tokens(self.model, Path(cfg.reference_dir), refs, cfg.batch_size,
                                      self.workers, self.device)
            self.banks = [build_bank(self.model, cfg.object_name, refs, tokens)]
            self.normal_level = normal_level(self.model, refs, tokens, self.text, self.size)
        self.n_stages = len(self.model.features_list)
        self.n_memory_stages = len(self.model.few_shot_features) if refs else 0

    def batches(self, root: Path, paths: Sequence[str], batch_size: int, on_skip
                ) -> Iterator[dict]:
        """Per batch: ``path`` list, ``text_score`` [b], ``maps`` [b, S, S] float32 (numpy)."""
        loader = readable_batches(root, paths, self.size, batch_size, self.workers, on_skip)
        yield from self.score_batches(loader)

    def score_batches(self, batches: Iterable[dict]) -> Iterator[dict]:
        """``batches``' results: each a collated batch (``image`` [b, 3, S, S], ``mask``,
        ``label``, ``path``, as ``datasets.anomaly_dataset.collate`` makes them) in, its
        ``path``, ``text_score`` and ``maps`` out (serve.py passes the batches it forms)."""
        for r in infer_batches(self.model, batches, self.text, self.banks, self.device):
            zs = zero_shot_maps(r["logits"], self.size, torch.device("cpu"))
            maps = final_maps(zs, r["distances"][0] if self.banks else None, self.size)
            yield {"path": r["path"], "text_score": r["text_score"], "maps": maps.numpy()}


class OnnxScorer:
    """An exported graph (text features, memory bank and normal level baked in)."""

    def __init__(self, cfg: PredictConfig, device_name: str | None, log: logging.Logger):
        if cfg.runtime == "openvino":
            from engine.deploy.openvino_runtime import OpenVinoModel

            self.onnx = OpenVinoModel(cfg.onnx, device_name,
                                      "bf16" if cfg.precision == "bf16" else "fp32")
        else:
            from engine.deploy.onnx_runtime import OnnxModel

            self.onnx = OnnxModel(cfg.onnx, device_name)
        self.onnx.check(object_name=cfg.object_name or None)
        meta = self.onnx.meta
        self.size = self.onnx.image_size
        self.workers = cfg.num_workers or 0
        self.normal_level = meta["score"].get("normal_level")
        self.n_stages = len(meta["features_list"])
        self.n_memory_stages = len(meta.get("few_shot_features") or [])
        self.device = torch.device("cpu")
        log.info(f"scoring with {cfg.onnx} ({cfg.runtime}, {', '.join(self.onnx.providers)})")

    def batches(self, root: Path, paths: Sequence[str], batch_size: int, on_skip
                ) -> Iterator[dict]:
        yield from self.score_batches(
            readable_batches(root, paths, self.size, batch_size, self.workers, on_skip))

    def score_batches(self, batches: Iterable[dict]) -> Iterator[dict]:
        """As ``TorchScorer.score_batches``: collated batches in, their results out."""
        for batch in batches:
            out = self.onnx.run(batch["image"].numpy().astype(np.float32))
            yield {"path": list(batch["path"]),
                   "text_score": np.asarray(out["text_score"], dtype=np.float64),
                   "maps": np.asarray(out["anomaly_map"], dtype=np.float32)}


def reference_list(cfg: PredictConfig, warn) -> list[str]:
    """The readable reference images (few-shot), [] without ``--reference_dir``."""
    if not cfg.reference_dir:
        return []
    from datasets.folder import list_files

    ref_dir = Path(cfg.reference_dir)
    listed = list_files(ref_dir, cfg.reference_recursive, warn=warn, what="reference folder")
    return readable_images(ref_dir, listed, lambda p, e: warn(p, f"reference skipped: {e}"))
