r"""Export APRIL-GAN for one object to an ONNX file that onnxruntime runs without this code.

    python export.py --output exports/screw.onnx --object_name screw \
        --checkpoint_path exps/pretrained/visa_pretrained.pth
    python export.py --output exports/screw_fs.onnx --object_name screw \
        --checkpoint_path exps/pretrained/visa_pretrained.pth --reference_dir my_parts_ok/ \
        --thresholds results/visa/thresholds.json

The graph takes a preprocessed batch "images" [B, 3, S, S] float32 (any B) and returns
image_score [B], anomaly_map [B, S, S], text_score [B] and map_max [B]. The prompt-ensemble text
features of --object_name are baked in; with --reference_dir the memory banks of all its images
are too (few-shot), and image_score is the per-image score
0.5 * (text_score + clip((map_max - mu) / mu, 0, 1)) with the references' normal level mu, so a
score depends on nothing but the image. Zero-shot, image_score = text_score.

Beside FILE.onnx goes FILE.onnx.json: preprocessing (size, mean, std, squash resize, bicubic,
RGB), stages, object, mode, score definition and mu, thresholds, model, checkpoint, opset and
versions. predict.py --onnx FILE scores with it (engine.deploy.onnx_runtime.OnnxModel); after writing,
the graph is run once with onnxruntime against torch on a random batch (--no_verify skips it).
"""
from __future__ import annotations

import sys

from utils.cli import parse_config, run_main

from engine.config import ExportConfig


def parse_args(argv: list[str] | None = None) -> ExportConfig:
    return parse_config(ExportConfig, argv, "export.py", __doc__)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def body() -> None:
        from engine.deploy.export import check_output
        from engine.plumbing.preflight import check_checkpoint_file, check_pretrained

        check_output(cfg.output)  # fail before torch loads
        check_checkpoint_file(cfg.checkpoint_path)
        check_pretrained(cfg.model, cfg.pretrained)
        from utils.log import setup_logging

        from engine.deploy import export

        export.run(cfg, setup_logging())

    return run_main(body, cfg.debug)


if __name__ == "__main__":
    sys.exit(main())
