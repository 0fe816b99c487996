r"""Evaluate APRIL-GAN zero-shot or few-shot on a dataset indexed by meta.json
(the formulas: docs/METHOD.md §4, §5, §7).

    python test.py --mode zero_shot --dataset visa --data_path data/visa \
        --checkpoint_path exps/pretrained/mvtec_pretrained.pth --save_path results/visa_0shot
    python test.py --mode few_shot --dataset mvtec --data_path data/mvtec \
        --checkpoint_path exps/pretrained/visa_pretrained.pth --k_shot 1 2 4 --seed 1 2 3 4 5 \
        --save_path results/mvtec_fewshot

Every test image goes through the backbone once, whatever the number of (k, seed) runs; every
distinct reference image once. Outputs (``--save_path``): metrics.json, metrics.md, metrics.csv,
thresholds.json, config.json, log.txt; few-shot: references.json; ``--save_predictions``:
predictions.npz; ``--visualize``: overlays/<category>/*.png. With several (k, seed) runs each
run writes into ``k{K}_seed{S}/`` and summary_k{K}.{md,csv} / summary.json hold mean ± std.
"""
from __future__ import annotations

import sys

from utils.cli import config_json, parse_config, resolved, run_main

from engine.config import EvalConfig


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    return parse_config(EvalConfig, argv, "test.py", __doc__)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def body() -> None:
        from utils.allocator import keep_large_buffers

        keep_large_buffers()  # large CPU buffers stay in the process (utils/allocator.py)
        from engine.plumbing.preflight import check_checkpoint_file, check_pretrained

        check_checkpoint_file(cfg.checkpoint_path)  # a folder, an ONNX graph: named at once
        check_pretrained(cfg.model, cfg.pretrained)  # offline mistakes fail before torch loads
        from utils.log import setup_logging

        from engine.evaluate import evaluation
        from engine.plumbing import distributed
        from engine.plumbing.result_set import ResultSet

        dist = distributed.setup()  # one process, or a rank of torchrun
        with ResultSet(cfg.save_path, resolved(cfg), dist=dist) as results:  # lock; staged
            log = setup_logging(results.dir if dist.main else None, quiet=not dist.main)
            job = evaluation.prepare(cfg, log, results.dir, dist)  # check, plan, build
            per_category = evaluation.run(job)  # one backbone pass (sharded), metrics
            if dist.main:
                evaluation.write(job, per_category, config_json(cfg, device=str(job.device)))
                results.commit({"timings": job.timings})  # the whole set moves into place
        distributed.teardown()

    return run_main(body, cfg.debug)


if __name__ == "__main__":
    sys.exit(main())
