"""datasets.sets.indexing, unit by unit: the folder an index goes to (the words of its
refusals, an --out folder that exists or cannot be made) and the index's text."""
from __future__ import annotations

import json

import pytest

from datasets.sets.indexing import index_folder, prepare
from errors import DatasetError


def test_an_index_folder_in_an_installed_package_names_the_flag_or_the_root(tmp_path):
    root = tmp_path / "lib" / "site-packages" / "data"
    root.mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        index_folder(root)
    assert str(e.value).startswith(f"the dataset root {root} lies in an installed Python "
                                   "package (site-packages)")
    with pytest.raises(DatasetError) as e:
        index_folder(tmp_path, tmp_path / "x" / "dist-packages" / "index")
    assert str(e.value).startswith(f"--out {tmp_path / 'x' / 'dist-packages' / 'index'} lies "
                                   "in an installed Python package (dist-packages)")


def test_an_out_folder_that_exists_is_used_and_one_under_a_file_is_refused(tmp_path):
    out = tmp_path / "index"
    out.mkdir()
    (out / "kept.txt").write_text("x")
    assert index_folder(tmp_path / "data", out) == out and (out / "kept.txt").is_file()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DatasetError) as e:
        index_folder(tmp_path / "data", blocker / "index")
    assert str(e.value) == f"cannot make the --out folder {blocker / 'index'}: Not a directory"


def test_the_index_is_written_with_four_spaces_as_released(tmp_path):
    root = tmp_path / "data"
    for split, kind in (("train", "good"), ("test", "good")):
        (root / "bottle" / split / kind).mkdir(parents=True)
    from PIL import Image

    for split in ("train", "test"):
        Image.new("RGB", (4, 4)).save(root / "bottle" / split / "good" / "000.png")
    path = prepare("folder", root)
    text = path.read_text()
    assert text.startswith('{\n    "train": {\n        "bottle": [\n            {\n')
    assert text.endswith("}\n") and json.loads(text)["test"]["bottle"][0]["anomaly"] == 0
