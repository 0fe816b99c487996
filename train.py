r"""Train APRIL-GAN's per-stage linear projections on a labelled anomaly dataset
(the loss and settings: docs/METHOD.md §6).

    python train.py --dataset mvtec --train_data_path data/mvtec --save_path exps/mvtec \
        --features_list 6 12 18 24 --image_size 518 --batch_size 8 --aug_rate 0.2 --epoch 3
    python train.py ... --resume exps/mvtec/epoch_2.pth --epoch 3       # continue to 3 epochs
    python train.py ... --cache_features /scratch/feats                 # reuse backbone outputs

As released: the *test* split of every category is the training set, only the projections are
trained (Adam, lr 1e-3, betas (0.5, 0.999), no schedule, seed 111), the loss is the sum over
stages of focal + Dice on the upsampled probability maps (``losses``), and MVTec-layout data gets
the 2x2 mosaic augmentation with probability ``--aug_rate``. Shuffling and mosaics are drawn from
generators seeded by (seed, epoch), so ``--resume`` ends with the weights of an uninterrupted
run. ``--cache_features DIR`` keeps the frozen backbone's outputs for samples that are not
mosaic-augmented on disk (under a manifest that refuses other models, sizes, stages or data) and
reuses them in later epochs and runs, with the same weights. Outputs in ``--save_path``:
``epoch_N.pth`` (released format plus config, optimizer, epoch and RNG state; loadable with
``weights_only=True``), ``config.json`` and ``log.txt``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from utils.cli import parse_config, run_main

from engine.config import TrainConfig


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    return parse_config(TrainConfig, argv, "train.py", __doc__)


def train(cfg: TrainConfig) -> dict:
    """Run the training (see ``engine.training.train``); returns losses, counts, checkpoints.

    The run holds the lock of ``--save_path`` and writes ``run.json``; Ctrl-C ends it with one
    line naming the checkpoint to ``--resume`` from.
    """
    from engine.plumbing.preflight import check_checkpoint_file, check_pretrained

    check_checkpoint_file(cfg.init_checkpoint, "--init_checkpoint")  # a folder, an ONNX graph
    check_checkpoint_file(cfg.resume, "--resume")
    check_pretrained(cfg.model, cfg.pretrained)  # offline mistakes fail before torch loads
    from errors import Interrupted
    from utils.cli import resolved
    from utils.log import setup_logging

    from engine import training
    from engine.plumbing import distributed
    from engine.plumbing.result_set import ResultSet

    save = Path(cfg.save_path)
    dist = distributed.setup()  # one process, or a rank of torchrun (DDP)
    with ResultSet(save, resolved(cfg), staged=False, dist=dist) as run:  # lock, run.json
        try:
            out = training.train(cfg, setup_logging(save if dist.main else None,
                                                    quiet=not dist.main))
        except KeyboardInterrupt:
            done = sorted(save.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
            raise Interrupted(
                f"resume with --resume {done[-1]} --epoch {cfg.epoch}" if done else
                "no checkpoint was written yet; start again") from None
        run.commit({"checkpoints": out["checkpoints"]})
    distributed.teardown()
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def body() -> None:
        from utils.allocator import keep_large_buffers

        keep_large_buffers()  # large CPU buffers stay in the process (utils/allocator.py)
        train(cfg)

    return run_main(body, cfg.debug)


if __name__ == "__main__":
    sys.exit(main())
