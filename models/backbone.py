"""Frozen OpenCLIP backbone that yields per-stage tokens and the image embedding in one pass.

APRIL-GAN (Chen et al., "A Zero-/Few-Shot Anomaly Classification and Segmentation Method for
CVPR 2023 VAND Workshop Challenge Tracks 1&2", 2023), §2.1: the segmentation head reads the raw
residual-stream output of a few intermediate stages of the CLIP image encoder.

* ViT encoders: stage n (1-based) is the output of transformer block n, before any LayerNorm or
  projection, [B, 1 + H*W, width]; it is returned as its patch tokens [B, H*W, width] and its
  class token [B, width] (the class token never enters the projections or the memory banks).
* ModifiedResNet encoders: stage n (1..4) is the output of ``layer{n}``, [B, C, H, W] read row-major
  as tokens [B, H*W, C] (no class token); C = width * 2**(n+1).

The image embedding is ``ln_post(cls) @ proj`` (ViT) or the attention-pool output (ResNet),
L2-normalised. The backbone is frozen: no gradients and always eval mode (so a ResNet's BatchNorm
uses its running statistics and a score never depends on what else is in the batch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer


@dataclass(frozen=True)
class StageInfo:
    """Geometry of one selected stage: 1-based index, token width, square grid side."""

    stage: int
    dim: int
    grid: int


def encoder_kind(visual: nn.Module) -> str:
    """Return ``"vit"`` or ``"resnet"`` from the module's structure (never from the model name)."""
    if isinstance(visual, VisionTransformer):
        return "vit"
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    raise ValueError(
        f"unsupported image encoder {type(visual).__name__}: only open_clip VisionTransformer "
        "and ModifiedResNet towers expose the stages this method needs")


def resnet_grid(image_size: int, stage: int) -> int:
    """Side of the square token grid of ResNet stage ``stage`` (1-based, 1..4) at input side S.

    The stem's stride-2 convolution (kernel 3, padding 1) gives ceil(S / 2), its 2x2 average
    pool halves that (floor), and layers 2..4 halve it again each (floor):
    ``grid(S, n) = floor(ceil(S / 2) / 2 ** n)``; e.g. S = 80 gives 20, 10, 5, 2.
    """
    return ((int(image_size) + 1) // 2) // 2 ** int(stage)


def attnpool_grid(visual: nn.Module) -> int:
    """Side of the grid a ResNet's attention pool was built for (its positional embedding)."""
    return math.isqrt(int(visual.attnpool.positional_embedding.shape[0]) - 1)


def num_stages(visual: nn.Module) -> int:
    """Number of selectable stages: transformer blocks (ViT) or residual layers (ResNet, 4)."""
    return len(visual.transformer.resblocks) if encoder_kind(visual) == "vit" else 4


def resolve_stages(stages: Sequence[int] | int, total: int) -> list[int]:
    """Validate 1-based stage numbers (negative counts from the end; an int n = the last n).

    Example: ``resolve_stages([6, 12, 18, 24], 24) -> [6, 12, 18, 24]``,
    ``resolve_stages(2, 24) -> [23, 24]``, ``resolve_stages([-1], 8) -> [8]``.
    """
    if isinstance(stages, int):
        if not 1 <= stages <= total:
            raise ValueError(f"cannot take the last {stages} stages of an encoder with {total}")
        return list(range(total - stages + 1, total + 1))
    out = []
    for s in stages:
        s = int(s)
        n = s + total + 1 if s < 0 else s
        if not 1 <= n <= total:
            raise ValueError(
                f"stage {s} is out of range: this encoder has stages 1..{total} (1-based)")
        out.append(n)
    if not out:
        raise ValueError("at least one stage is required")
    return out


class ClipBackbone(nn.Module):
    """Frozen CLIP image/text encoder exposing stage tokens for a fixed set of stages.

    Args:
        clip: an open_clip ``CLIP``/``CustomTextCLIP`` model (weights already loaded).
        stages: 1-based stage numbers to expose; the union of the segmentation stages and
            the few-shot memory-bank stages, so one pass serves both.
        image_size: input side S in pixels.
    """

    def __init__(self, clip: nn.Module, stages: Sequence[int], image_size: int):
        super().__init__()
        self.clip = clip
        self.kind = encoder_kind(clip.visual)
        self.stages = sorted(set(resolve_stages(stages, num_stages(clip.visual))))
        self.image_size = int(image_size)
        self.embed_dim = int(clip.visual.output_dim)
        self.autocast: bool | None = None  # None: fp16 autocast on CUDA only
        self.autocast_dtype = torch.float16  # torch.bfloat16 for --precision bf16
        self.clip.requires_grad_(False)
        self.clip.eval()
        self.info = {s: self._stage_info(s) for s in self.stages}

    def train(self, mode: bool = True) -> "ClipBackbone":
        """The backbone stays in eval mode whatever the caller asks (frozen BatchNorm/dropout)."""
        return super().train(False)

    def _stage_info(self, stage: int) -> StageInfo:
        v = self.clip.visual
        if self.kind == "vit":
            patch = v.patch_size[0] if isinstance(v.patch_size, tuple) else v.patch_size
            return StageInfo(stage, int(v.transformer.width), self.image_size // int(patch))
        layer = getattr(v, f"layer{stage}")
        dim = int(layer[-1].bn3.num_features)
        return StageInfo(stage, dim, resnet_grid(self.image_size, stage))

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, object]:
        """One backbone pass.

        Args:
            images: [B, 3, S, S] normalised images.

        Returns:
            dict with
            ``patch_tokens``: {stage: [B, H*W, C]} raw stage outputs without the class token;
            ``class_tokens``: {stage: [B, C]} the class token of each stage (ViT; empty for a
            ResNet, which has none);
            ``image_embed``: [B, D] L2-normalised image embedding.
        """
        with torch.autocast(images.device.type, dtype=self.autocast_dtype,
                            enabled=self.use_autocast(images)):
            return self._forward(self.clip.visual, images)

    def use_autocast(self, images: torch.Tensor) -> bool:
        """fp16 autocast on CUDA (METHOD §1), unless ``self.autocast`` forces it on or off."""
        return images.is_cuda if self.autocast is None else bool(self.autocast)

    def _forward(self, v: nn.Module, images: torch.Tensor) -> dict[str, object]:
        class_tokens: dict[int, torch.Tensor] = {}
        if self.kind == "vit":
            out = v.forward_intermediates(
                images, indices=[s - 1 for s in self.stages], output_fmt="NLC",
                output_extra_tokens=True)
            # intermediates [B, HW, C]; prefix (class) tokens [B, 1, C]
            patch_tokens = dict(zip(self.stages, out["image_intermediates"]))
            class_tokens = {s: cls[:, 0] for s, cls in
                            zip(self.stages, out["image_intermediates_prefix"])}
        else:
            # layer4 is always taken so the attention pool sees the full network
            # (open_clip truncates the blocks at the last requested index).
            taken = sorted(set(self.stages) | {4})
            out = v.forward_intermediates(images, indices=taken)
            feats = dict(zip(taken, out["image_intermediates"]))
            # [B, C, H, W] -> [B, H*W, C], row-major over H then W
            patch_tokens = {s: feats[s].flatten(2).transpose(1, 2) for s in self.stages}
        image_embed = F.normalize(out["image_features"].float(), dim=-1)
        return {"patch_tokens": patch_tokens, "class_tokens": class_tokens,
                "image_embed": image_embed}

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[P, context_length] token ids -> [P, D] text embeddings (not normalised)."""
        return self.clip.encode_text(tokens)
