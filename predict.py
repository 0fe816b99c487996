r"""Score a folder of your own images of one object with APRIL-GAN (no labels needed).

    python predict.py --image_dir my_parts/ --object_name screw --save_path results/my_parts \
        --checkpoint_path exps/pretrained/visa_pretrained.pth
    python predict.py ... --reference_dir my_parts_ok/ --thresholds results/mvtec/thresholds.json
    python predict.py ... --reference_dir my_parts_ok/ --calibration_dir more_ok_parts/

Zero-shot by default (docs/METHOD.md §4): image score = softmax(100 · f_img · T)[1], anomaly
map = sum of the stage maps. With ``--reference_dir`` (normal images of the same object, all of
them used) it is few-shot (docs/METHOD.md §5): the memory-bank term is added to the map, and
the image score is the per-image score 0.5 · (text + clip((max map − mu) / mu, 0, 1)), mu the map peak the references
reach against each other: it depends on the image alone, so a folder of one image and of 1,000
give it the same score. ``--image_score released`` normalises over the scored folder instead.

Outputs (``--save_path``, written as one set at the end): scores.csv (path,score[,anomalous]),
scores.json, heatmaps/*.png (image | overlay on one colour scale | [predicted mask] | colour
bar, at the image's resolution; each file named in scores.json), masks/*.png at the original
image size (map >= pixel threshold) and regions.csv (its connected regions: box, area, max and
mean score) when a threshold is known, report.html, config.json, run.json, log.txt.
Thresholds come from the thresholds.json that test.py writes (F1-max on that run's test set;
refused when fitted for another mode, model, size, stages or score), from --image_threshold /
--pixel_threshold, or from normal images alone: ``--calibration_dir DIR`` sets them so that at
most --target_fpr of DIR's images (and of their pixels) score at or above, and writes them to
thresholds.json for later runs. ``--onnx FILE`` scores with an
exported model; ``--resume`` continues an interrupted run (Ctrl-C or a kill), ``--restart``
discards it (a rerun into the same --save_path with neither is refused while one is there);
``torchrun --nproc_per_node N predict.py`` shards the folder.
"""
from __future__ import annotations

import sys

from utils.cli import config_json, parse_config, resolved, run_main

from engine.config import PredictConfig


def parse_args(argv: list[str] | None = None) -> PredictConfig:
    return parse_config(PredictConfig, argv, "predict.py", __doc__)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def body() -> None:
        from utils.allocator import keep_large_buffers

        keep_large_buffers()  # large CPU buffers stay in the process (utils/allocator.py)
        from engine.plumbing.preflight import check_checkpoint_file, check_onnx_file, check_pretrained

        check_onnx_file(cfg.onnx)  # a folder or a .pth given as the graph: named at once
        if not cfg.onnx:
            check_checkpoint_file(cfg.checkpoint_path, onnx_flag=True)
            check_pretrained(cfg.model, cfg.pretrained)  # offline mistakes fail before torch
        from utils.log import setup_logging

        from engine.plumbing import distributed
        from engine.plumbing.result_set import ResultSet
        from engine.predict import prediction

        prediction.settle_object_name(cfg)  # --onnx: the sidecar's object unless given
        dist = distributed.setup()  # one process, or a rank of torchrun
        config = resolved(cfg)
        with ResultSet(cfg.save_path, config, dist=dist, resume=cfg.resume,
                       restart=cfg.restart, fingerprint=prediction.fingerprint(config)) as results:
            log = setup_logging(results.dir if dist.main else None, quiet=not dist.main)
            try:
                job = prediction.prepare(cfg, log, results.dir, dist)  # files, model, bank
                prediction.run(job)  # this rank's images, streamed to disk
            except KeyboardInterrupt:  # one line: what is kept, how to continue
                raise prediction.interrupted(results.dir, cfg) from None
            if dist.all_ok(True) and dist.main:
                prediction.finish(job, config_json(cfg, device=str(job.scorer.device)))
                results.commit()  # the whole set moves into place
        distributed.teardown()

    return run_main(body, cfg.debug)


if __name__ == "__main__":
    sys.exit(main())
