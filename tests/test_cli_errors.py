"""Every bad input ends the command line with exit status 2, one ``error:`` line naming the
offending path (or flag), no traceback, and no metrics or partial result files.

test.py runs in-process (``test.main``); ``python -m datasets.prepare`` and one test.py case run as
real processes. Each test works on a copy of a fixture dataset.
"""
from __future__ import annotations

import gc
import json
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import REPO, VIT, assert_no_results, assert_user_error, copy_dataset, require, run_prepare, run_test_main
from PIL import Image

from datasets import prepare

DS = "mvtec"


def _run(argv, capsys):
    code = run_test_main(argv)
    return code, capsys.readouterr().err


def _meta(root):
    return json.loads((root / "meta.json").read_text())


def _write_meta(root, meta):
    (root / "meta.json").write_text(json.dumps(meta, indent=1))


def _first(meta, split="test", anomaly=None):
    """(category, entry) of the first entry of ``split`` (optionally with that label)."""
    for cls, entries in meta[split].items():
        for e in entries:
            if anomaly is None or bool(e["anomaly"]) == anomaly:
                return cls, e
    raise AssertionError("no such entry")


@pytest.fixture
def data(tmp_path):
    require(VIT.data(DS) / "meta.json", VIT.weights)
    return copy_dataset(DS, tmp_path / "data")


@pytest.fixture
def save(tmp_path):
    return tmp_path / "results"


def _args(root, save, mode="zero_shot", *extra):
    return VIT.args(DS, save, mode, "--save_predictions", *extra) + ["--data_path", str(root)]


# --- dataset problems found by test.py ----------------------------------------------------------

def test_data_root_missing(tmp_path, save, capsys):
    missing = tmp_path / "no_such_dataset"
    code, err = _run(_args(missing, save), capsys)
    assert_user_error(code, err, str(missing))
    assert_no_results(save)


def test_meta_json_missing(tmp_path, save, capsys):
    require(VIT.data(DS))
    root = copy_dataset(DS, tmp_path / "data", with_meta=False)
    code, err = _run(_args(root, save), capsys)
    line = assert_user_error(code, err, str(root / "meta.json"))
    assert "python -m datasets.prepare" in line
    assert_no_results(save)


def test_meta_json_missing_real_process(tmp_path, warm_python):
    """The same through ``python test.py``: the process's own exit status and stderr (a real
    process, started in the tests' fork server)."""
    require(VIT.data(DS))
    root = copy_dataset(DS, tmp_path / "data", with_meta=False)
    save = tmp_path / "results"
    proc = subprocess.run([warm_python.ready(), str(REPO / "test.py"), *_args(root, save)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=warm_python.env())
    assert_user_error(proc.returncode, proc.stderr, str(root / "meta.json"))
    assert_no_results(save)


def test_anomalous_entry_without_mask_in_meta(data, save, capsys):
    meta = _meta(data)
    _, e = _first(meta, anomaly=True)
    e["mask_path"] = ""
    _write_meta(data, meta)
    code, err = _run(_args(data, save), capsys)
    assert_user_error(code, err, str(data / e["img_path"]), "mask")
    assert_no_results(save)


def test_image_listed_but_missing(data, save, capsys):
    _, e = _first(_meta(data))
    (data / e["img_path"]).unlink()
    code, err = _run(_args(data, save), capsys)
    assert_user_error(code, err, str(data / e["img_path"]))
    assert_no_results(save)


def test_mask_size_differs_at_load_time(data, save, capsys):
    _, e = _first(_meta(data), anomaly=True)
    mask = data / e["mask_path"]
    Image.open(mask).resize((50, 40)).save(mask)
    code, err = _run(_args(data, save), capsys)
    assert_user_error(code, err, str(mask), "50x40")
    assert_no_results(save)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_unreadable_image(data, save, capsys, workers):
    _, e = _first(_meta(data), anomaly=False)
    bad = data / e["img_path"]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a PNG header, then garbage
    code, err = _run(_args(data, save) + ["--num_workers", workers], capsys)
    assert_user_error(code, err, str(bad))
    assert_no_results(save)
    # loader workers are stopped at once, not when the garbage collector finds them (a 5 s stall)
    t0 = time.monotonic()
    gc.collect()
    assert time.monotonic() - t0 < 3.0


def test_category_with_no_images(data, save, capsys):
    meta = _meta(data)
    cls = list(meta["test"])[-1]
    meta["test"][cls] = []
    _write_meta(data, meta)
    code, err = _run(_args(data, save), capsys)
    assert_user_error(code, err, cls, str(data / "meta.json"))
    assert_no_results(save)


def test_unknown_category(data, save, capsys):
    code, err = _run(_args(data, save, "zero_shot", "--categories", "no_such_cat"), capsys)
    assert_user_error(code, err, "no_such_cat")
    assert_no_results(save)


def test_unknown_dataset_name(data, save, capsys):
    code, err = _run(_args(data, save) + ["--dataset", "imagenet"], capsys)
    assert code == 2
    assert "imagenet" in err and "Traceback" not in err
    assert_no_results(save)


def test_bad_prompt_dir(data, save, capsys, tmp_path):
    prompts = tmp_path / "no_prompts"
    prompts.mkdir()
    code, err = _run(_args(data, save, "zero_shot", "--prompt_dir", str(prompts)), capsys)
    assert_user_error(code, err, str(prompts))
    assert_no_results(save)


def test_stage_out_of_range(data, save, capsys):
    code, err = _run(_args(data, save) + ["--features_list", "2", "4", "6", "99"], capsys)
    assert_user_error(code, err, "99", "features_list")
    assert_no_results(save)


# --- checkpoints -------------------------------------------------------------------------------

def test_checkpoint_missing(data, save, capsys, tmp_path):
    ckpt = tmp_path / "nowhere.pth"
    code, err = _run(_args(data, save) + ["--checkpoint_path", str(ckpt)], capsys)
    assert_user_error(code, err, str(ckpt))
    assert_no_results(save)


def test_checkpoint_of_wrong_shape(data, save, capsys, tmp_path):
    good = torch.load(VIT.checkpoint, map_location="cpu", weights_only=True)["trainable_linearlayer"]
    w = good["fc.0.weight"]
    out_dim, in_dim = w.shape
    bad = {k: (torch.zeros(out_dim, in_dim + 16) if k.endswith("weight") else v)
           for k, v in good.items()}
    ckpt = tmp_path / "wrong.pth"
    torch.save({"trainable_linearlayer": bad}, ckpt)
    code, err = _run(_args(data, save) + ["--checkpoint_path", str(ckpt)], capsys)
    line = assert_user_error(code, err, str(ckpt))
    assert f"expected {[out_dim, in_dim]}" in line and f"found {[out_dim, in_dim + 16]}" in line
    assert_no_results(save)


class _Payload:
    """Unpickling this calls open(sentinel, 'w'): creates a file if the loader runs code."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


@pytest.mark.parametrize("kind", ["object", "function"])
def test_checkpoint_with_pickled_code_is_refused(data, save, capsys, tmp_path, kind):
    good = torch.load(VIT.checkpoint, map_location="cpu", weights_only=True)["trainable_linearlayer"]
    sentinel = tmp_path / "code_was_run"
    extra = _Payload(sentinel) if kind == "object" else np.load  # a function, pickled by name
    ckpt = tmp_path / "unsafe.pth"
    torch.save({"trainable_linearlayer": good, "extra": extra}, ckpt)
    code, err = _run(_args(data, save) + ["--checkpoint_path", str(ckpt)], capsys)
    line = assert_user_error(code, err, str(ckpt))
    assert "refused" in line or "pickled" in line
    assert not sentinel.exists()
    assert_no_results(save)


def test_checkpoint_not_a_checkpoint(data, save, capsys, tmp_path):
    ckpt = tmp_path / "garbage.pth"
    ckpt.write_bytes(b"definitely not a torch file")
    code, err = _run(_args(data, save) + ["--checkpoint_path", str(ckpt)], capsys)
    assert_user_error(code, err, str(ckpt))
    assert_no_results(save)


# --- few-shot inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["empty", "absent"])
def test_few_shot_category_without_train_images(data, save, capsys, how):
    meta = _meta(data)
    cls = list(meta["test"])[0]
    if how == "empty":
        meta["train"][cls] = []
    else:
        del meta["train"][cls]
    _write_meta(data, meta)
    code, err = _run(_args(data, save, "few_shot", "--k_shot", "2", "--seed", "1"), capsys)
    assert_user_error(code, err, cls)
    assert_no_results(save)


def test_reference_list_missing(data, save, capsys, tmp_path):
    refs = tmp_path / "refs.json"
    code, err = _run(_args(data, save, "few_shot", "--reference_list", str(refs)), capsys)
    assert_user_error(code, err, str(refs))
    assert_no_results(save)


def test_reference_list_names_a_test_image(data, save, capsys, tmp_path):
    meta = _meta(data)
    refs = {cls: [e["img_path"] for e in meta["train"][cls][:2]] for cls in meta["test"]}
    cls, e = _first(meta, anomaly=False)
    refs[cls] = [refs[cls][0], e["img_path"]]
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(refs))
    code, err = _run(_args(data, save, "few_shot", "--reference_list", str(path)), capsys)
    assert_user_error(code, err, e["img_path"], str(path))
    assert_no_results(save)


def test_reference_list_names_a_missing_image(data, save, capsys, tmp_path):
    meta = _meta(data)
    refs = {cls: [e["img_path"] for e in meta["train"][cls][:2]] for cls in meta["test"]}
    cls = next(iter(refs))
    refs[cls][1] = f"{cls}/train/good/does_not_exist.png"
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(refs))
    code, err = _run(_args(data, save, "few_shot", "--reference_list", str(path)), capsys)
    assert_user_error(code, err, "does_not_exist.png")
    assert_no_results(save)


def test_unreadable_reference_image(data, save, capsys, tmp_path):
    meta = _meta(data)
    refs = {cls: [e["img_path"] for e in meta["train"][cls][:2]] for cls in meta["test"]}
    cls = next(iter(refs))
    bad = data / refs[cls][0]
    bad.write_bytes(b"not an image")
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(refs))
    code, err = _run(_args(data, save, "few_shot", "--reference_list", str(path)), capsys)
    assert_user_error(code, err, str(bad))
    assert_no_results(save)


def test_reference_list_missing_a_category(data, save, capsys, tmp_path):
    meta = _meta(data)
    cats = list(meta["test"])
    refs = {cls: [e["img_path"] for e in meta["train"][cls][:2]] for cls in cats[1:]}
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(refs))
    code, err = _run(_args(data, save, "few_shot", "--reference_list", str(path)), capsys)
    assert_user_error(code, err, cats[0], str(path))
    assert_no_results(save)


# --- python -m datasets.prepare ----------------------------------------------------------------

@pytest.fixture
def raw(tmp_path):
    require(VIT.data(DS))
    return copy_dataset(DS, tmp_path / "raw", with_meta=False)


def _prepare_in_process(kind, root, capsys):
    try:
        code = prepare.main([kind, str(root)])
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err


def _prepare_fails(root, capsys, *names, kind=DS):
    code, err = _prepare_in_process(kind, root, capsys)
    line = assert_user_error(code, err, *names)
    assert not (root / "meta.json").exists()
    return line


def test_prepare_anomalous_image_without_mask(raw):
    """As a real process: ``python -m datasets.prepare mvtec ROOT``."""
    meta = json.loads((VIT.data(DS) / "meta.json").read_text())
    _, e = _first(meta, anomaly=True)
    (raw / e["mask_path"]).unlink()
    proc = run_prepare(DS, raw)
    assert_user_error(proc.returncode, proc.stderr, str(raw / e["img_path"]))
    assert not (raw / "meta.json").exists()


def test_prepare_mask_size_differs(raw, capsys):
    meta = json.loads((VIT.data(DS) / "meta.json").read_text())
    _, e = _first(meta, anomaly=True)
    Image.open(raw / e["mask_path"]).resize((33, 31)).save(raw / e["mask_path"])
    _prepare_fails(raw, capsys, str(raw / e["mask_path"]), "33x31")


def test_prepare_category_with_no_images(raw, capsys):
    cls = sorted(p.name for p in raw.iterdir() if p.is_dir())[0]
    for p in (raw / cls / "test").rglob("*.png"):
        p.unlink()
    _prepare_fails(raw, capsys, cls)


def test_prepare_data_root_missing(tmp_path, capsys):
    missing = tmp_path / "nothing_here"
    _prepare_fails(missing, capsys, str(missing))


def test_prepare_unknown_dataset(raw, capsys):
    code, err = _prepare_in_process("imagenet", raw, capsys)
    assert code == 2 and "Traceback" not in err
    assert "imagenet" in err
    assert not (raw / "meta.json").exists()


def test_prepare_visa_anomaly_without_mask(tmp_path, capsys):
    require(VIT.data("visa") / "split_csv" / "1cls.csv")
    root = copy_dataset("visa", tmp_path / "visa", with_meta=False)
    rows = (root / "split_csv" / "1cls.csv").read_text().splitlines()
    i = next(i for i, r in enumerate(rows) if ",anomaly," in r)
    mask = rows[i].split(",")[4]
    (root / mask).unlink()
    _prepare_fails(root, capsys, mask, kind="visa")


def test_prepare_visa_mask_size_differs(tmp_path, capsys):
    require(VIT.data("visa") / "split_csv" / "1cls.csv")
    root = copy_dataset("visa", tmp_path / "visa", with_meta=False)
    rows = (root / "split_csv" / "1cls.csv").read_text().splitlines()
    mask = next(r for r in rows if ",anomaly," in r).split(",")[4]
    Image.open(root / mask).resize((20, 20)).save(root / mask)
    _prepare_fails(root, capsys, str(root / mask), kind="visa")
