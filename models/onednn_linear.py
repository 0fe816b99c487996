"""oneDNN-packed linear layers for the frozen ViT backbone on the CPU (opt-in).

torch's fp32 ``nn.Linear`` on the CPU calls the BLAS it was built with (MKL in the pip wheels).
On some CPUs that BLAS leaves speed unused (MKL is reported not to take its AVX-512 kernels on
AMD processors), while oneDNN, also inside torch, picks its kernels from the CPU's instruction
set. :func:`pack_vit_linears` replaces every linear layer of a ViT's residual blocks -- the MLP's
``c_fc``/``c_proj`` and the attention's input and output projections -- by the same product
computed by oneDNN with its weight reordered once into oneDNN's blocked layout:

    y = x W^T + b        (x [..., C_in], W [C_out, C_in], b [C_out])

The attention keeps its formula, softmax(q k^T / sqrt(d)) v per head, through
``F.scaled_dot_product_attention``. Results differ from the BLAS path by float rounding only
(another summation order: ~1e-6 relative on the stage tokens). Packed layers take fp32 CPU
tensors; another dtype or device is an error, not a silent fallback. Which path is faster
depends on the CPU: ``scripts/benchmark_cpu_linear.py`` measures both on yours.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's packed linear operators."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight"))


def _check(x: torch.Tensor) -> None:
    if x.device.type != "cpu" or x.dtype != torch.float32:
        raise RuntimeError(f"oneDNN-packed linear layers take float32 CPU tensors, got "
                           f"{x.dtype} on {x.device}: use --cpu_linear blas for this run")


class PackedLinear(nn.Module):
    """``y = x W^T + b`` with W reordered once for oneDNN; x: [..., C_in] -> [..., C_out]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows: int | None = None):
        super().__init__()
        self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        # ``rows``: the expected number of input rows, a hint for the layout oneDNN picks
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(
            weight.detach().float().contiguous(), rows), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().float(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(x)
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias,
                                                  "none", [], "")


class PackedAttention(nn.Module):
    """Drop-in for a ViT block's ``nn.MultiheadAttention`` (self-attention, no weights out):
    q, k, v = split(x W_in^T + b_in); per head softmax(q k^T / sqrt(d) + mask) v; then the
    output projection. Same call signature; returns ``(out, None)``."""

    def __init__(self, mha: nn.MultiheadAttention, rows: int | None = None):
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
            raise ValueError("PackedAttention needs the packed q/k/v input projection")
        self.num_heads, self.batch_first = mha.num_heads, mha.batch_first
        self.in_proj = PackedLinear(mha.in_proj_weight, mha.in_proj_bias, rows)
        self.out_proj = PackedLinear(mha.out_proj.weight, mha.out_proj.bias, rows)

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=False,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if key is not None and key is not query or value is not None and value is not query:
            raise ValueError("PackedAttention does self-attention only")
        if need_weights or key_padding_mask is not None or is_causal:
            raise ValueError("PackedAttention returns no attention weights and takes no key "
                             "padding mask or causal flag (a ViT's blocks pass none of them)")
        x = query if self.batch_first else query.transpose(0, 1)  # [B, L, C]
        b, n, c = x.shape
        h = self.num_heads
        qkv = self.in_proj(x).view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)  # [3, B, h, L, d]
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, c))
        return (out if self.batch_first else out.transpose(0, 1)), None


def pack_vit_linears(visual: nn.Module, rows: int | None = None) -> int:
    """Replace the linear layers of every residual block of ``visual.transformer`` by their
    oneDNN-packed versions, in place; returns how many products were packed (0 for a model
    without ViT blocks, e.g. a ResNet, which is left as it is).

    Args:
        visual: an open_clip ``VisionTransformer`` (``clip.visual``), frozen.
        rows: the expected rows per call (tokens x batch), a layout hint; None lets oneDNN pick.
    """
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None:
        return 0
    n = 0
    for block in blocks:
        for name in ("c_fc", "c_proj"):
            layer = getattr(block.mlp, name, None)
            if isinstance(layer, nn.Linear):
                setattr(block.mlp, name, PackedLinear(layer.weight, layer.bias, rows))
                n += 1
        if isinstance(block.attn, nn.MultiheadAttention):
            block.attn = PackedAttention(block.attn, rows)
            n += 2
    return n
