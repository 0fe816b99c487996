"""Build an OpenCLIP model by name or model-config JSON, with weights from a hub tag or a file.

The positional grid is resized to the run image size when the weights are loaded (open_clip's
``resize_pos_embed`` with ``force_image_size``: bicubic, antialiased, align_corners=False), e.g.
ViT-L-14-336 at 518 px goes from a 24x24 to a 37x37 grid (SPEC §1).
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import open_clip
import torch
import torch.nn as nn

log = logging.getLogger(__name__)

NO_WEIGHTS = ("", "none", "random")


class ModelLoadError(RuntimeError):
    """The backbone could not be built or its weights could not be loaded (message says why)."""


def register_model_config(config_path: str | os.PathLike, model_name: str | None) -> str:
    """Register an open_clip model-config JSON; its file stem is the model name.

    Returns the model name (the stem; a different ``model_name`` only gets a warning). Raises
    ModelLoadError if the file is missing or not a model config.
    """
    path = Path(config_path)
    if not path.is_file():
        raise ModelLoadError(f"model config not found: {path}")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read model config {path}: {e}") from e
    if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "embed_dim" not in cfg:
        raise ModelLoadError(
            f"{path} is not an open_clip model config (needs 'embed_dim', 'vision_cfg', 'text_cfg')")
    if model_name and model_name != path.stem:
        log.warning(f"warning: --model {model_name!r} differs from the stem of --config_path "
                    f"{path.name}; the config wins and the model is built as {path.stem!r}")
    open_clip.add_model_config(path)
    return path.stem


def load_clip(model_name: str, pretrained: str | None, image_size: int,
              config_path: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Create an open_clip model at ``image_size`` and load its weights.

    Args:
        model_name: any open_clip model name (``ViT-L-14-336``) or the stem of ``config_path``.
        pretrained: a pretrained tag (``openai``; needs the hub or its cache), a local weights
            file (an open_clip/OpenAI state dict), or ``none`` for random weights (tests, demo).
        image_size: run size S; the positional embedding is resized to S // patch.
        config_path: optional model-config JSON registered before building.
        device: where to put the model.

    Returns:
        The CLIP model in eval mode (not yet frozen: see ``ClipBackbone``).
    """
    if config_path:
        model_name = register_model_config(config_path, model_name)
    if model_name not in open_clip.list_models():
        raise ModelLoadError(
            f"unknown model {model_name!r}: use an open_clip model name (e.g. ViT-L-14-336) or "
            "pass its config JSON with --config_path")
    tag = (pretrained or "").strip()
    kwargs = dict(force_image_size=image_size, device=device)
    try:
        with warnings.catch_warnings():
            # the released method uses the plain-GELU config with OpenAI weights (SPEC §1)
            warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")
            if tag.lower() in NO_WEIGHTS:
                model = open_clip.create_model(model_name, pretrained=None, **kwargs)
            elif os.path.sep in tag or tag.endswith((".pt", ".pth", ".bin", ".safetensors")):
                if not Path(tag).is_file():
                    raise ModelLoadError(f"weights file not found: {tag}")
                model = open_clip.create_model(model_name, pretrained=tag, **kwargs)
            else:
                model = open_clip.create_model(model_name, pretrained=tag, **kwargs)
    except ModelLoadError:
        raise
    except RuntimeError as e:
        msg = str(e)
        if "size mismatch" in msg or "Missing key" in msg or "Unexpected key" in msg:
            hint = ""
            if "attnpool.positional_embedding" in msg:
                hint = (" ResNet attention-pool grids are not resized by open_clip: use an image "
                        "size S with S // 32 equal to the checkpoint's grid.")
            raise ModelLoadError(
                f"weights {tag!r} do not fit model {model_name!r} at image size {image_size}."
                f"{hint} ({msg.splitlines()[0][:300]})") from e
        if "download" in msg.lower():
            raise ModelLoadError(
                f"cannot download the {tag!r} weights of {model_name!r} (offline?). Download them "
                "once on a connected machine and pass the file with --pretrained /path/file") from e
        raise ModelLoadError(f"cannot load {model_name!r} with weights {tag!r}: {msg[:300]}") from e
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot get weights {tag!r} for {model_name!r}: {str(e).splitlines()[0][:300]}. "
            "Offline? Download the weights once and pass the file with --pretrained /path/file") from e
    model.eval()
    return model


def tokenizer_for(model_name: str):
    """The open_clip tokenizer of ``model_name`` (call after ``load_clip``)."""
    return open_clip.get_tokenizer(model_name)
