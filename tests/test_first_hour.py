"""What a new user meets first: fast and honest ``--help``, offline-first weights, checkpoints
that say what they are and what they were trained with, ISO log dates."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO, VIT, assert_user_error, require, run_test_main

ENTRY = ("train.py", "test.py", "predict.py", "prompt_study.py")


@pytest.mark.parametrize("script", ENTRY)
def test_help_needs_no_torch_and_states_each_default_once(script):
    code = ("import runpy, sys; sys.argv = [%r, '--help']\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'heavy import'\n"
            % (script, str(REPO / script)))
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "usage:" in text and "(default: " not in text and "default: None" not in text
    for entry in re.split(r"\n  (?=-)", text):
        assert entry.count("[default:") <= 1, entry
    flat = " ".join(text.split())
    assert "[default: cuda if available, else cpu]" in flat
    assert "[default: ViT-L-14-336]" in flat and "[default: 6 12 18 24]" in flat
    # the examples' line continuations survive (a non-raw docstring would join the lines)
    examples = [ln for ln in text.splitlines() if ln.lstrip().startswith("python ")]
    assert examples and not any(re.search(r"\S {6,}--", ln) for ln in examples), examples


def test_train_help_states_the_paper_epochs():
    r = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    flat = " ".join(r.stdout.split())
    assert "[default: 3 for mvtec/folder, 15 for visa, as in the paper" in flat


def _mvtec_args(tmp_path, *model):
    return ["--mode", "zero_shot", "--dataset", "mvtec", "--data_path", str(VIT.data("mvtec")),
            "--save_path", str(tmp_path / "out"), "--checkpoint_path", str(VIT.checkpoint),
            "--device", "cpu", *model]


def test_offline_without_model_flags_fails_at_once(tmp_path, capsys, monkeypatch):
    """The default ViT-L-14-336/openai is neither cached nor reachable: one line, no retries."""
    require(VIT.checkpoint)
    import open_clip

    from engine.core import loading
    from engine.plumbing import preflight

    calls = []
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(preflight, "any_cached_weights", lambda: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = run_test_main(_mvtec_args(tmp_path))
    line = assert_user_error(code, capsys.readouterr().err, "ViT-L-14-336", "--pretrained")
    assert "HF_HUB_OFFLINE" in line and not calls  # no download was even tried
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(preflight, "hub_reachable", lambda host="", timeout=3.0: False)
    code = run_test_main(_mvtec_args(tmp_path))
    assert "offline" in assert_user_error(code, capsys.readouterr().err, "huggingface.co")
    # some weights cached, but not these: the full check names the hub too, still no download
    monkeypatch.setattr(preflight, "any_cached_weights", lambda: True)
    monkeypatch.setattr(loading, "cached_weights", lambda *a: None)
    code = run_test_main(_mvtec_args(tmp_path))
    assert "offline" in assert_user_error(code, capsys.readouterr().err, "huggingface.co")
    assert not calls


def test_offline_real_process_is_quick(tmp_path):
    """As a real process with HF_HUB_OFFLINE=1: one error line before torch is even imported."""
    require(VIT.checkpoint)
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HOME": str(tmp_path)}
    code = ("import runpy, sys; sys.argv = ['test.py'] + sys.argv[1:]; sys.path.insert(0, %r)\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "sys.exit(code)\n" % (str(REPO), str(REPO / "test.py")))
    r = subprocess.run([sys.executable, "-c", code, *_mvtec_args(tmp_path)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=env)
    assert_user_error(r.returncode, r.stderr, "HF_HUB_OFFLINE", "--pretrained")


def test_device_that_is_not_there(tmp_path, capsys):
    require(VIT.checkpoint)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = run_test_main(VIT.args("mvtec", tmp_path / "out") + ["--device", "cuda"])
    line = assert_user_error(code, capsys.readouterr().err, "--device cuda")
    assert "download" not in line and "cpu" in line


def test_text_file_as_checkpoint(tmp_path, capsys):
    require(VIT.checkpoint)
    bad = tmp_path / "notes.pth"
    bad.write_text("these are my notes, not weights\n")
    code = run_test_main(VIT.args("mvtec", tmp_path / "out") + ["--checkpoint_path", str(bad)])
    line = assert_user_error(code, capsys.readouterr().err, str(bad))
    assert "not a PyTorch checkpoint" in line and "pickled" not in line
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    code = run_test_main(VIT.args("mvtec", tmp_path / "out") + ["--checkpoint_path", str(empty)])
    assert "empty" in assert_user_error(code, capsys.readouterr().err, str(empty))


def test_checkpoint_remembers_its_settings(tmp_path, capsys):
    """A checkpoint trained at one size and stage list warns, with both values, elsewhere."""
    require(VIT.checkpoint)
    sd = torch.load(VIT.checkpoint, map_location="cpu", weights_only=True)
    ckpt = tmp_path / "trained.pth"
    torch.save({**sd, "trained_with": {"model": VIT.model_name, "image_size": 112,
                                       "features_list": [1, 3, 5, 7]}}, ckpt)
    args = VIT.args("mvtec", tmp_path / "out", "zero_shot", "--no_mvtec_aupro")
    args[args.index("--checkpoint_path") + 1] = str(ckpt)
    assert run_test_main(args) == 0
    err = capsys.readouterr().err
    assert re.search(r"--image_size 112.*uses \d+", err)
    assert "--features_list [1, 3, 5, 7]" in err and str(VIT.stages) in err
    assert "--model" not in err  # the same model: no warning for it


def test_log_dates_are_iso_and_config_is_resolved(tmp_path):
    require(VIT.checkpoint)
    assert run_test_main(VIT.args("mvtec", tmp_path / "out", "zero_shot", "--no_mvtec_aupro")) == 0
    log = (tmp_path / "out" / "log.txt").read_text()
    assert re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} ", log)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["device"] == "cpu"
    assert config["save_path"] == str((tmp_path / "out").resolve())
    assert config["checkpoint_path"] == str(VIT.checkpoint.resolve())
    assert " -0.0 " not in (tmp_path / "out" / "metrics.md").read_text()
