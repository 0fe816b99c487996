"""predict.py's refusals of mix-ups that used to fail late or silently: --save_path equal to
or around --image_dir, a rerun over an interrupted run, model flags with --onnx, and a folder
or a graph given where a checkpoint goes (and the reverse). Each ends in one line, exit 2, and
leaves nothing in the user's folders."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import run_test_main

import predict

REPO = Path(__file__).resolve().parents[1]

GOLDEN = REPO / "tests" / "fixtures" / "golden"
MODELS = GOLDEN / "models"
BOTTLE = GOLDEN / "data" / "mvtec" / "bottle"
CKPT = MODELS / "linear-random.pth"
MODEL = ["--model", "tiny-vit", "--config_path", str(MODELS / "tiny-vit.json"),
         "--pretrained", str(MODELS / "tiny-vit-random.pt"), "--image_size", "84",
         "--features_list", "2", "4", "6", "8", "--device", "cpu", "--no_report"]


def call(capsys, argv: list[str]) -> tuple[int, str, str]:
    """predict.main(argv): (exit status, stdout, stderr); argparse's exit becomes the status."""
    try:
        code = predict.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error(code: int, err: str, *names: str) -> str:
    """Exit 2 and a stderr whose only line is the error, naming every ``names``."""
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "error:" in lines[0], (code, err)
    for n in names:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture()
def images(tmp_path) -> Path:
    """The six bottle test images, flat (good_000.png ... broken_large_002.png)."""
    d = tmp_path / "imgs"
    d.mkdir()
    for p in sorted((BOTTLE / "test").glob("*/*.png")):
        shutil.copy(p, d / f"{p.parent.name}_{p.name}")
    return d


def scored(save: Path) -> list[str]:
    with open(save / "scores.csv", newline="") as f:
        return [r["path"] for r in csv.DictReader(f)]


# --- --save_path and --image_dir ----------------------------------------------------------------
@pytest.mark.parametrize("where", ["same", "same_with_slash", "images_inside_save"])
def test_save_path_over_the_image_folder_is_refused_at_once(capsys, tmp_path, images, where):
    before = tree(tmp_path)
    save = {"same": str(images), "same_with_slash": f"{images}/",
            "images_inside_save": str(tmp_path)}[where]
    code, _, err = call(capsys, ["--image_dir", images, "--object_name", "bottle",
                                 "--save_path", save, "--checkpoint_path", CKPT, *MODEL])
    line = one_error(code, err, "--save_path", "--image_dir", save)
    if where != "images_inside_save":
        assert f"{images}_scored" in line  # a folder beside it is proposed
    assert tree(tmp_path) == before  # nothing written, nothing removed


def test_a_save_path_inside_the_image_folder_never_scores_its_own_files(capsys, images):
    names = sorted(p.name for p in images.iterdir())
    save = images / "scored"
    for _ in range(2):  # the second run finds the first one's files in the folder
        code, _, err = call(capsys, ["--image_dir", images, "--object_name", "bottle",
                                     "--save_path", save, "--checkpoint_path", CKPT, *MODEL])
        assert code == 0, err
        assert scored(save) == names
    assert sorted(p.name for p in images.iterdir()) == sorted(names + ["scored"])


# --- Ctrl-C and the rerun after it --------------------------------------------------------------
def _interrupt_at_batch(monkeypatch, n: int) -> None:
    """Ctrl-C when the scorer is asked for batch ``n`` (1-based): n - 1 batches are recorded."""
    from engine.predict import scorers

    real = scorers.TorchScorer.batches

    def batches(self, *a, **k):
        for i, b in enumerate(real(self, *a, **k), 1):
            if i == n:
                raise KeyboardInterrupt
            yield b
    monkeypatch.setattr(scorers.TorchScorer, "batches", batches)


def test_ctrl_c_names_resume_and_a_plain_rerun_is_refused(capsys, tmp_path, images, monkeypatch):
    argv = ["--image_dir", images, "--object_name", "bottle", "--save_path", tmp_path / "out",
            "--checkpoint_path", CKPT, *MODEL, "--batch_size", "2"]
    with monkeypatch.context() as m:
        _interrupt_at_batch(m, 2)  # one batch of 2 images recorded
        code, _, err = call(capsys, argv)
    assert code == 130, err
    line = [l for l in err.splitlines() if l.startswith("interrupted")]
    assert line == [f"interrupted: 2 scored image(s) are kept in {tmp_path / 'out'}: rerun the "
                    "same command with --resume to continue (or with --restart to start over)"]
    staged = sorted((tmp_path / "out").glob(".staging-*/records-r0.jsonl"))
    assert len(staged) == 1 and len(staged[0].read_text().splitlines()) == 2
    kept = staged[0].read_bytes()

    code, _, err = call(capsys, argv)  # without --resume: refused, the records stay
    one_error(code, err, "2 image(s) scored", "--resume", "--restart")
    assert staged[0].read_bytes() == kept and not (tmp_path / "out" / "scores.csv").exists()
    code, _, err = call(capsys, argv + ["--resume", "--restart"])
    one_error(code, err, "--resume", "--restart")

    code, out, err = call(capsys, argv + ["--restart"])  # starts over: all six scored
    assert code == 0, err
    assert "resuming" not in out and scored(tmp_path / "out") == sorted(
        p.name for p in images.iterdir())
    assert not list((tmp_path / "out").glob(".staging-*"))


def test_ctrl_c_before_any_image_is_scored_needs_no_flag(capsys, tmp_path, images, monkeypatch):
    argv = ["--image_dir", images, "--object_name", "bottle", "--save_path", tmp_path / "out",
            "--checkpoint_path", CKPT, *MODEL]
    with monkeypatch.context() as m:
        _interrupt_at_batch(m, 1)
        code, _, err = call(capsys, argv)
    assert code == 130 and "interrupted: no image was scored yet" in err, err
    code, _, err = call(capsys, argv)  # nothing to lose: a plain rerun runs
    assert code == 0, err


# --- --onnx and the model flags -----------------------------------------------------------------
@pytest.mark.parametrize("flag,value", [
    ("--model", "ViT-L-14-336"),  # the default, typed: refused all the same
    ("--pretrained", "openai"), ("--config_path", "m.json"), ("--image_size", "84"),
    ("--features_list", "2"), ("--few_shot_features", "2"), ("--checkpoint_path", "w.pth"),
    ("--prompt_dir", "prompts"),
])
def test_onnx_refuses_the_flags_its_graph_carries(capsys, tmp_path, flag, value):
    code, _, err = call(capsys, ["--image_dir", tmp_path, "--onnx", tmp_path / "g.onnx",
                                 "--save_path", tmp_path / "out", flag, value])
    one_error(code, err, f"--onnx {tmp_path / 'g.onnx'} carries its model", f"drop {flag}")
    assert not (tmp_path / "out").exists()


def test_onnx_takes_the_flags_it_uses(tmp_path):
    cfg = predict.parse_args(["--image_dir", str(tmp_path), "--onnx", str(tmp_path / "g.onnx"),
                              "--batch_size", "3", "--object_name", "screw", "--device", "cpu"])
    assert (cfg.batch_size, cfg.object_name) == (3, "screw")


# --- a folder or a graph as the checkpoint, a checkpoint as the graph ---------------------------
@pytest.fixture()
def weights_folder(tmp_path) -> Path:
    d = tmp_path / "exp"
    d.mkdir()
    for name in ("epoch_10.pth", "epoch_2.pth", "notes.txt"):
        (d / name).write_bytes(b"x")
    (d / "sub").mkdir()
    return d


def test_a_folder_as_checkpoint_is_called_a_folder_with_its_pth_files(capsys, tmp_path, images,
                                                                      weights_folder):
    save = tmp_path / "out"
    code, _, err = call(capsys, ["--image_dir", images, "--object_name", "bottle",
                                 "--save_path", save, "--checkpoint_path", weights_folder, *MODEL])
    # the .pth files only, in epoch order, the list ended by the colon
    one_error(code, err, f"--checkpoint_path {weights_folder} is a folder",
              "its .pth files: epoch_2.pth, epoch_10.pth:", f"e.g. {weights_folder / 'epoch_10.pth'}")
    assert not save.exists()
    base = ["--data_path", GOLDEN / "data" / "mvtec", "--save_path", save, *MODEL]
    code = run_test_main(base + ["--checkpoint_path", weights_folder])  # test.py: the same
    one_error(code, capsys.readouterr().err, "is a folder", "epoch_2.pth, epoch_10.pth")
    empty = tmp_path / "empty"
    empty.mkdir()
    code = run_test_main(base + ["--checkpoint_path", empty])
    one_error(code, capsys.readouterr().err, f"{empty} is a folder", "holds no .pth file")
    assert not save.exists()


def test_a_graph_as_checkpoint_points_to_onnx_and_back(capsys, tmp_path, images):
    graph = tmp_path / "screw.onnx"
    graph.write_bytes(b"\x08\x07")  # what an ONNX protobuf starts with; never loaded
    save = tmp_path / "out"
    code, _, err = call(capsys, ["--image_dir", images, "--object_name", "bottle",
                                 "--save_path", save, "--checkpoint_path", graph, *MODEL])
    one_error(code, err, f"--checkpoint_path {graph} is an ONNX graph",
              f"--onnx {graph} in place of --checkpoint_path")
    code = run_test_main(["--data_path", GOLDEN / "data" / "mvtec", "--save_path", save,
                          *MODEL, "--checkpoint_path", graph])
    one_error(code, capsys.readouterr().err, "is an ONNX graph", f"predict.py --onnx {graph}")
    code, _, err = call(capsys, ["--image_dir", images, "--save_path", save, "--onnx", CKPT])
    one_error(code, err, f"--onnx {CKPT} is a PyTorch checkpoint",
              f"--checkpoint_path {CKPT}")
    assert not save.exists()
