"""The sidecar of an exported APRIL-GAN graph (written and read here) and scoring with the
graph through onnxruntime (``OnnxModel``).

    model = OnnxModel("exports/screw.onnx")           # reads exports/screw.onnx.json too
    model.check(object_name="screw", image_size=518)  # ConfigError naming both values if not
    x = np.stack([model.preprocess(Image.open(p)) for p in paths])   # [B, 3, S, S] float32
    out = model.run(x)  # image_score [B], anomaly_map [B, S, S], text_score [B], map_max [B]

Sidecar ``FILE.onnx.json`` (``format`` "aprilgan-onnx", ``format_version`` 1; ``sidecar``):
    export_id        matches the ONNX metadata ``aprilgan.export_id`` (a stale sidecar is refused)
    onnx_file, object_name, mode ("zero_shot" | "few_shot"), image_size S
    input            {"name": "images", "shape": ["batch", 3, S, S], "dtype": "float32"}
    outputs          {name: shape} of image_score, anomaly_map, text_score, map_max
    preprocessing    size [S, S], resize "squash", interpolation "bicubic", center_crop S,
                     color "RGB", scale "1/255", mean, std (OpenAI), layout "CHW"
    features_list, few_shot_features ([] zero-shot)
    map              formula, range [0, #features + 2 * #few_shot_features]
    score            name ("text" | "per_image"), formula, text_score formula, normal_level mu
    references       {dir, files, count, recursive} or null
    thresholds       {image, pixel, source} or null
    model            {name, pretrained, config_path, embed_dim, kind}; checkpoint {path, sha256}
    prompts, opset, exporter, verification {max_abs_diff per output, batch}, created, versions

Providers: the CUDA provider when onnxruntime has it (``device`` None), else the CPU.
"""
from __future__ import annotations

import platform
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datasets.transforms import OPENAI_MEAN, OPENAI_STD
from errors import ConfigError, ModelLoadError
from utils.io import file_digest, read_json

from .export import (FEW_SHOT_SCORE, INPUT, OUTPUTS, SIDECAR_FORMAT, SIDECAR_VERSION,
                     ZERO_SHOT_SCORE, sidecar_path)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
# key -> type every sidecar must hold
REQUIRED = {"format": str, "format_version": int, "object_name": str, "mode": str,
            "image_size": int, "preprocessing": dict, "score": dict, "features_list": list}


# --------------------------------------------------------------------------- writing
def sidecar(job, export_id: str, verification: dict | None) -> dict:
    """The sidecar dict of an ``engine.export.ExportJob`` (the format: this module's docstring)."""

    cfg, s = job.cfg, int(job.cfg.image_size)
    few = job.mode == "few_shot"
    fs = list(job.model.few_shot_features) if few else []
    n_zero, n_few = len(cfg.features_list), len(fs)
    absolute = lambda p: str(Path(p).expanduser().resolve()) if p else None  # noqa: E731
    pretrained = cfg.pretrained if not Path(cfg.pretrained).expanduser().is_file() else \
        absolute(cfg.pretrained)
    return {
        "format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "export_id": export_id,
        "onnx_file": Path(cfg.output).name, "object_name": cfg.object_name, "mode": job.mode,
        "image_size": s,
        "input": {"name": INPUT, "shape": ["batch", 3, s, s], "dtype": "float32"},
        "outputs": {n: ["batch", s, s] if n == "anomaly_map" else ["batch"] for n in OUTPUTS},
        "preprocessing": {"size": [s, s], "resize": "squash", "interpolation": "bicubic",
                          "center_crop": s, "color": "RGB", "scale": "1/255",
                          "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "layout": "CHW",
                          "same_as": "datasets.transforms.image_transform"},
        "features_list": list(cfg.features_list), "few_shot_features": fs,
        "map": {"formula": "sum_n softmax(upsample(logits_n))[1]" + (
            " + sum_m upsample(1 - max cos(tokens_m, bank_m))" if few else ""),
            "range": [0.0, float(n_zero + 2 * n_few)]},
        "score": {"name": "per_image" if few else "text",
                  "formula": FEW_SHOT_SCORE if few else ZERO_SHOT_SCORE,
                  "text_score": ZERO_SHOT_SCORE, "normal_level": job.mu},
        "references": ({"dir": absolute(cfg.reference_dir), "files": list(job.refs),
                        "count": len(job.refs), "recursive": cfg.reference_recursive}
                       if few else None),
        "thresholds": job.thresholds if job.thresholds.get("source") else None,
        "model": {"name": Path(cfg.config_path).stem if cfg.config_path else cfg.model,
                  "pretrained": pretrained, "config_path": absolute(cfg.config_path),
                  "embed_dim": int(job.model.backbone.embed_dim),
                  "kind": job.model.backbone.kind},
        "checkpoint": {"path": absolute(cfg.checkpoint_path),
                       "sha256": file_digest(cfg.checkpoint_path)},
        "prompts": {"dir": absolute(cfg.prompt_dir), "object_name": cfg.object_name},
        "opset": int(cfg.opset), "exporter": cfg.exporter,
        "verification": {"max_abs_diff": verification, "batch": 2} if verification else None,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    """Versions of the packages that made (and run) the graph."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "open_clip_torch", "onnx", "onnxscript", "onnxruntime", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------- reading
def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise ModelLoadError("onnxruntime is not installed: pip install -r requirements.txt") from e
    return onnxruntime


def providers_for(device: str | None = None) -> list:
    """onnxruntime providers for ``device``: None (CUDA when available, then CPU), ``cpu``,
    ``cuda`` or ``cuda:N`` (ConfigError when onnxruntime has no CUDA provider here)."""
    available = _ort().get_available_providers()
    name = (device or "").strip().lower()
    if not name:
        return ([CUDA] if CUDA in available else []) + [CPU]
    if name == "cpu":
        return [CPU]
    if name.startswith("cuda"):
        if CUDA not in available:
            raise ConfigError(f"--device {device}: this onnxruntime has no CUDA provider "
                              f"(available: {', '.join(available)}); install onnxruntime-gpu "
                              "or use --device cpu")
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"--device {device} is not a device name (use cpu, cuda or cuda:N)")
        return [(CUDA, {"device_id": int(index or 0)}), CPU]
    raise ConfigError(f"--device {device}: onnxruntime runs on cpu or cuda[:N]")


def make_session(model: str | Path | bytes, device: str | None = None):
    """An ``onnxruntime.InferenceSession`` of a file or serialised model on ``device``."""
    ort = _ort()
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, providers=providers_for(device))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own pybind types
        what = "the serialised model" if isinstance(model, bytes) else str(model)
        text = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"onnxruntime cannot load {what}: {text}") from e


def read_sidecar(onnx_path: str | Path) -> dict:
    """The sidecar of ``onnx_path``, checked; ModelLoadError when missing or broken."""
    path = sidecar_path(onnx_path)
    hint = "export.py writes it beside the ONNX file; keep the two together"
    meta = read_json(path, "ONNX sidecar", error=ModelLoadError, hint=hint)
    if meta.get("format") != SIDECAR_FORMAT:
        raise ModelLoadError(f"ONNX sidecar {path} is not an export.py sidecar (format "
                             f"{meta.get('format')!r}, expected {SIDECAR_FORMAT!r}); {hint}")
    for key, tp in REQUIRED.items():
        if not isinstance(meta.get(key), tp) or isinstance(meta.get(key), bool):
            raise ModelLoadError(f"ONNX sidecar {path} is broken: {key!r} missing or not a "
                                 f"{tp.__name__}; export again")
    if meta["format_version"] > SIDECAR_VERSION:
        raise ModelLoadError(f"ONNX sidecar {path} has format version {meta['format_version']}; "
                             f"this code reads up to {SIDECAR_VERSION}: update the code")
    if meta["mode"] not in ("zero_shot", "few_shot"):
        raise ModelLoadError(f"ONNX sidecar {path} is broken: mode {meta['mode']!r}")
    pre = meta["preprocessing"]
    if pre.get("resize") != "squash" or not _close(pre.get("mean"), OPENAI_MEAN) or \
            not _close(pre.get("std"), OPENAI_STD):
        raise ModelLoadError(f"ONNX sidecar {path} asks for a preprocessing this runtime does "
                             f"not implement (resize {pre.get('resize')!r}, mean "
                             f"{pre.get('mean')}, std {pre.get('std')})")
    return meta


def _close(values: Any, expected: Sequence[float]) -> bool:
    try:
        return len(values) == len(expected) and np.allclose(values, expected, rtol=0, atol=1e-7)
    except TypeError:
        return False


class OnnxModel:
    """An exported graph and its sidecar, run with onnxruntime.

    Args:
        path: the ``.onnx`` file (its sidecar ``path + ".json"`` is read too).
        device: None (CUDA provider when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ModelLoadError: the file or its sidecar is missing, broken or from another export, or
            the sidecar's image size is not the graph's input size.
    """

    def __init__(self, path: str | Path, device: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"ONNX file not found: {self.path}")
        self.meta: dict = read_sidecar(self.path)
        self.session = make_session(self.path, device)
        self._check_graph()
        self._transform = None

    def _check_graph(self) -> None:
        s, where = self.meta["image_size"], f"{self.path} and its sidecar"
        inputs = {i.name: i for i in self.session.get_inputs()}
        if INPUT not in inputs:
            raise ModelLoadError(f"{self.path} is not an export.py graph: no input {INPUT!r} "
                                 f"(it has {', '.join(inputs)})")
        shape = list(inputs[INPUT].shape)
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != [shape[2]] * 2:
            raise ModelLoadError(f"{self.path}: input {INPUT!r} has shape {shape}, not "
                                 "[batch, 3, S, S]")
        if shape[2] != s:
            raise ModelLoadError(f"{where} disagree: the graph takes {shape[2]} px images, the "
                                 f"sidecar says image_size {s}; the sidecar belongs to another "
                                 "export")
        names = {o.name for o in self.session.get_outputs()}
        missing = [n for n in OUTPUTS if n not in names]
        if missing:
            raise ModelLoadError(f"{self.path} lacks the outputs {missing}: not an export.py graph")
        props = self.session.get_modelmeta().custom_metadata_map
        eid = props.get("aprilgan.export_id")
        if eid and self.meta.get("export_id") and eid != self.meta["export_id"]:
            raise ModelLoadError(f"{where} disagree: the sidecar was written by another export "
                                 f"(graph of {props.get('aprilgan.object_name')!r} at "
                                 f"{props.get('aprilgan.image_size')} px); export again")

    # ----------------------------------------------------------------- what it is
    @property
    def image_size(self) -> int:
        """Input side S in pixels."""
        return int(self.meta["image_size"])

    @property
    def object_name(self) -> str:
        return self.meta["object_name"]

    @property
    def mode(self) -> str:
        """``zero_shot`` or ``few_shot`` (memory banks baked in)."""
        return self.meta["mode"]

    @property
    def thresholds(self) -> dict | None:
        """``{"image", "pixel", "source"}`` recorded at export, or None."""
        return self.meta.get("thresholds")

    @property
    def providers(self) -> list[str]:
        """The onnxruntime providers in use, first preferred."""
        return list(self.session.get_providers())

    def check(self, object_name: str | None = None, image_size: int | None = None) -> None:
        """ConfigError naming both values when the file is for another object or size."""
        if object_name is not None and object_name != self.object_name:
            raise ConfigError(f"{self.path} was exported for object {self.object_name!r}, not "
                              f"{object_name!r}: export it again with --object_name {object_name}")
        if image_size is not None and int(image_size) != self.image_size:
            raise ConfigError(f"{self.path} takes {self.image_size} px images, not {image_size}: "
                              f"export it again with --image_size {image_size}")

    # ----------------------------------------------------------------- scoring
    def preprocess(self, image) -> np.ndarray:
        """A PIL image (or an image file path) -> [3, S, S] float32, exactly as
        ``datasets.transforms.image_transform(S)``: squash bicubic resize, RGB, OpenAI norm."""
        from datasets.transforms import image_transform, open_image

        if isinstance(image, (str, Path)):
            image = open_image(image)
        if self._transform is None:
            self._transform = image_transform(self.image_size)
        return self._transform(image).numpy().astype(np.float32, copy=False)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Score a preprocessed batch.

        Args:
            images: [B, 3, S, S] (float32; other float types are converted).

        Returns:
            ``image_score`` [B], ``anomaly_map`` [B, S, S], ``text_score`` [B], ``map_max`` [B],
            float32 numpy arrays (see the sidecar's ``score`` and ``map`` for the formulas).
        """
        x = np.asarray(images)
        s = self.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ConfigError(f"images of shape {list(x.shape)}: {self.path.name} takes "
                              f"[B, 3, {s}, {s}] (use .preprocess)")
        if x.shape[0] == 0:
            return {n: np.zeros((0, s, s) if n == "anomaly_map" else (0,), np.float32)
                    for n in OUTPUTS}
        x = np.ascontiguousarray(x, dtype=np.float32)
        return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), {INPUT: x})))

    def __repr__(self) -> str:
        return (f"OnnxModel({str(self.path)!r}, object={self.object_name!r}, mode={self.mode}, "
                f"size={self.image_size}, providers={self.providers})")
