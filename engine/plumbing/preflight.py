"""Checks that run before torch is imported (about 5 s here), so an offline mistake fails at once.

``check_pretrained`` stops a run whose ``--pretrained`` hub tag certainly cannot be loaded: the
hub is off (``HF_HUB_OFFLINE=1``) or unreachable, and no downloaded weights are in the caches.
When some weights are cached, the full check (``engine.core.loading.resolve_weights``) decides.
``check_checkpoint_file`` and ``check_onnx_file`` name the usual mix-ups of a weights path (a
folder, an ONNX graph given as a checkpoint, a checkpoint given as a graph). Standard library
only.
"""
from __future__ import annotations

import functools
import os
import re
import socket
from pathlib import Path

from errors import CheckpointError, ConfigError, ModelLoadError

NO_WEIGHTS = ("", "none", "random")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
HUB_HOST = "huggingface.co"


def is_file_argument(tag: str) -> bool:
    """Whether ``--pretrained`` names a file (a path or a weights suffix), not a hub tag."""
    return os.path.sep in tag or tag.endswith(WEIGHT_SUFFIXES)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds (cached)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cache_dirs() -> list[Path]:
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    return [Path(hub), Path("~/.cache/clip").expanduser()]


def any_cached_weights() -> bool:
    """Whether any weights file lies in the Hugging Face or OpenAI-CLIP caches."""
    for d in _cache_dirs():
        if d.is_dir() and any(p.suffix in WEIGHT_SUFFIXES for p in d.rglob("*")):
            return True
    return False


def offline_error(model: str, tag: str, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"cannot get the {tag!r} weights of {model!r}: {why}. Download them once on a "
        "connected machine and pass the file with --pretrained /path/file (or run the offline "
        "demo: bash scripts/demo.sh)")


def check_pretrained(model: str, pretrained: str | None) -> None:
    """Raise ModelLoadError now when a hub tag cannot be fetched and nothing is cached."""
    tag = (pretrained or "").strip()
    if tag.lower() in NO_WEIGHTS or is_file_argument(tag):
        return
    if not hub_offline() and hub_reachable():
        return
    if any_cached_weights():
        return
    why = ("HF_HUB_OFFLINE is set and no weights are in the cache" if hub_offline() else
           f"no weights are in the cache and {HUB_HOST} cannot be reached (offline?)")
    raise offline_error(model, tag, why)


def _natural(name: str) -> list:
    """Sort key putting epoch_2.pth before epoch_10.pth."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _listing(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    return sorted((p.name for p in folder.iterdir() if p.is_file()
                   and p.suffix.lower() in suffixes and not p.name.startswith(".")), key=_natural)


def _named(items: list[str], most: int = 8) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def check_checkpoint_file(path: str | os.PathLike | None, flag: str = "--checkpoint_path",
                          onnx_flag: bool = False) -> None:
    """CheckpointError naming ``flag`` when ``path`` is no checkpoint file: missing, a folder
    (its .pth files listed) or an exported ONNX graph (``onnx_flag``: this command takes it
    with --onnx). Nothing for ``None``; the file's content is checked when it is loaded. An
    empty ``flag`` names the path alone."""
    if not path:
        return
    p, who = Path(path).expanduser(), f"{flag} {path}".strip()
    if p.is_dir():
        found = _listing(p, (".pth",))
        raise CheckpointError(
            f"{who} is a folder, not a checkpoint file; "
            + (f"its .pth files: {_named(found)}: pass one, e.g. {p / found[-1]}"
               if found else "it holds no .pth file"))
    if p.suffix.lower() == ".onnx":
        raise CheckpointError(
            f"{who} is an ONNX graph (export.py), not a .pth checkpoint: "
            + (f"score with it by --onnx {path} in place of {flag}" if onnx_flag else
               f"score with it by predict.py --onnx {path}, or pass a .pth checkpoint"))
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {path}" + (f" ({flag})" if flag else ""))


def check_onnx_file(path: str | os.PathLike | None) -> None:
    """ConfigError when ``--onnx`` names a folder (its .onnx files listed) or a PyTorch
    checkpoint (which goes to --checkpoint_path)."""
    if not path:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        found = _listing(p, (".onnx",))
        raise ConfigError(f"--onnx {path} is a folder, not an ONNX file; "
                          + (f"its .onnx files: {_named(found)}: pass one" if found else
                             "it holds no .onnx file (export.py writes one)"))
    if p.suffix.lower() in WEIGHT_SUFFIXES:
        raise ConfigError(f"--onnx {path} is a PyTorch checkpoint, not an ONNX graph: pass it "
                          f"as --checkpoint_path {path} (with --object_name), or export a graph "
                          "with export.py")
