"""Checks that run before torch is imported (about 5 s here), so an offline mistake fails at once.

``check_pretrained`` stops a run whose ``--pretrained`` hub tag certainly cannot be loaded: the
hub is off (``HF_HUB_OFFLINE=1``) or unreachable, and no downloaded weights are in the caches.
When some weights are cached, the full check (``engine.loading.resolve_weights``) decides.
Standard library only.
"""
from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

from errors import ModelLoadError

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
