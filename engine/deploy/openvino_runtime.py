"""Scoring an exported APRIL-GAN graph with OpenVINO (``OpenVinoModel``), the runtime many
inspection PCs without a GPU use; same file, sidecar, inputs, outputs and checks as
``OnnxModel`` (a sidecar of another export is refused by its export id).

    model = OpenVinoModel("exports/screw.onnx", precision="fp32")
    out = model.run(np.stack([model.preprocess(p) for p in paths]))

``precision``: ``fp32`` (asked for explicitly: OpenVINO's CPU plugin otherwise computes in bf16
where the CPU supports it) or ``bf16`` (only where the CPU reports BF16 among its optimisation
capabilities; a clear error elsewhere). OpenVINO runs on the CPU here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from errors import ConfigError, ModelLoadError

from engine.deploy.onnx_runtime import OnnxModel
from engine.deploy.onnx_sidecar import INPUT, OUTPUTS, read_sidecar

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def _ov():
    try:
        import openvino
    except ImportError as e:
        raise ModelLoadError("OpenVINO is not installed: pip install -r requirements.txt "
                             "(or pip install openvino), or use --runtime onnxruntime") from e
    return openvino


def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin reports BF16 among this CPU's capabilities."""
    core = _ov().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoModel(OnnxModel):
    """An exported graph and its sidecar, compiled with OpenVINO for the CPU.

    Args:
        path: the ``.onnx`` file (its sidecar ``path + ".json"`` is read too).
        device: None or ``cpu`` (OpenVINO's GPU plugins are not supported here).
        precision: ``fp32`` or ``bf16`` (see the module docstring).
    """

    def __init__(self, path: str | Path, device: str | None = None, precision: str = "fp32"):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"ONNX file not found: {self.path}")
        if (device or "cpu").strip().lower() != "cpu":
            raise ConfigError(f"--device {device}: the OpenVINO runtime runs on the CPU here; "
                              "use --device cpu or --runtime onnxruntime")
        if precision not in PRECISIONS:
            raise ConfigError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
        self.meta: dict = read_sidecar(self.path)
        ov = _ov()
        core = ov.Core()
        if precision == "bf16" and not bf16_supported():
            raise ConfigError("--precision bf16: this CPU has no bf16 support (OpenVINO reports "
                              f"{', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}"
                              "); use --precision fp32")
        try:
            self.graph = core.read_model(str(self.path))
            self.compiled = core.compile_model(
                self.graph, "CPU", {"INFERENCE_PRECISION_HINT": PRECISIONS[precision]})
        except Exception as e:  # noqa: BLE001 - OpenVINO raises its own types
            text = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"OpenVINO cannot load {self.path}: {text}") from e
        self.precision = precision
        self._check_graph()
        self._transform = None

    def _check_graph(self) -> None:
        inputs = {i.get_any_name(): [d.get_length() if d.is_static else None
                                     for d in i.get_partial_shape()] for i in self.graph.inputs}
        self._check_io(inputs, {n for o in self.graph.outputs for n in o.get_names()})
        # OpenVINO keeps the ONNX metadata_props under the model's rt_info "framework"
        meta = self.graph.get_rt_info(["framework"]).value \
            if self.graph.has_rt_info(["framework"]) else {}
        self._check_export_id({str(k): str(v) for k, v in meta.items()}
                              if isinstance(meta, dict) else {})

    @property
    def providers(self) -> list[str]:
        return [f"OpenVINO CPU ({self.precision})"]

    def _infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        res = self.compiled({INPUT: x})
        return {n: np.asarray(res[self.compiled.output(n)], dtype=np.float32) for n in OUTPUTS}

    def __repr__(self) -> str:
        return (f"OpenVinoModel({str(self.path)!r}, object={self.object_name!r}, "
                f"mode={self.mode}, size={self.image_size}, precision={self.precision})")
