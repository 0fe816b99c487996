"""APRIL-GAN: frozen CLIP + per-stage linear projections + text-prompt anomaly head.

One backbone pass serves the segmentation stages (``features_list``) and the few-shot
memory-bank stages (``few_shot_features``), which may differ.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .anomaly_maps import image_scores, stage_logits
from .backbone import ClipBackbone
from .projection import StageProjections


class AprilGAN(nn.Module):
    """Backbone (frozen) + ``projections`` (trainable).

    Args:
        backbone: a ``ClipBackbone`` exposing at least the stages of both lists.
        features_list: 1-based segmentation stages, in projection order.
        few_shot_features: 1-based memory-bank stages.
    """

    def __init__(self, backbone: ClipBackbone, features_list: Sequence[int],
                 few_shot_features: Sequence[int] = ()):
        super().__init__()
        self.backbone = backbone
        self.features_list = list(features_list)
        self.few_shot_features = list(few_shot_features)
        missing = set(self.features_list + self.few_shot_features) - set(backbone.stages)
        if missing:
            raise ValueError(f"backbone does not expose stages {sorted(missing)}")
        self.projections = StageProjections(
            [backbone.info[s].dim for s in self.features_list], backbone.embed_dim)

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Only the projections are trained; the backbone has requires_grad=False."""
        return list(self.projections.parameters())

    def encode(self, images: torch.Tensor) -> dict:
        """One backbone pass: ``patch_tokens`` {stage: [B, L, C]}, ``class_tokens``
        {stage: [B, C]} (ViT), ``image_embed`` [B, D]."""
        return self.backbone(images)

    def head(self, patch_tokens: dict[int, torch.Tensor], image_embed: torch.Tensor,
             text: torch.Tensor) -> dict:
        """Text-prompt head on backbone outputs (differentiable w.r.t. the projections).

        Args:
            patch_tokens: {stage: [B, L, C]}.
            image_embed: [B, D] normalised.
            text: [D, 2] (one category) or [B, D, 2] (per image).

        Returns:
            ``projected``: list of [B, L, D]; ``stage_logits``: list of [B, 2, h, h] in
            ``features_list`` order; ``image_score``: [B].
        """
        projected = self.projections([patch_tokens[s].float() for s in self.features_list])
        return {"projected": projected,
                "stage_logits": [stage_logits(p, text) for p in projected],
                "image_score": image_scores(image_embed.float(), text)}

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> dict:
        """``encode`` + ``head``; returns the union of both dicts."""
        out = self.encode(images)
        return {**out, **self.head(out["patch_tokens"], out["image_embed"], text)}
