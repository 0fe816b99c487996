"""Export APRIL-GAN for one object to ONNX: text features (and memory banks) baked in.

The graph maps a preprocessed batch ``images`` [B, 3, S, S] float32 (B dynamic; preprocessing
as ``datasets.transforms.image_transform``, recorded in the sidecar) to

    text_score  [B]        softmax(100 * f_img @ T)[:, 1]                      (METHOD §4)
    anomaly_map [B, S, S]  M = sum_n softmax(up(logits_n))[:, 1]               (zero-shot)
                           M + sum_m up(1 - max_j cos(tokens_m, bank_m[j]))    (few-shot, METHOD §5)
    map_max     [B]        max over the S x S pixels of anomaly_map
    image_score [B]        zero-shot: text_score;
                           few-shot:  0.5 * (text_score + clip((map_max - mu) / mu, 0, 1))

with ``up`` the bilinear upsampling to S x S (align_corners=True), T [D, 2] the prompt-ensemble
text features of ``--object_name`` and, few-shot, bank_m [k * L, C] the raw stage-m tokens of
the k images in ``--reference_dir`` (constants, L2-normalised in the graph as
``models.anomaly_maps.nearest_distance`` does; constant folding may store them normalised) and
mu the references' normal level (``engine.core.inference.normal_level``): the per-image score of
``models.anomaly_maps.per_image_scores``, which depends on nothing but the image, the references
and the model.

Beside ``FILE.onnx`` goes ``FILE.onnx.json`` (``sidecar_path``; format, writer and reader in
``engine.deploy.onnx_sidecar``): what a runtime needs to feed and read the graph -- preprocessing,
stages, object, mode, score definition with mu, thresholds, model and checkpoint, opset,
versions. Both files are written atomically. The settings (``ExportConfig``) live in
``engine.config``, so ``export.py --help`` does not import this module (nor torch).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from datasets.folder import list_files, readable_images
from errors import ConfigError, ModelLoadError
from models.anomaly_maps import few_shot_map, nearest_distance, per_image_score, zero_shot_map
from prompts import TextFeatureBank, load_prompts
from utils.io import atomic_write, atomic_write_json

from engine.config import DEFAULT_OPSET, ExportConfig
from engine.core.inference import build_bank, normal_level, reference_tokens
from engine.core.loading import resolve_device, scoring_model
from engine.core.thresholds import definition, model_name, resolve_thresholds
from engine.deploy.onnx_sidecar import INPUT, OUTPUTS, sidecar, sidecar_path

# ONNX vs torch on the verification batch: beyond these the export is refused
VERIFY_TOL = {"anomaly_map": 1e-3, "map_max": 1e-3, "text_score": 1e-4, "image_score": 1e-3}


def check_output(output: str | os.PathLike) -> Path:
    """The ``--output`` file, its folder created and probed for writing before any work.

    Raises ConfigError naming the flag when it is a folder, or its folder is a file, cannot be
    created or is not writable.
    """
    path = Path(output).expanduser()
    if path.is_dir():
        raise ConfigError(f"--output {output} is a folder: give a file name such as "
                          f"{path / 'model.onnx'}")
    blocker = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"--output {output}: {blocker} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise ConfigError(f"--output {output}: cannot write in {path.parent} "
                          f"({e.strerror or e}); choose a writable folder") from e
    return path


# --------------------------------------------------------------------------- the graph
class ScoringGraph(nn.Module):
    """images [B, 3, S, S] -> (image_score [B], anomaly_map [B, S, S], text_score [B],
    map_max [B]); see the module docstring for the formulas."""

    def __init__(self, model, text, banks: dict | None, mu: float | None):
        super().__init__()
        self.model = model
        self.size = int(model.image_size)
        self.register_buffer("text", text.detach().float().cpu().clone())  # [D, 2]
        self.stages = sorted(banks) if banks else []
        for s in self.stages:  # raw reference tokens [k * L, C]
            self.register_buffer(f"bank_{s}", banks[s].detach().float().cpu().clone())
        self.mu = None if mu is None else max(float(mu), 1e-12)

    def forward(self, images: torch.Tensor):
        enc = self.model.encode(images)
        head = self.model.head(enc["patch_tokens"], enc["image_embed"], self.text)
        text_score = head["image_score"]
        amap = zero_shot_map(head["stage_logits"], self.size)
        if self.stages:
            dists = [nearest_distance(enc["patch_tokens"][s], getattr(self, f"bank_{s}"))
                     for s in self.stages]  # bank chunks of 8192 rows, as MemoryBank
            amap = amap + few_shot_map(dists, self.size)
        map_max = amap.flatten(1).amax(dim=1)
        score = text_score
        if self.mu is not None:  # the numpy path's formula, on the graph's tensors
            score = per_image_score(text_score, map_max, self.mu)
        return score, amap, text_score, map_max


def build_graph(model, text, banks: dict | None = None, mu: float | None = None):
    """The exportable module of ``model`` (eval, fp32, on the CPU) for one object.

    Args:
        model: an ``AprilGAN`` with its projections loaded.
        text: [D, 2] text features of the object.
        banks: few-shot only: {stage: [k * L, C]} raw reference tokens.
        mu: few-shot only: the normal level of ``per_image_scores``.
    """
    model = model.cpu().eval()
    model.backbone.autocast = False  # the graph is float32 on every device
    return ScoringGraph(model, text, banks, mu).eval()


def example_batch(size: int, batch: int = 2, seed: int = 0):
    """A seeded [batch, 3, S, S] float32 input (N(0, 1), roughly a normalised image)."""

    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def export_proto(graph, size: int, opset: int = DEFAULT_OPSET, exporter: str = "dynamo"):
    """The ``onnx.ModelProto`` of ``graph``, its batch dimension dynamic (named ``batch``).

    ``dynamo`` is torch.export + onnxscript (torch's default); ``torchscript`` is the legacy
    tracer, run with the fused multi-head-attention fast path off (it has no ONNX symbolic).
    """


    x = example_batch(size)
    kw: dict[str, Any] = dict(input_names=[INPUT], output_names=list(OUTPUTS), opset_version=opset)
    quiet = logging.getLogger("onnxscript")
    level = quiet.level
    try:
        quiet.setLevel(logging.ERROR)  # "skipping constant folding" notes
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # tracer and deprecation chatter
            if exporter == "dynamo":
                prog = torch.onnx.export(
                    graph, (x,), None, dynamo=True, verbose=False,
                    dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}}, **kw)
                proto = prog.model_proto
            else:
                fast = torch.backends.mha.get_fastpath_enabled()
                torch.backends.mha.set_fastpath_enabled(False)
                buf = io.BytesIO()
                try:
                    torch.onnx.export(graph, (x,), buf, dynamo=False, do_constant_folding=True,
                                      dynamic_axes={n: {0: "batch"} for n in (INPUT, *OUTPUTS)},
                                      **kw)
                finally:
                    torch.backends.mha.set_fastpath_enabled(fast)
                proto = onnx.load_from_string(buf.getvalue())
    except Exception as e:  # noqa: BLE001 - exporters raise many types
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise ModelLoadError(f"the {exporter} exporter failed: {str(e).strip().splitlines()[0][:300]}"
                             f" (try --exporter {other})") from e
    finally:
        quiet.setLevel(level)
    for node in proto.graph.node:  # the dynamo exporter's per-node stack traces: 3/4 of the file
        node.doc_string = ""
        del node.metadata_props[:]
    if proto.ByteSize() < 2**31 - 1:  # the checker cannot take a model over protobuf's 2 GB
        onnx.checker.check_model(proto)
    return proto


# --------------------------------------------------------------------------- one export
@dataclass
class ExportJob:
    """What ``prepare`` builds: the model, the object's text features and banks, mu."""

    cfg: ExportConfig
    model: Any
    text: Any
    refs: list[str]
    banks: dict | None
    mu: float | None
    thresholds: dict
    device: Any

    @property
    def mode(self) -> str:
        return "few_shot" if self.refs else "zero_shot"


def prepare(cfg: ExportConfig, log: logging.Logger) -> ExportJob:
    """References, thresholds, prompts, model, text features and (few-shot) banks and mu.

    Reference tokens and mu are computed in float32 (no autocast), as the graph computes the
    tokens of the images it scores.
    """


    def warn(where: str, why: str) -> None:
        log.warning(f"warning: {where}: {why}")

    refs: list[str] = []
    if cfg.reference_dir:
        ref_dir = Path(cfg.reference_dir)
        listed = list_files(ref_dir, cfg.reference_recursive, warn=warn, what="reference folder")
        refs = readable_images(ref_dir, listed, lambda p, e: warn(p, f"reference skipped: {e}"))
    run = definition("few_shot" if refs else "zero_shot", "per_image",
                     model_name(cfg.model, cfg.config_path), cfg.image_size, cfg.features_list,
                     cfg.few_shot_features, len(refs))
    thresholds = resolve_thresholds(cfg, {**run, "score_fixed": True}, warn)
    prompts = load_prompts(cfg.prompt_dir, [cfg.object_name])
    device = resolve_device(cfg.device)
    workers = cfg.loader_workers(device)
    model, tokenizer = scoring_model(cfg, device, bool(refs), precision="fp32", cpu_linear="blas")
    text = TextFeatureBank(model.backbone.encode_text, tokenizer, prompts, device)(cfg.object_name)
    banks, mu = None, None
    if refs:
        log.info(f"memory banks of {len(refs)} reference images of {cfg.object_name!r}")
        tokens = reference_tokens(model, Path(cfg.reference_dir), refs, cfg.batch_size, workers,
                                  device)
        bank = build_bank(model, cfg.object_name, refs, tokens)
        banks = {s: bank.bank(s) for s in model.few_shot_features}
        mu = normal_level(model, refs, tokens, text, cfg.image_size)
    return ExportJob(cfg, model, text, refs, banks, mu, thresholds, device)


def verify(graph, proto_bytes: bytes, size: int) -> dict[str, float]:
    """Max |ONNX - torch| per output on ``example_batch`` (onnxruntime, CPU).

    Raises ModelLoadError when a difference passes ``VERIFY_TOL``.
    """

    x = example_batch(size)
    with torch.no_grad():
        ref = [t.numpy() for t in graph(x)]
    sess = ort.InferenceSession(proto_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(list(OUTPUTS), {INPUT: x.numpy()})
    diff = {n: float(np.max(np.abs(g - r))) for n, g, r in zip(OUTPUTS, got, ref)}
    bad = {n: d for n, d in diff.items() if not d <= VERIFY_TOL[n]}
    if bad:
        raise ModelLoadError(f"the exported graph differs from torch: {bad} (tolerances "
                             f"{VERIFY_TOL}); try the other --exporter")
    return diff


def write(job: ExportJob, log: logging.Logger) -> dict:
    """Export, verify and write ``--output`` and its sidecar (each atomically); returns the
    sidecar dict."""


    cfg = job.cfg
    out = check_output(cfg.output)
    graph = build_graph(job.model, job.text, job.banks, job.mu)
    log.info(f"exporting {job.mode} graph of {cfg.object_name!r} at {cfg.image_size} px "
             f"({cfg.exporter} exporter, opset {cfg.opset})")
    proto = export_proto(graph, int(cfg.image_size), cfg.opset, cfg.exporter)
    export_id = uuid.uuid4().hex
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({"aprilgan.export_id": export_id, "aprilgan.object_name": cfg.object_name,
                  "aprilgan.image_size": str(cfg.image_size), "aprilgan.mode": job.mode})
    onnx.helper.set_model_props(proto, props)
    if proto.ByteSize() >= 2**31:
        raise ModelLoadError(f"the graph takes {proto.ByteSize() / 2**30:.1f} GiB, over the 2 GiB "
                             "of a single ONNX file: use a smaller model or fewer references")
    data = proto.SerializeToString()
    diff = None if cfg.no_verify else verify(graph, data, int(cfg.image_size))
    meta = sidecar(job, export_id, diff)
    atomic_write(out, lambda f: f.write(data))
    atomic_write_json(sidecar_path(out), meta)
    log.info(f"wrote {out} ({len(data) / 2**20:.1f} MiB) and {sidecar_path(out).name}"
             + (f"; max |onnx - torch| {max(diff.values()):.2e}" if diff else ""))
    return meta


def run(cfg: ExportConfig, log: logging.Logger) -> dict:
    """``prepare`` then ``write``: the whole of export.py after parsing."""
    check_output(cfg.output)  # an unwritable target fails before the model is built
    if Path(cfg.output).suffix.lower() != ".onnx":
        log.warning(f"warning: --output {cfg.output} does not end in .onnx")
    return write(prepare(cfg, log), log)
