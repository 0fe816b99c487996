r"""Compare prompt ensembles on one dataset in one run: every test image through the backbone
once for the whole study (docs/METHOD.md §3 for the ensemble).

    python prompt_study.py --dataset mvtec --data_path data/mvtec \
        --checkpoint_path exps/pretrained/mvtec_pretrained.pth \
        --variants my_prompts/short my_prompts/damaged --ablate states templates
    python prompt_study.py ... --mode few_shot --k_shot 4 --seed 1 --write_best chosen_prompts

The baseline (``--prompt_dir``, default the repository's prompts/) is always evaluated, named
``baseline``. ``--variants DIR ...`` adds prompt folders in the prompts/ format (each named by
its folder; its overrides.json applies); ``--ablate states`` adds one variant per normal or
abnormal state left out, ``--ablate templates`` one per template left out. Each variant's
metrics equal ``test.py --prompt_dir`` with that folder and the same flags. Outputs
(``--save_path``): study.json, study.csv, study.md (ranked by ``--rank_by``, with the change
against the baseline), report.html, config.json, log.txt; ``--write_best DIR`` writes the best
variant as a ready ``--prompt_dir`` folder. Choosing on the test set tunes on it: select on the
dataset the projections were trained on, then evaluate the chosen folder once on the other.
"""
from __future__ import annotations

import sys

from utils.cli import config_json, parse_config, resolved, run_main

from engine.config import StudyConfig


def parse_args(argv: list[str] | None = None) -> StudyConfig:
    return parse_config(StudyConfig, argv, "prompt_study.py", __doc__)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def body() -> None:
        from utils.allocator import keep_large_buffers

        keep_large_buffers()  # large CPU buffers stay in the process (utils/allocator.py)
        from engine.plumbing.preflight import check_checkpoint_file, check_pretrained

        check_checkpoint_file(cfg.checkpoint_path)  # a folder, an ONNX graph: named at once
        check_pretrained(cfg.model, cfg.pretrained)  # offline mistakes fail before torch loads
        from utils.log import setup_logging

        from engine.evaluate import prompt_study
        from engine.plumbing.result_set import ResultSet

        with ResultSet(cfg.save_path, resolved(cfg)) as results:  # lock; staged
            log = setup_logging(results.dir)
            study = prompt_study.prepare(cfg, log, results.dir)  # data, model, variants checked
            prompt_study.run(study)  # one backbone pass; every variant's metrics
            prompt_study.write(study, config_json(cfg, device=str(study.job.device)))
            results.commit()  # the whole set moves into place

    return run_main(body, cfg.debug)


if __name__ == "__main__":
    sys.exit(main())
