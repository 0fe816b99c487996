"""Where ``python -m datasets.prepare`` writes the index (issue: a set installed from pip).

The index goes beside the data only where the user may write and the folder is no installed
package (``site-packages``); otherwise ``--out DIR`` names its folder and nothing is written
under the data. An index written elsewhere must lead the later commands to the same files as
the index written beside the data, which is the independent reference here.

Tests run as root, where ``chmod`` does not stop a write: the read-only case is tested with
``os.access`` answering no for the data folder (monkeypatched), and with a real ``chmod`` where
the tests do not run as root.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import VIT, run_test_main
from PIL import Image

from datasets.anomaly_dataset import make_samples
from datasets.prepare import main as prepare_main
from datasets.sets.indexing import prepare
from errors import DatasetError
from tools.synthetic.raw_sets import RAW_SETS

README = Path(__file__).parents[1] / "README.md"


def _tree(root: Path) -> dict:
    """Every file under ``root`` with its size and mtime: what a write would change."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _records(meta: dict) -> list[tuple]:
    return [(split, c, i, r) for split in ("train", "test") for c, rows in meta[split].items()
            for i, r in enumerate(rows)]


def _refuse_writes_into(monkeypatch, folder: Path) -> None:
    """``os.access`` says no for ``folder`` (what it says for a read-only folder of a user)."""
    real, target = os.access, folder.resolve()

    def access(path, mode, *a, **kw):
        if Path(path).resolve() == target and mode & os.W_OK:
            return False
        return real(path, mode, *a, **kw)
    monkeypatch.setattr(os, "access", access)


def test_a_read_only_root_is_refused_naming_out(tmp_path, monkeypatch, capsys):
    data = tmp_path / "elpv"
    RAW_SETS["elpv"](data)
    before = _tree(data)
    _refuse_writes_into(monkeypatch, data)
    with pytest.raises(DatasetError, match="not writable") as err:
        prepare("elpv", data)
    assert "--out DIR" in str(err.value) and "--data_path" in str(err.value)
    assert prepare_main(["elpv", str(data)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--out" in lines[0]
    assert _tree(data) == before  # nothing written
    assert prepare_main(["elpv", str(data), "--out", str(tmp_path / "index")]) == 0
    assert (tmp_path / "index" / "meta.json").is_file() and _tree(data) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes through chmod; the os.access test above covers it")
def test_a_chmod_read_only_root_is_refused(tmp_path):
    data = tmp_path / "elpv"
    RAW_SETS["elpv"](data)
    data.chmod(0o555)
    try:
        with pytest.raises(DatasetError, match="not writable.*--out"):
            prepare("elpv", data)
        prepare("elpv", data, out=tmp_path / "index")
    finally:
        data.chmod(0o755)
    assert not (data / "meta.json").exists()


def test_a_root_in_site_packages_is_refused_though_writable(tmp_path, capsys):
    """A pip-installed data folder is writable in a virtual environment, and still not the
    user's: the index is not written there, the message names --out."""
    data = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "elpv_dataset" / "data"
    RAW_SETS["elpv"](data)
    before = _tree(data.parents[1])
    assert os.access(data, os.W_OK)
    assert prepare_main(["elpv", str(data)]) == 2
    err = capsys.readouterr().err
    assert "site-packages" in err and "--out DIR" in err
    assert prepare_main(["elpv", str(data), "--out", str(data / "index")]) == 2  # nor below it
    assert _tree(data.parents[1]) == before
    assert prepare_main(["elpv", str(data), "--out", str(tmp_path / "elpv")]) == 0
    out = capsys.readouterr().out
    assert f"pass --data_path {tmp_path / 'elpv'}" in out
    assert _tree(data.parents[1]) == before


@pytest.mark.parametrize("name", ["elpv", "kvasir", "mvtec_loco", "btad"])
def test_an_index_elsewhere_leads_to_the_same_files(tmp_path, monkeypatch, name):
    """Two copies of one raw release: the index beside copy A (the reference) and the index of
    copy B written into another folder, B read-only. Record by record the same labels, and the
    paths lead to the same files: B's data where A's index points into A's data, the index
    folder's own copy of a mask the builder made (Kvasir's binarised, LOCO's merged masks)
    where A's points to the one made beside A."""
    a, b, home = tmp_path / "a", tmp_path / "b" / name, tmp_path / "index" / name
    RAW_SETS[name](a)
    RAW_SETS[name](b)
    prepare(name, a)
    before = _tree(b)
    _refuse_writes_into(monkeypatch, b)
    prepare(name, b, out=home)
    assert _tree(b) == before  # the data was only read: no index, no made mask
    ref = json.loads((a / "meta.json").read_text())
    got = json.loads((home / "meta.json").read_text())
    assert ref.get("labels") == got.get("labels") and ref["dataset"] == got["dataset"] == name
    made = 0
    for (split, c, i, r), (split2, c2, i2, g) in zip(_records(ref), _records(got), strict=True):
        assert (split, c, i) == (split2, c2, i2)
        assert {k: r[k] for k in ("cls_name", "specie_name", "anomaly")} == \
            {k: g[k] for k in ("cls_name", "specie_name", "anomaly")}
        for key in ("img_path", "mask_path"):
            if not r[key]:
                assert not g[key]
                continue
            target = (home / g[key]).resolve()
            in_data = (a / r[key]).resolve()
            if (b / r[key]).is_file():  # the data: B's file, by its absolute path
                assert Path(g[key]).is_absolute() and target == (b / r[key]).resolve()
            else:  # a file the builder made: in the index folder, relative to it
                made += 1
                assert g[key] == r[key] and target == (home / r[key]).resolve()
                np.testing.assert_array_equal(np.asarray(Image.open(target)),
                                              np.asarray(Image.open(in_data)))
    assert made == {"kvasir": 3, "mvtec_loco": 2}.get(name, 0)
    samples = make_samples(home, "test")
    assert sum(len(v) for v in samples.values()) == sum(len(v) for v in ref["test"].values())


def test_test_py_runs_on_an_index_written_elsewhere(tmp_path, monkeypatch):
    """test.py --data_path DIR on an index of a read-only copy gives the metrics of the same
    run on the index written beside the data."""
    a, b = tmp_path / "a", tmp_path / "site-packages" / "b"
    RAW_SETS["elpv"](a)
    RAW_SETS["elpv"](b)
    prepare("elpv", a)
    _refuse_writes_into(monkeypatch, b)
    prepare("elpv", b, out=tmp_path / "index")
    metrics = {}
    for label, data in (("beside", a), ("elsewhere", tmp_path / "index")):
        args = VIT.args("mvtec", tmp_path / label, "zero_shot", "--no_mvtec_aupro")
        args[args.index("--dataset") + 1] = "elpv"
        args[args.index("--data_path") + 1] = str(data)
        assert run_test_main(args) == 0
        metrics[label] = json.loads((tmp_path / label / "metrics.json").read_text())["mean"]
    assert metrics["beside"]["auroc_sp"] is not None
    assert metrics["elsewhere"] == metrics["beside"]


def test_prepare_data_set_with_out_writes_out_name(tmp_path, capsys):
    from test_benchmarks import load_script
    RAW_SETS["brainmri"](tmp_path / "raw")
    before = _tree(tmp_path / "raw")
    pd = load_script("prepare_data")
    assert pd.main(["--set", "brainmri", str(tmp_path / "raw"), "--out",
                    str(tmp_path / "data")]) == 0
    assert (tmp_path / "data" / "brainmri" / "meta.json").is_file()
    assert _tree(tmp_path / "raw") == before
    assert pd.main(["--set", "brainmri", str(tmp_path / "raw")]) == 0  # no --out: beside it
    assert (tmp_path / "raw" / "meta.json").is_file()


def _readme_elpv_folder_command() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"python -c \"(import elpv_dataset[^\"]*)\"", text)
    assert m, "the README names the ELPV data folder with a python -c command"
    return m.group(1)


def test_the_readme_names_the_elpv_folder_and_out():
    """The README's ELPV commands: the folder of the pip package, and --out for the index."""
    code = _readme_elpv_folder_command()
    assert "os.path.dirname(elpv_dataset.__file__)" in code and "'data'" in code
    text = README.read_text(encoding="utf-8")
    assert re.search(r"python -m datasets\.prepare elpv .*--out data/elpv", text)


def test_the_real_elpv_release_when_its_package_is_installed(tmp_path):
    """With the PyPI package elpv-dataset (not a requirement): the folder the README names holds
    the 2,624 real cells, is refused as the index's home, and indexes into --out; the package
    folder is left as installed."""
    pytest.importorskip("elpv_dataset")
    folder = subprocess.run([sys.executable, "-c", _readme_elpv_folder_command()],
                            capture_output=True, text=True, check=True).stdout.strip()
    data = Path(folder)
    assert (data / "labels.csv").is_file() and (data / "images").is_dir()
    before = _tree(data)
    with pytest.raises(DatasetError, match="site-packages"):
        prepare("elpv", data)
    prepare("elpv", data, out=tmp_path / "elpv")
    assert _tree(data) == before
    meta = json.loads((tmp_path / "elpv" / "meta.json").read_text())
    lines = [ln for ln in (data / "labels.csv").read_text().splitlines() if ln.strip()]
    rows = [r for _, _, _, r in _records(meta)]
    assert len(rows) == len(lines) == 2624
    assert {Path(r["img_path"]).name for r in rows} == {ln.split()[0][len("images/"):]
                                                        for ln in lines}
    assert all(Path(r["img_path"]).parent == data / "images" for r in rows)
    assert meta["labels"] == "image" and all(r["anomaly"] == 0 for r in meta["train"]["solar_cell"])
    shutil.rmtree(tmp_path / "elpv")
