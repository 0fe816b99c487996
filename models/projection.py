"""The trainable part of APRIL-GAN: one linear layer per stage into the joint embedding space.

Stage n's patch tokens [B, L, C_n] go through ``fc[i]`` (C_n -> D, with bias), where i is the
position of n in ``--features_list``. Checkpoints use the released format
``{'trainable_linearlayer': {'fc.0.weight', 'fc.0.bias', ..., 'fc.3.bias'}}``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

CHECKPOINT_KEY = "trainable_linearlayer"


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
        """Load a state dict (released key names) after ``check_state``."""
        self.check_state(state, source)
        self.load_state_dict(state)

    def check_state(self, state: dict, source: str = "checkpoint") -> None:
        """Check every tensor name and shape of a state dict against this model.

        Raises:
            ValueError: naming ``source`` and every missing, unexpected or mis-shaped tensor.
        """
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
            raise ValueError(
                f"{source} does not fit this model ({'; '.join(parts)}). Check --model, "
                "--features_list and --config_path against the run that wrote it")


def projection_state(ckpt: dict, source: str = "checkpoint") -> dict:
    """The projection weights of a released-format (or bare state-dict) checkpoint dict.

    Raises:
        ValueError: when ``ckpt`` holds no ``fc.i.*`` tensors.
    """
    state = ckpt.get(CHECKPOINT_KEY, ckpt)
    if not isinstance(state, dict) or not any(str(k).startswith("fc.") for k in state):
        raise ValueError(
            f"{source} has no projection weights (expected key '{CHECKPOINT_KEY}' with fc.i.*)")
    return {k: v for k, v in state.items() if str(k).startswith("fc.")}
