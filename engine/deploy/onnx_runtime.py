"""Scoring with an exported APRIL-GAN graph through onnxruntime (``OnnxModel``); the sidecar
it reads beside the graph is defined in ``engine.deploy.onnx_sidecar``.

    model = OnnxModel("exports/screw.onnx")           # reads exports/screw.onnx.json too
    model.check(object_name="screw", image_size=518)  # ConfigError naming both values if not
    x = np.stack([model.preprocess(Image.open(p)) for p in paths])   # [B, 3, S, S] float32
    out = model.run(x)  # image_score [B], anomaly_map [B, S, S], text_score [B], map_max [B]

Providers: the CUDA provider when onnxruntime has it (``device`` None), else the CPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from errors import ConfigError, ModelLoadError

from engine.deploy.onnx_sidecar import INPUT, OUTPUTS, read_sidecar

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


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
        inputs = {i.name: list(i.shape) for i in self.session.get_inputs()}
        self._check_io(inputs, {o.name for o in self.session.get_outputs()})
        self._check_export_id(self.session.get_modelmeta().custom_metadata_map)

    def _check_export_id(self, props: dict[str, str]) -> None:
        """ModelLoadError when the graph's metadata ``props`` (ONNX ``metadata_props``) name
        another export than the sidecar's ``export_id`` (either absent: nothing to check)."""
        eid = props.get("aprilgan.export_id")
        if eid and self.meta.get("export_id") and eid != self.meta["export_id"]:
            raise ModelLoadError(f"{self.path} and its sidecar disagree: the sidecar was written "
                                 f"by another export (graph of {props.get('aprilgan.object_name')!r}"
                                 f" at {props.get('aprilgan.image_size')} px); export again")

    def _check_io(self, inputs: dict[str, list], outputs: set[str]) -> None:
        """ModelLoadError unless the graph takes ``[batch, 3, S, S]`` images as ``INPUT`` with the
        sidecar's S and gives every output of ``OUTPUTS`` (``inputs``: name -> shape, a
        dimension an int or a name)."""
        s, where = self.meta["image_size"], f"{self.path} and its sidecar"
        if INPUT not in inputs:
            raise ModelLoadError(f"{self.path} is not an export.py graph: no input {INPUT!r} "
                                 f"(it has {', '.join(inputs)})")
        shape = inputs[INPUT]
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != [shape[2]] * 2:
            raise ModelLoadError(f"{self.path}: input {INPUT!r} has shape {shape}, not "
                                 "[batch, 3, S, S]")
        if shape[2] != s:
            raise ModelLoadError(f"{where} disagree: the graph takes {shape[2]} px images, the "
                                 f"sidecar says image_size {s}; the sidecar belongs to another "
                                 "export")
        missing = [n for n in OUTPUTS if n not in outputs]
        if missing:
            raise ModelLoadError(f"{self.path} lacks the outputs {missing}: not an export.py graph")

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
        return self._infer(np.ascontiguousarray(x, dtype=np.float32))

    def _infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The runtime's call on a checked, non-empty float32 batch."""
        return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), {INPUT: x})))

    def __repr__(self) -> str:
        return (f"OnnxModel({str(self.path)!r}, object={self.object_name!r}, mode={self.mode}, "
                f"size={self.image_size}, providers={self.providers})")
