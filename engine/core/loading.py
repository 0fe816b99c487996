"""Build the model from files: CLIP weights (hub tag or local file), projection checkpoints.

Every fault here is a user-facing error (``errors``): a missing or unreachable weights file, a
model config that is not one, a checkpoint that is not a checkpoint, holds pickled code, is cut
short, has non-finite weights or does not fit the model. The positional grid is resized to the
run size when the weights load (open_clip's ``force_image_size``: bicubic, antialiased,
align_corners=False), e.g. ViT-L-14-336 at 518 px goes from 24x24 to 37x37 (METHOD §1).
"""
from __future__ import annotations

import functools
import logging
import math
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import open_clip
import torch
import torch.nn as nn

from errors import CheckpointError, ConfigError, ModelLoadError, NonFiniteError
from models.april_gan import AprilGAN
from models.backbone import ClipBackbone, attnpool_grid, encoder_kind, num_stages, resnet_grid, resolve_stages
from models.projection import StageProjections, projection_state
from utils.io import read_json

from engine.plumbing import preflight
from engine.plumbing.preflight import HUB_HOST, NO_WEIGHTS, check_checkpoint_file, is_file_argument, offline_error

log = logging.getLogger("aprilgan")

# settings a checkpoint written by train.py remembers (METHOD §6 extra keys), checked on load
REMEMBERED = ("model", "image_size", "features_list")


def resolve_device(name: str | None) -> torch.device:
    """``--device`` as a torch device; None picks CUDA when available, else the CPU. ConfigError
    for an unknown device name or a CUDA device this machine does not have."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"--device {name!r} is not a device name (use cpu, cuda or cuda:N)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: this machine has no usable CUDA GPU "
                              "(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise ConfigError(f"--device {name}: unsupported device type {dev.type!r}")
    return dev


def register_model_config(config_path: str | os.PathLike, model_name: str | None) -> str:
    """Register an open_clip model-config JSON; its file stem is the model name.

    Returns the model name (the stem; a different ``model_name`` only gets a warning).
    """
    path = Path(config_path)
    cfg = read_json(path, "model config", error=ModelLoadError)
    if "vision_cfg" not in cfg or "embed_dim" not in cfg:
        raise ModelLoadError(
            f"{path} is not an open_clip model config (needs 'embed_dim', 'vision_cfg', 'text_cfg')")
    if model_name and model_name != path.stem:
        log.warning(f"warning: --model {model_name!r} differs from the stem of --config_path "
                    f"{path.name}; the config wins and the model is built as {path.stem!r}")
    open_clip.add_model_config(path)
    return path.stem


def cached_weights(model_name: str, tag: str) -> str | None:
    """The local file of a pretrained tag when it is already downloaded, else None.

    Looks where open_clip would: the Hugging Face cache for ``hf_hub`` entries (the
    .safetensors variant first), ``~/.cache/clip`` for URL entries.
    """
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors",
                                              "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url", "")
    if url:
        local = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


def resolve_weights(model_name: str, tag: str) -> str | None:
    """A pretrained tag as a local file when cached; None when it must be downloaded.

    Offline first: when the tag is not cached and ``HF_HUB_OFFLINE=1`` is set, or the hub host
    cannot be reached within a few seconds, raise ModelLoadError at once (no retry storm).
    """
    if not open_clip.get_pretrained_cfg(model_name, tag):
        known = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise ModelLoadError(f"--pretrained {tag!r} is not a pretrained tag of {model_name!r} "
                             f"(known: {known}); or pass a local weights file, or 'none'")
    local = cached_weights(model_name, tag)
    if local:
        return local
    if preflight.hub_offline():
        raise offline_error(model_name, tag, "HF_HUB_OFFLINE is set and they are not in the cache")
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    host = HUB_HOST if cfg.get("hf_hub") else (cfg.get("url", "").split("/") + ["", ""])[2]
    if host and not preflight.hub_reachable(host):
        raise offline_error(model_name, tag, f"they are not in the cache and {host} cannot be "
                                             "reached (offline?)")
    return None


def load_clip(model_name: str, pretrained: str | None, image_size: int,
              config_path: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Create an open_clip model at ``image_size`` and load its weights.

    Args:
        model_name: any open_clip model name (``ViT-L-14-336``) or the stem of ``config_path``.
        pretrained: a pretrained tag (``openai``; the cache, else the hub), a local weights
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
    source = tag
    if tag.lower() in NO_WEIGHTS:
        source = None
    elif is_file_argument(tag):
        if not Path(tag).is_file():
            raise ModelLoadError(f"weights file not found: {tag}")
    else:
        source = resolve_weights(model_name, tag) or tag
    try:
        with warnings.catch_warnings():
            # the released method uses the plain-GELU config with OpenAI weights (METHOD §1)
            warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")
            model = open_clip.create_model(model_name, pretrained=source, **kwargs)
    except RuntimeError as e:
        msg = str(e)
        if "size mismatch" in msg or "Missing key" in msg or "Unexpected key" in msg:
            hint = ""
            if "attnpool.positional_embedding" in msg:
                hint = " " + attnpool_hint(msg, image_size)
            raise ModelLoadError(
                f"weights {tag!r} do not fit model {model_name!r} at image size {image_size}."
                f"{hint} ({msg.splitlines()[0][:300]})") from e
        if source == tag and "download" in msg.lower():
            raise offline_error(model_name, tag, "the download failed") from e
        raise ModelLoadError(f"cannot load {model_name!r} with weights {tag!r}: {msg[:300]}") from e
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot load weights {tag!r} for {model_name!r}: {str(e).splitlines()[0][:300]}. "
            "Pass a valid open_clip/OpenAI weights file with --pretrained /path/file") from e
    model.eval()
    return model


def tokenizer_for(model_name: str):
    """The open_clip tokenizer of ``model_name`` (call after ``load_clip``), built once per name
    and text settings (it reads the whole BPE vocabulary; another config's settings get theirs)."""
    text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
    return _tokenizer(model_name, repr(sorted(text_cfg.items())))


_tokenizer = functools.lru_cache(maxsize=8)(lambda name, text_cfg: open_clip.get_tokenizer(name))


def attnpool_hint(msg: str, image_size: int) -> str:
    """Why ResNet weights do not load at ``image_size``, with both grids and the sizes that fit.

    open_clip builds a ResNet's attention pool for a grid of S // 32 cells and never resizes the
    weights' positional embedding ([G*G + 1, C]), so the weights load only when S // 32 == G.
    """
    shapes = re.findall(r"torch\.Size\(\[(\d+), \d+\]\)", msg)
    if len(shapes) < 2:
        return ("ResNet attention-pool grids are not resized by open_clip: use an image size S "
                "with S // 32 equal to the weights' grid.")
    grid = math.isqrt(int(shapes[0]) - 1)
    return (f"The weights' attention pool has a {grid}x{grid} grid, made for image sizes "
            f"{fitting_sizes(grid)}; --image_size {image_size} builds one of {image_size // 32}x"
            f"{image_size // 32} (S // 32) and open_clip does not resize it: use an image size "
            f"from {fitting_sizes(grid)}.")


def fitting_sizes(grid: int) -> str:
    """The image sizes S at which a ResNet attention pool of ``grid`` x ``grid`` runs:
    S // 32 == grid and layer4's grid ``resnet_grid(S, 4)`` == grid, i.e. 32 G ... 32 G + 30."""
    ok = [s for s in range(32 * grid, 32 * grid + 32) if resnet_grid(s, 4) == grid]
    return f"{ok[0]} to {ok[-1]}"


# --------------------------------------------------------------------------- checkpoints
def read_checkpoint(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)`` with a clear error for every kind of bad file.

    A file holding pickled code (anything but tensors and plain containers) is refused without
    running it; an empty, truncated or foreign file says what it is.
    """
    path = Path(path)
    check_checkpoint_file(path, "")  # missing, a folder, an ONNX graph
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint; was its writing cut short?")
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it starts with {head!r}, "
                              "neither a torch zip archive nor a pickle)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"refused to load {path}: it holds pickled Python objects, not only tensors "
                "(loaded with weights_only=True, nothing was executed)") from e
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated or corrupt "
                              f"({text.splitlines()[0][:160] if text else type(e).__name__})") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a checkpoint dict (it holds a {type(ckpt).__name__})")
    return ckpt


def checkpoint_weights(ckpt: dict, path: str | Path, proj: StageProjections) -> dict:
    """The projection tensors of a checkpoint dict, checked: present, fitting, finite."""
    try:
        state = projection_state(ckpt, str(path))
        proj.check_state(state, str(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteError(f"{path} holds non-finite (NaN or infinite) weights in "
                             f"{', '.join(sorted(bad))}: it cannot be used; train again or take "
                             "an earlier checkpoint")
    return state


def warn_settings_differ(ckpt: dict, path: str | Path, settings: dict) -> None:
    """Warn, with both values, when a checkpoint was trained with other remembered settings."""
    saved = ckpt.get("trained_with") or ckpt.get("config") or {}
    if not isinstance(saved, dict):
        return
    for key in REMEMBERED:
        if key in saved and key in settings and saved[key] != settings[key]:
            log.warning(f"warning: {path} was trained with --{key} {saved[key]!r}, this run uses "
                        f"{settings[key]!r}; results may be meaningless")


def load_projections(proj: StageProjections, path: str | Path, settings: dict | None = None) -> dict:
    """Load released-format projection weights from ``path`` into ``proj``; returns the dict."""
    ckpt = read_checkpoint(path)
    proj.load_state_dict(checkpoint_weights(ckpt, path, proj))
    if settings:
        warn_settings_differ(ckpt, path, settings)
    return ckpt


def trained_with(cfg) -> dict:
    """The settings a checkpoint remembers (an extra key METHOD §6 allows)."""
    name = Path(cfg.config_path).stem if cfg.config_path else cfg.model
    return {"model": name, "image_size": int(cfg.image_size),
            "features_list": [int(s) for s in cfg.features_list]}


# --------------------------------------------------------------------------- the model
def check_image_size(visual: nn.Module, image_size: int, model_name: str) -> None:
    """ConfigError when the model cannot run at S.

    ViT: the patch size must divide S. ResNet: layer4's token grid at S (``resnet_grid``) must
    be the grid the attention pool was built for (its positional embedding); any such S works,
    a multiple of 32 or not (e.g. 80 or 88 for weights made at 64 px).
    """
    if encoder_kind(visual) == "resnet":
        grid, pool = resnet_grid(image_size, 4), attnpool_grid(visual)
        if grid != pool:
            raise ConfigError(
                f"--image_size {image_size} gives layer4 of {model_name!r} a {grid}x{grid} grid, "
                f"but its attention pool has a {pool}x{pool} grid: use an image size from "
                f"{fitting_sizes(pool)}")
        return
    patch = visual.patch_size
    step = int(patch[0] if isinstance(patch, tuple) else patch)
    if image_size % step:
        lo, hi = image_size // step * step, (image_size // step + 1) * step
        raise ConfigError(f"--image_size {image_size} is not a multiple of the patch size {step} "
                          f"of {model_name!r}: use {lo or hi} or {hi}")


def build_model(model_name: str, pretrained: str | None, image_size: int,
                features_list: Sequence[int], few_shot_features: Sequence[int] = (),
                config_path: str | None = None, device: str | torch.device = "cpu"):
    """Create the CLIP backbone and the (randomly initialised) projections.

    The backbone runs under fp16 autocast on CUDA; the environment variable
    ``APRILGAN_AUTOCAST=1`` (or ``0``) forces it on (or off) on any device, so the
    mixed-precision path can be tested on a CPU.

    Returns:
        (model, tokenizer): ``AprilGAN`` on ``device`` and the model's text tokenizer.
    """
    clip = load_clip(model_name, pretrained, image_size, config_path, device)
    if config_path:
        model_name = Path(config_path).stem
    check_image_size(clip.visual, image_size, model_name)
    total = num_stages(clip.visual)
    try:
        feats = resolve_stages(features_list, total)
    except ValueError as e:  # a user error: report it as one line, not a traceback
        raise ConfigError(f"--features_list {list(features_list)}: {e}") from e
    try:
        fs = resolve_stages(few_shot_features, total) if few_shot_features else []
    except ValueError as e:
        raise ConfigError(f"--few_shot_features {list(few_shot_features)}: {e}") from e
    backbone = ClipBackbone(clip, feats + fs, image_size)
    force = os.environ.get("APRILGAN_AUTOCAST", "").strip().lower()
    if force in ("1", "0", "on", "off", "true", "false"):  # fp16 autocast forced on or off
        backbone.autocast = force in ("1", "on", "true")
    model = AprilGAN(backbone, feats, fs).to(device)
    return model, tokenizer_for(model_name)


def scoring_model(cfg, device: torch.device, few: bool, precision: str | None = None,
                  cpu_linear: str | None = None):
    """The one model of test.py, predict.py, serve.py and export.py: ``build_model`` from the
    flags (memory stages only when ``few``), the projections of ``--checkpoint_path`` (checked
    against ``trained_with``), ``--precision`` and ``--cpu_linear`` (the arguments, else the
    flags, else fp32 and blas), in eval mode. Returns (model, tokenizer)."""
    model, tokenizer = build_model(cfg.model, cfg.pretrained, cfg.image_size, cfg.features_list,
                                   cfg.few_shot_features if few else (), cfg.config_path, device)
    load_projections(model.projections, cfg.checkpoint_path, trained_with(cfg))
    set_precision(model, precision or getattr(cfg, "precision", "fp32"))
    set_cpu_linear(model, cpu_linear or getattr(cfg, "cpu_linear", "blas"), device,
                   getattr(cfg, "batch_size", 1))
    return model.eval(), tokenizer


def set_precision(model, precision: str) -> None:
    """``--precision`` of the torch path: ``auto`` keeps the released behaviour (fp16 autocast
    on CUDA, fp32 on the CPU); ``fp32`` never autocasts; ``bf16`` runs the backbone under bf16
    autocast on any device. The projections, maps and scores stay fp32 in every case."""
    if precision == "fp32":
        model.backbone.autocast = False
    elif precision == "bf16":
        model.backbone.autocast, model.backbone.autocast_dtype = True, torch.bfloat16


def set_cpu_linear(model, kind: str, device: torch.device, batch: int = 1) -> int:
    """``--cpu_linear``: ``blas`` keeps torch's linear layers; ``onednn`` packs the ViT
    blocks' linear layers for oneDNN (``models.onednn_linear``; float rounding apart, the same
    numbers). Returns the number of packed products (0 for ``blas``).

    Raises:
        ConfigError: ``onednn`` off the CPU, under reduced precision, without oneDNN in this
            torch build, or for a backbone without ViT blocks.
    """
    if kind == "blas":
        return 0
    from models.onednn_linear import onednn_available, pack_vit_linears

    if device.type != "cpu":
        raise ConfigError(f"--cpu_linear onednn runs on the CPU; this run's device is {device}")
    if model.backbone.autocast:
        raise ConfigError("--cpu_linear onednn needs the fp32 backbone: drop --precision bf16 "
                          "(or APRILGAN_AUTOCAST)")
    if not onednn_available():
        raise ConfigError("--cpu_linear onednn: this torch build has no oneDNN linear operators")
    if model.backbone.kind != "vit":
        raise ConfigError(f"--cpu_linear onednn applies to ViT backbones; this one is a "
                          f"{model.backbone.kind}")
    grid = next(iter(model.backbone.info.values())).grid
    n = pack_vit_linears(model.backbone.clip.visual, rows=batch * (grid ** 2 + 1))
    if n == 0:
        raise ConfigError("--cpu_linear onednn found no open_clip transformer blocks with "
                          "linear layers in this backbone")
    return n
