"""Faults a careful user meets: each ends in one clean line (exit 2; 1 for the environment; 130
for Ctrl-C), no traceback, no partial result set; NaN models are stopped; result sets are whole."""
from __future__ import annotations

import errno
import json
import os

import pytest
import torch
from conftest import VIT, assert_no_results, assert_user_error, copy_dataset, require, run_test_main
from PIL import Image

import train

from engine.plumbing.result_set import LOCK


@pytest.fixture
def data(tmp_path):
    require(VIT.data("mvtec") / "meta.json", VIT.weights)
    return copy_dataset("mvtec", tmp_path / "data")


def _args(root, save, *extra, mode="zero_shot"):
    return VIT.args("mvtec", save, mode, *extra) + ["--data_path", str(root)]


def _train_args(root, save, *extra):
    return ["--dataset", "mvtec", "--train_data_path", str(root), "--save_path", str(save),
            "--model", VIT.model_name, "--config_path", str(VIT.config), "--pretrained",
            str(VIT.weights), "--image_size", str(VIT.image_size()), "--features_list",
            *map(str, VIT.stages), "--device", "cpu", "--aug_rate", "0", *extra]


def _fails(capsys, argv, *names, code=2, entry=run_test_main):
    got = entry(argv)
    return assert_user_error(code, capsys.readouterr().err, *names) if code == 2 else got


def _ckpt(tmp_path, fill):
    sd = torch.load(VIT.checkpoint, map_location="cpu", weights_only=True)["trainable_linearlayer"]
    path = tmp_path / "bad.pth"
    torch.save({"trainable_linearlayer": {k: torch.full_like(v, fill) for k, v in sd.items()}},
               path)
    return path


# --- non-finite models -------------------------------------------------------------------------
def test_nan_checkpoint_can_neither_train_nor_evaluate(data, tmp_path, capsys):
    bad = _ckpt(tmp_path, float("nan"))
    save = tmp_path / "exp"
    line = _fails(capsys, _train_args(data, save, "--epoch", "1", "--init_checkpoint", str(bad)),
                  str(bad), "non-finite", entry=train.main)
    assert not list(save.glob("epoch_*.pth"))
    line = _fails(capsys, _args(data, tmp_path / "res", "--checkpoint_path", str(bad)), str(bad))
    assert "non-finite" in line
    assert_no_results(tmp_path / "res")


def test_non_finite_loss_stops_training_before_saving(data, tmp_path, capsys, monkeypatch):
    from engine import training
    real = training.segmentation_loss
    monkeypatch.setattr(training, "segmentation_loss", lambda p, g: real(p, g) * float("nan"))
    save = tmp_path / "exp"
    _fails(capsys, _train_args(data, save, "--epoch", "2"), "epoch 1, step 1", entry=train.main)
    assert not list(save.glob("epoch_*.pth"))


def test_one_non_finite_gradient_element_stops_training_before_the_step(data, tmp_path, capsys,
                                                                         monkeypatch):
    """A finite loss whose gradient has one NaN element: no optimizer step, no checkpoint."""
    from engine import training
    real, hooked, steps = training.batch_loss, [], []

    def loss_with_one_bad_gradient(model, *a, **k):
        if not hooked:
            def poison(g):
                g = g.clone()
                g.view(-1)[3] = float("nan")
                return g
            hooked.append(model.projections.fc[1].weight.register_hook(poison))
        return real(model, *a, **k)
    monkeypatch.setattr(training, "batch_loss", loss_with_one_bad_gradient)
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1))
    save = tmp_path / "exp"
    line = _fails(capsys, _train_args(data, save, "--epoch", "1"), "fc.1.weight",
                  "epoch 1, step 1", entry=train.main)
    assert "gradient" in line and steps == []
    assert not list(save.glob("epoch_*.pth"))


def test_overflowing_weights_name_the_image(data, tmp_path, capsys):
    huge = _ckpt(tmp_path, 3e38)  # finite weights whose projections overflow to inf
    line = _fails(capsys, _args(data, tmp_path / "res", "--checkpoint_path", str(huge)),
                  "not finite")
    assert "/" in line and ".png" in line  # names the image
    assert_no_results(tmp_path / "res")


# --- bad files ------------------------------------------------------------------------------------
def test_truncated_checkpoint(data, tmp_path, capsys):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(VIT.checkpoint.read_bytes()[:2000])
    assert "truncated or corrupt" in _fails(
        capsys, _args(data, tmp_path / "res", "--checkpoint_path", str(cut)), str(cut))


@pytest.mark.parametrize("fault", ["not_utf8", "missing_key"])
def test_bad_meta_json(data, tmp_path, capsys, fault):
    meta = data / "meta.json"
    if fault == "not_utf8":
        meta.write_bytes(b'{"test": {"bottle": []}, "note": "\xff\xfe"}')
        expect = "UTF-8"
    else:
        m = json.loads(meta.read_text())
        del next(iter(m["test"].values()))[0]["anomaly"]
        meta.write_text(json.dumps(m))
        expect = "'anomaly'"
    assert expect in _fails(capsys, _args(data, tmp_path / "res"), str(meta))
    assert_no_results(tmp_path / "res")


def test_visa_short_csv_row(tmp_path, capsys):
    require(VIT.data("visa") / "split_csv" / "1cls.csv")
    from datasets import prepare
    root = copy_dataset("visa", tmp_path / "visa", with_meta=False)
    csv_path = root / "split_csv" / "1cls.csv"
    csv_path.write_text(csv_path.read_text().rstrip("\r\n") + "\r\ncandle,test,normal\r\n")
    code = prepare.main(["visa", str(root)])
    assert "5 columns" in assert_user_error(code, capsys.readouterr().err, str(csv_path))


def test_malformed_reference_list(data, tmp_path, capsys):
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({c: [1, 2] for c in ("bottle", "grid")}))
    _fails(capsys, _args(data, tmp_path / "res", "--reference_list", str(refs), mode="few_shot"),
           str(refs), "image paths")
    refs.write_text("[not json")
    _fails(capsys, _args(data, tmp_path / "res", "--reference_list", str(refs), mode="few_shot"),
           str(refs), "not valid JSON")


def test_image_over_pil_limit(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the fixture's 96x96 are "too large"
    line = _fails(capsys, _args(data, tmp_path / "res"), "safety limit", "APRILGAN_MAX_IMAGE_PIXELS")
    assert "96x96" in line


def test_normal_image_with_an_anomalous_mask(data, tmp_path, capsys):
    m = json.loads((data / "meta.json").read_text())
    good = next(e for e in m["test"]["bottle"] if not e["anomaly"])
    bad = next(e for e in m["test"]["bottle"] if e["anomaly"])
    good["mask_path"] = bad["mask_path"]
    (data / "meta.json").write_text(json.dumps(m))
    _fails(capsys, _args(data, tmp_path / "res"), good["img_path"], "labelled normal")


# --- command-line values and the file system ----------------------------------------------------
@pytest.mark.parametrize("flag,value,names", [
    ("--image_size", "85", ("85", "patch size 14")),
    ("--metric_workers", "-1", ("--metric_workers", ">= 0")),
    ("--batch_size", "0", ("--batch_size", ">= 1")),
    ("--metrics_device", "gpu0", ("--metrics_device", "gpu0")),
])
def test_bad_values(data, tmp_path, capsys, flag, value, names):
    code = run_test_main(_args(data, tmp_path / "res", flag, value))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and all(n in err for n in names), err
    assert_no_results(tmp_path / "res")


def test_save_path_is_a_file(data, tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("mine")
    assert "is a file" in _fails(capsys, _args(data, f), str(f))
    assert f.read_text() == "mine"


def test_full_disk_is_an_environment_fault(data, tmp_path, capsys, monkeypatch):
    from engine.plumbing import result_set
    real = result_set.shutil.disk_usage
    monkeypatch.setattr(result_set.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1024))
    code = run_test_main(_args(data, tmp_path / "res", "--save_predictions"))
    err = capsys.readouterr().err
    assert code == 1 and "free" in err and "Traceback" not in err
    monkeypatch.undo()
    from utils import io

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "res2"))
    monkeypatch.setattr(io.os, "replace", no_space)
    code = run_test_main(_args(data, tmp_path / "res2"))
    err = capsys.readouterr().err
    assert code == 1 and "disk is full" in err and "Traceback" not in err


# --- result sets ----------------------------------------------------------------------------------
def test_second_run_into_a_folder_in_use_fails_at_once(data, tmp_path, capsys):
    save = tmp_path / "res"
    save.mkdir()
    (save / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    assert "in use by another run" in _fails(capsys, _args(data, save), str(save))
    assert (save / LOCK).exists()  # the other run's lock is left alone


def test_leftovers_of_a_killed_run_are_cleaned(data, tmp_path):
    save = tmp_path / "res"
    (save / ".staging-old").mkdir(parents=True)
    (save / ".staging-old" / "metrics.json").write_text("{}")
    (save / ".metrics.json.abc.tmp").write_text("half")
    (save / LOCK).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": os.uname().nodename}))
    assert run_test_main(_args(data, save, "--no_mvtec_aupro")) == 0
    left = {p.name for p in save.iterdir()}
    assert not {n for n in left if n.startswith(".")}, left
    run = json.loads((save / "run.json").read_text())
    assert run["status"] == "complete" and "metrics.json" in run["files"]
    assert set(run) >= {"command", "config", "versions", "started", "ended"}


def test_metrics_json_is_strict_with_reasons(data, tmp_path, capsys):
    m = json.loads((data / "meta.json").read_text())
    m["test"]["bottle"] = [e for e in m["test"]["bottle"] if not e["anomaly"]]  # one class
    (data / "meta.json").write_text(json.dumps(m))
    save = tmp_path / "res"
    assert run_test_main(_args(data, save, "--no_mvtec_aupro")) == 0
    said = [ln for ln in capsys.readouterr().out.splitlines() if "mean row:" in ln]
    assert len(said) == 1 and "undefined in bottle" in said[0]  # one line, not a warning each

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    result = json.loads((save / "metrics.json").read_text(), parse_constant=no_nan)
    assert result["per_category"]["bottle"]["auroc_px"] is None
    assert "one class" in result["undefined"]["bottle"]["auroc_px"]
    assert result["per_category"]["grid"]["auroc_px"] is not None


# --- Ctrl-C ---------------------------------------------------------------------------------------
def test_ctrl_c_in_test_py(data, tmp_path, capsys, monkeypatch):
    from engine.evaluate import evaluation

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluation, "run_category", interrupt)
    save = tmp_path / "res"
    assert run_test_main(_args(data, save)) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert_no_results(save)


def test_ctrl_c_in_train_py_names_the_checkpoint(data, tmp_path, capsys, monkeypatch):
    from engine import training
    real, calls = training.batch_loss, []

    def loss(*a, **k):
        calls.append(1)
        if len(calls) > 2:  # epoch 2 (two batches of 6 per epoch)
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(training, "batch_loss", loss)
    save = tmp_path / "exp"
    assert train.main(_train_args(data, save, "--epoch", "3", "--batch_size", "6")) == 130
    err = capsys.readouterr().err
    assert f"--resume {save / 'epoch_1.pth'} --epoch 3" in err and "Traceback" not in err
    assert json.loads((save / "run.json").read_text())["status"] == "interrupted"
    assert not (save / LOCK).exists()


