r"""Serve APRIL-GAN over HTTP (and/or score a watch folder), with predict.py's model and scores.

    python serve.py --onnx exports/screw.onnx                      # http://127.0.0.1:8000/
    python serve.py --onnx exports/screw.onnx exports/nut.onnx --thresholds thresholds.json
    python serve.py --checkpoint_path exps/pretrained/visa_pretrained.pth --object_name screw \
        --reference_dir good_refs/ --thresholds results/today/thresholds.json
    python serve.py --onnx exports/screw.onnx --watch line/incoming --save_path line/scored \
        [--no_http]
    curl -F image=@part.png http://127.0.0.1:8000/score

The same model flags as predict.py: torch with a checkpoint, or ``--onnx FILE ...`` (one export
per object) with ``--runtime {onnxruntime,openvino}``; thresholds from ``--thresholds``, the
flags, or each export's sidecar. ``GET /`` is a page to try it (upload or drop an image, pick
the object, see the score, the verdict, the heatmap with its regions, move the threshold);
``GET /health`` says what is served; ``POST /score`` (multipart field ``image``, and
``object_name`` when several objects are served) answers JSON: ``score``, ``anomalous``, the
image and pixel thresholds and their source, ``regions`` (as in regions.csv), and the heatmap
PNG as ``heatmap_url`` (or ``heatmap_png_base64`` with ``heatmap=inline``).

Scores: predict.py's per-image score (zero-shot: the text score; few-shot: per_image; the
released score, normalised over a folder, is refused). With ``--max_batch 1`` a score is
predict.py ``--batch_size 1``'s bit for bit (same decoding, transform, model code and formula,
at the same OMP_NUM_THREADS); with micro-batching within 1e-5, and the verdict is predict.py's
but for scores that close to the threshold. Binds 127.0.0.1 unless ``--host`` says otherwise;
``--api_key`` (or $APRILGAN_API_KEY) requires ``Authorization: Bearer KEY``. ``--watch DIR
--save_path OUT`` scores every image in DIR, and each that appears later, exactly once, even
across a kill and a restart, into OUT as predict.py writes (scores.csv, heatmaps/, masks/,
regions.csv, with rows appended; skipped.csv, ledger.jsonl, log.txt). Ctrl-C or SIGTERM stops.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from utils.cli import parse_config, run_main

from engine.config import ServeConfig


def parse_args(argv: list[str] | None = None) -> ServeConfig:
    return parse_config(ServeConfig, argv, "serve.py", __doc__)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the service as Ctrl-C does


def _watched(service, cfg: ServeConfig):
    """The served model of the --watch folder's object (ConfigError when it is unclear)."""
    from errors import ConfigError

    names = ", ".join(sorted(service.models))
    if cfg.watch_object is None and len(service.models) > 1:
        raise ConfigError(f"--watch with several objects needs --watch_object (one of {names})")
    if cfg.watch_object is not None and cfg.watch_object not in service.models:
        raise ConfigError(f"--watch_object {cfg.watch_object!r} is not served (served: {names})")
    return service.models[cfg.watch_object or next(iter(service.models))]


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def body() -> None:
        from utils.allocator import keep_large_buffers

        keep_large_buffers()  # large CPU buffers stay in the process (utils/allocator.py)
        from errors import DatasetError

        from engine.plumbing.preflight import check_checkpoint_file, check_onnx_file, check_pretrained

        for f in cfg.onnx or []:
            check_onnx_file(f)
        if not cfg.onnx:
            check_checkpoint_file(cfg.checkpoint_path, onnx_flag=True)
            check_pretrained(cfg.model, cfg.pretrained)
        if cfg.watch and not Path(cfg.watch).is_dir():
            raise DatasetError(f"--watch folder not found: {cfg.watch}")
        from utils.log import setup_logging

        from engine.serve.serving import Service

        log = setup_logging(Path(cfg.save_path) if cfg.save_path else None)
        signal.signal(signal.SIGTERM, _stop)
        service, watch = Service(cfg, log), None
        try:
            if cfg.watch:
                from engine.serve.watch import FolderWatch

                watch = FolderWatch(service, _watched(service, cfg), cfg, log)
                if not cfg.no_http:  # a failed watch stops the service too
                    watch.on_failure = lambda: os.kill(os.getpid(), signal.SIGINT)
                watch.start()
            if cfg.no_http:
                while not watch.done.wait(0.5):
                    pass
            else:
                from engine.serve.serve_http import run_http

                run_http(service, log)
        except KeyboardInterrupt:
            pass
        finally:
            if watch is not None:
                watch.stop()
            service.close()
        if watch is not None and watch.failure is not None:
            raise watch.failure
        log.info("stopped")

    return run_main(body, cfg.debug)


if __name__ == "__main__":
    sys.exit(main())
