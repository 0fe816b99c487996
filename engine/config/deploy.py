"""The settings of export.py (``ExportConfig``, recorded in the sidecar)."""
from __future__ import annotations

from dataclasses import dataclass

from utils.cli import opt

from engine.config.flags import FewShotStageFlags, ModelConfig, PromptFlags, ReferenceDirFlags, ThresholdFlags

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18


@dataclass
class ExportConfig(ThresholdFlags, ReferenceDirFlags, FewShotStageFlags,
                   PromptFlags, ModelConfig):
    """Settings of one export.py run (recorded in the sidecar)."""

    output: str | None = opt(None, "ONNX file to write; its sidecar (the name + .json) goes "
                             "beside it",
                             required=True, path=True)
    object_name: str | None = opt(None, "object word used in the prompts, e.g. screw, pcb1 "
                                  "(prompts/overrides.json applies)", required=True)
    checkpoint_path: str | None = opt(None, "projection weights (released format, e.g. "
                                      "visa_pretrained.pth)", required=True, path=True)
    opset: int = opt(DEFAULT_OPSET, "ONNX opset version", minimum=13, maximum=23)
    exporter: str = opt("dynamo", "torch.onnx exporter: dynamo (torch.export, needs "
                        "onnxscript) or torchscript (the legacy tracer, faster to export)",
                        choices=EXPORTERS)
    no_verify: bool = opt(False, "skip running the written graph with onnxruntime against "
                          "torch on a random batch")
