"""Per-stage memory banks of normal reference tokens for few-shot APRIL-GAN (METHOD §5).

Bank of stage n = the raw stage-n patch tokens (no class token, no projection) of the k
reference images, stacked: [k * h * w, C_n]. Lifecycle: ``setup`` fills it, then
``distances`` queries it; reading it before ``setup`` raises. The banks are buffers, and the
category, k and the reference paths are the module's extra state, so ``state_dict()`` holds the
whole bank and ``MemoryBank(stages).load_state_dict(sd)`` restores it into a fresh module.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from .anomaly_maps import nearest_distance


class MemoryBank(nn.Module):
    """Memory banks of one category for the given stages.

    Args:
        stages: 1-based stage numbers (``--few_shot_features``).
        chunk: bank rows per matrix product in the nearest-neighbour search.
    """

    def __init__(self, stages: Sequence[int], chunk: int = 8192):
        super().__init__()
        self.stages = list(stages)
        self.chunk = chunk
        self.class_name: str | None = None
        self.references: list[str] = []
        self.k_shot = 0
        for s in self.stages:
            self.register_buffer(f"bank_{s}", torch.empty(0), persistent=True)
        self.register_load_state_dict_pre_hook(self._take_shapes)

    @property
    def is_set(self) -> bool:
        return self.class_name is not None

    def setup(self, class_name: str, patch_tokens: dict[int, torch.Tensor],
              references: Sequence[str]) -> "MemoryBank":
        """Fill the banks from reference tokens.

        Args:
            class_name: category the references belong to.
            patch_tokens: {stage: [k, L, C]} raw patch tokens of the k references.
            references: their image paths (recorded for the results).
        """
        for s in self.stages:
            t = patch_tokens[s]
            if t.shape[0] != len(references):
                raise ValueError(f"{t.shape[0]} token sets for {len(references)} references")
            setattr(self, f"bank_{s}", t.float().reshape(-1, t.shape[-1]))  # [k*L, C]
        self.class_name, self.references, self.k_shot = class_name, list(references), len(references)
        return self

    def bank(self, stage: int) -> torch.Tensor:
        """[k * L, C] raw reference tokens of ``stage``."""
        if not self.is_set:
            raise RuntimeError("memory bank read before setup(): build it from reference images first")
        return getattr(self, f"bank_{stage}")

    def distances(self, patch_tokens: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """Per stage [B, 1, h, h] = 1 - max cosine similarity to the bank (patch resolution)."""
        return [nearest_distance(patch_tokens[s], self.bank(s), self.chunk) for s in self.stages]

    # ---------------------------------------------------------------- state
    def get_extra_state(self) -> dict[str, Any]:
        return {"class_name": self.class_name, "references": list(self.references),
                "k_shot": self.k_shot, "stages": list(self.stages)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if list(state.get("stages", self.stages)) != self.stages:
            raise ValueError(f"memory bank of stages {state.get('stages')} loaded into one of "
                             f"stages {self.stages}")
        self.class_name = state.get("class_name")
        self.references = list(state.get("references", []))
        self.k_shot = int(state.get("k_shot", len(self.references)))

    def _take_shapes(self, module, state_dict, prefix, *args) -> None:
        """Before loading: give the (possibly empty) buffers the incoming shapes."""
        for s in self.stages:
            t = state_dict.get(f"{prefix}bank_{s}")
            if t is not None:
                setattr(self, f"bank_{s}", torch.empty_like(t, device=getattr(self, f"bank_{s}").device))
