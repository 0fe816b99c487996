"""Feature-store entry names: a file edited in place is never served from the store again.

The name of a sample's entry hashes its image and mask paths with their sizes and mtimes
(``datasets.feature_cache.sample_key``): touching nothing keeps it, editing the image or the
mask (even to the same size) or pointing at another file changes it.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from datasets.anomaly_dataset import Sample
from datasets.feature_cache import sample_key


def _write(path, value: int) -> None:
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def _bump_mtime(path, seconds: int = 5) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_the_key_follows_the_files(tmp_path):
    for name, value in (("a.png", 10), ("b.png", 20), ("m.png", 0)):
        _write(tmp_path / name, value)
    s = Sample("a.png", "m.png", "obj", "bad", 1)
    key = sample_key(tmp_path, s)
    assert sample_key(tmp_path, s) == key  # nothing changed: the same entry
    assert len(key) == 20 and all(c in "0123456789abcdef" for c in key)

    _write(tmp_path / "a.png", 99)  # the image edited in place, same size in bytes
    _bump_mtime(tmp_path / "a.png")
    edited = sample_key(tmp_path, s)
    assert edited != key

    _write(tmp_path / "m.png", 255)  # the mask edited
    _bump_mtime(tmp_path / "m.png")
    assert sample_key(tmp_path, s) not in (key, edited)

    other = Sample("b.png", "m.png", "obj", "bad", 1)  # another image, same mask
    assert sample_key(tmp_path, other) != sample_key(tmp_path, s)
    no_mask = Sample("a.png", "", "obj", "good", 0)  # a normal image has no mask
    assert sample_key(tmp_path, no_mask) != sample_key(tmp_path, s)
