"""utils.allocator: glibc's thresholds raised where glibc is, left alone on request."""
from __future__ import annotations

import ctypes

import pytest

from utils.allocator import keep_large_buffers


def test_thresholds_are_raised_on_glibc_and_left_alone_on_request(monkeypatch):
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018 - raises AttributeError without it
    except (OSError, AttributeError):
        pytest.skip("not glibc: nothing to change")
    calls = []
    real = ctypes.CDLL

    class Libc:
        def __init__(self, name):
            self.lib = real(name)

        def mallopt(self, param, value):
            calls.append((param, value))
            return self.lib.mallopt(param, value)

    monkeypatch.setattr(ctypes, "CDLL", Libc)
    assert keep_large_buffers() is True
    assert calls == [(-3, 1 << 30), (-1, 1 << 31)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    calls.clear()
    monkeypatch.setenv("APRILGAN_MALLOC", "default")
    assert keep_large_buffers() is False and calls == []
