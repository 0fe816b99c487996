"""The trainable part of APRIL-GAN: one linear layer per stage into the joint embedding space.

Stage n's patch tokens [B, L, C_n] go through ``fc[i]`` (C_n -> D, with bias), where i is the
position of n in ``--features_list``. Checkpoints use the released format
``{'trainable_linearlayer': {'fc.0.weight', 'fc.0.bias', ..., 'fc.3.bias'}}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

CHECKPOINT_KEY = "trainable_linearlayer"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unsafe, or does not fit the model (message says which)."""


class StageProjections(nn.Module):
    """``fc[i] = Linear(stage_dims[i], embed_dim)`` for each selected stage, in list order.

    Args:
        stage_dims: token width of each selected stage (1024 for ViT-L; width*2**(n+1) for a
            ResNet's layer n).
        embed_dim: D, the joint image-text dimension.
    """

    def __init__(self, stage_dims: Sequence[int], embed_dim: int):
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(int(c), int(embed_dim)) for c in stage_dims])

    def forward(self, tokens: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """[B, L, C_i] per stage -> [B, L, D] per stage (not normalised)."""
        if len(tokens) != len(self.fc):
            raise ValueError(f"expected tokens of {len(self.fc)} stages, got {len(tokens)}")
        return [fc(t) for fc, t in zip(self.fc, tokens)]

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.state_dict().items()}

    def load_released(self, state: dict, source: str = "checkpoint") -> None:
        """Load a state dict (released key names) after checking every name and shape."""
        expected = self.expected_shapes()
        found = {k: tuple(v.shape) for k, v in state.items()}
        if found != expected:
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unexpected {extra}")
            if wrong:
                parts.append("shape " + ", ".join(
                    f"{k}: expected {list(expected[k])}, found {list(found[k])}" for k in wrong))
            raise CheckpointError(
                f"{source} does not fit this model ({'; '.join(parts)}). Check --model, "
                "--features_list and --config_path against the run that wrote it")
        self.load_state_dict(state)


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)`` with clear errors; returns the whole dict.

    A file holding pickled code (anything but tensors and plain containers) is refused
    without running it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"refused to load {path}: it holds pickled Python objects, not only tensors "
                "(loaded with weights_only=True, nothing was executed)") from e
        raise CheckpointError(f"cannot read checkpoint {path}: {text.splitlines()[0][:200]}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a checkpoint dict")
    return ckpt


def projection_state(ckpt: dict, source: str = "checkpoint") -> dict:
    """The projection weights of a released-format (or bare state-dict) checkpoint."""
    state = ckpt.get(CHECKPOINT_KEY, ckpt)
    if not isinstance(state, dict) or not any(str(k).startswith("fc.") for k in state):
        raise CheckpointError(
            f"{source} has no projection weights (expected key '{CHECKPOINT_KEY}' with fc.i.*)")
    return {k: v for k, v in state.items() if str(k).startswith("fc.")}


def load_projections(proj: StageProjections, path: str | Path) -> dict:
    """Load released-format projection weights from ``path`` into ``proj``; returns the dict."""
    ckpt = read_checkpoint(path)
    proj.load_released(projection_state(ckpt, str(path)), str(path))
    return ckpt
