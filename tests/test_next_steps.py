"""Advice that leads somewhere: a corrupt image's error says to remove the file; once it is
removed, the next error names the command that rebuilds the index (meta.json still lists the
file), and that command, run as written, makes the next run work."""
from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
from conftest import VIT, assert_user_error, copy_dataset, require, run_test_main

import train
from datasets import prepare


def _train_args(root, save):
    return ["--dataset", "mvtec", "--train_data_path", str(root), "--save_path", str(save),
            "--model", VIT.model_name, "--config_path", str(VIT.config), "--pretrained",
            str(VIT.weights), "--image_size", str(VIT.image_size()), "--features_list",
            *map(str, VIT.stages), "--device", "cpu", "--epoch", "1"]


@pytest.mark.parametrize("ds", ["mvtec", "visa"])
def test_a_removed_corrupt_image_leads_to_the_command_that_rebuilds_the_index(tmp_path, capsys,
                                                                              ds):
    require(VIT.data(ds) / "meta.json", VIT.weights)
    root = copy_dataset(ds, tmp_path / ds)
    meta = json.loads((root / "meta.json").read_text())
    cat = next(iter(meta["test"]))
    entry = next(e for e in meta["test"][cat] if e["anomaly"] == 0)
    bad = root / entry["img_path"]
    garbage = np.random.default_rng(0).bytes(512)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + garbage)  # an image header, then seeded garbage
    args = VIT.args(ds, tmp_path / "res", "zero_shot", "--categories", cat, "--no_mvtec_aupro")
    args += ["--data_path", str(root)]

    line = assert_user_error(run_test_main(args), capsys.readouterr().err, str(bad))
    assert "remove the file" in line
    bad.unlink()  # as told
    line = assert_user_error(run_test_main(args), capsys.readouterr().err, str(bad))
    command = f"python -m datasets.prepare {ds} {root}"  # the project's index command
    assert f"rebuild the index with `{command}`" in line
    if ds == "mvtec":  # train.py reads the same index: the same advice
        save = tmp_path / "exp"
        assert_user_error(train.main(_train_args(root, save)), capsys.readouterr().err,
                          str(bad), f"`{command}`")
    if ds == "visa":  # the index is made from the split file: its row goes first
        csv = root / "split_csv" / "1cls.csv"
        assert f"delete its row in {csv}, then" in line
        rows = csv.read_text().splitlines(keepends=True)
        csv.write_text("".join(r for r in rows if entry["img_path"] not in r))

    named = shlex.split(re.search(r"`([^`]+)`", line).group(1))  # the command as printed
    assert named[:3] == ["python", "-m", "datasets.prepare"]
    assert prepare.main(named[3:]) == 0
    capsys.readouterr()
    rebuilt = json.loads((root / "meta.json").read_text())
    paths = [e["img_path"] for e in rebuilt["test"][cat]]
    assert entry["img_path"] not in paths and len(paths) == len(meta["test"][cat]) - 1
    assert run_test_main(args) == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert set(result["per_category"]) == {cat}


def test_a_removed_mask_says_what_to_do(tmp_path, capsys):
    require(VIT.data("mvtec") / "meta.json", VIT.weights)
    root = copy_dataset("mvtec", tmp_path / "mvtec")
    meta = json.loads((root / "meta.json").read_text())
    entry = next(e for e in meta["test"]["bottle"] if e["anomaly"] == 1)
    (root / entry["mask_path"]).unlink()
    args = VIT.args("mvtec", tmp_path / "res", "zero_shot") + ["--data_path", str(root)]
    line = assert_user_error(run_test_main(args), capsys.readouterr().err,
                             str(root / entry["mask_path"]))
    assert (f"restore it, or remove the image too and rebuild the index with "
            f"`python -m datasets.prepare mvtec {root}`") in line


def test_an_index_made_apart_from_the_data_names_its_out_folder(tmp_path, capsys):
    """An index written with --out lists the data by absolute path: the advice names --out."""
    require(VIT.data("mvtec") / "meta.json", VIT.weights)
    data = copy_dataset("mvtec", tmp_path / "raw", with_meta=False)
    index = tmp_path / "index"
    assert prepare.main(["mvtec", str(data), "--out", str(index)]) == 0
    gone = data / "bottle" / "test" / "good" / "000.png"
    gone.unlink()
    args = VIT.args("mvtec", tmp_path / "res", "zero_shot", "--categories", "bottle",
                    "--no_mvtec_aupro") + ["--data_path", str(index)]
    line = assert_user_error(run_test_main(args), capsys.readouterr().err, str(gone))
    command = f"python -m datasets.prepare mvtec DATASET_ROOT --out {index}"
    assert f"rebuild the index with `{command}` (DATASET_ROOT: the folder the index" in line
    named = shlex.split(re.search(r"`([^`]+)`", line).group(1).replace("DATASET_ROOT", str(data)))
    assert prepare.main(named[3:]) == 0
    capsys.readouterr()
    assert run_test_main(args) == 0, capsys.readouterr().err
