"""Command-line pieces shared by train.py, test.py and predict.py.

Flags keep the released underscore names (``--data_path``); dashed aliases also work.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
import json
import logging
import random
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from datasets.errors import DatasetError, one_line
from models.clip_loader import ModelLoadError
from models.projection import CheckpointError

USER_ERRORS = (DatasetError, CheckpointError, ModelLoadError)


def flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, **kw) -> None:
    """Add ``--name`` plus its dashed alias ``--na-me`` when the name has underscores."""
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*names, dest=name, **kw)


@dataclass
class ModelConfig:
    """Settings of the flags added by ``add_model_args``; each script's config extends it."""

    model: str = "ViT-L-14-336"
    pretrained: str = "openai"
    config_path: str | None = None
    image_size: int = 518
    features_list: list = field(default_factory=lambda: [6, 12, 18, 24])
    device: str | None = None
    batch_size: int = 8
    num_workers: int | None = None


def add_model_args(p: argparse.ArgumentParser, features: bool = True) -> None:
    """The backbone flags of the released scripts (SPEC §9)."""
    g = p.add_argument_group("model")
    flag(g, "model", default="ViT-L-14-336",
         help="open_clip model name, or the stem of --config_path")
    flag(g, "pretrained", default="openai",
         help="pretrained tag (needs the hub or its cache), a local weights file, or 'none' for "
              "random weights")
    flag(g, "config_path", default=None,
         help="open_clip model-config JSON; its file stem is the model name")
    flag(g, "image_size", type=int, default=518, help="input size S")
    if features:
        flag(g, "features_list", type=int, nargs="+", default=[6, 12, 18, 24],
             help="1-based stages whose tokens are projected")
    flag(g, "device", default=None, help="cuda, cpu, ...")
    flag(g, "batch_size", type=int, default=8, help="images per backbone pass")
    flag(g, "num_workers", type=int, default=None,
         help="data-loading workers")


def resolve_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_workers(n: int | None, device: torch.device) -> int:
    return n if n is not None else (4 if device.type == "cuda" else 0)


def setup_seed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA), as the released scripts do."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def config_from_namespace(cls, ns: argparse.Namespace):
    """Build the script's config dataclass from parsed flags (unknown fields raise)."""
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(vars(ns)) - names
    if extra:
        raise TypeError(f"{cls.__name__} has no fields {sorted(extra)}")
    return cls(**vars(ns))


def config_json(cfg) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, default=str) + "\n"


def run_main(fn: Callable[[], int]) -> int:
    """Run a script body; bad input becomes one ``error:`` line and exit status 2."""
    try:
        return fn()
    except USER_ERRORS as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # DataLoader workers wrap our errors in RuntimeError
        msg = str(e)
        if any(t.__name__ in msg for t in USER_ERRORS):
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        raise


def setup_logging(save_path: Path | None = None) -> logging.Logger:
    """Console logging, plus ``<save_path>/log.txt`` when given."""
    log = logging.getLogger("aprilgan")
    log.setLevel(logging.INFO)
    for h in log.handlers:  # close the log.txt of an earlier run in this process
        h.close()
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%y-%m-%d %H:%M:%S")
    h = logging.StreamHandler(sys.stdout)
    h.setFormatter(fmt)
    log.addHandler(h)
    if save_path is not None:
        save_path.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(save_path / "log.txt")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    log.propagate = False
    return log
