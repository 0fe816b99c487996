"""export.py + engine.deploy.onnx_runtime on the tiny ViT and ResNet: the ONNX outputs equal the torch
outputs (maps <= 1e-4, scores <= 1e-5) zero- and few-shot, for any batch size; the sidecar says
what it must; bad files and mismatches are one clear error.

The torch side is computed here from the model's parts (``AprilGAN`` + ``zero_shot_map`` /
``MemoryBank.distances`` + ``few_shot_map`` + ``per_image_scores`` with ``normal_level``), not
from the exported module. Each export runs once per module: the ViT few-shot graph with the
default dynamo exporter, as a real ``python export.py`` process started at collection on the
other CPU (``prefetch_in_background``), the others with the torchscript exporter, which is
about 5x faster on a tiny model (2-3 s against 10-15 s here; the ResNet passes with dynamo
too: max differences 4e-6).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import session_processes
import torch
from conftest import GOLDEN, REPO, RN, VIT, assert_user_error
from PIL import Image

import export
from datasets.transforms import OPENAI_MEAN, OPENAI_STD, image_transform, open_image
from errors import ConfigError, ModelLoadError
from models.anomaly_maps import few_shot_map, per_image_scores, zero_shot_map
from prompts import TextFeatureBank, load_prompts
from utils.io import file_digest
from utils.log import setup_logging

from engine.core.inference import build_bank, normal_level, reference_tokens
from engine.core.loading import build_model, load_projections
from engine.deploy import export as ex
from engine.deploy.onnx_runtime import OnnxModel

BOTTLE = GOLDEN / "data" / "mvtec" / "bottle"
REFS = BOTTLE / "train" / "good"
TESTS = sorted((BOTTLE / "test").glob("*/*.png"))  # 6 images, normal and anomalous
FIXTURES = {"vit": (VIT, 84), "resnet": (RN, 64)}
MAP_TOL, SCORE_TOL = 1e-4, 1e-5
THRESHOLDS = ["--image_threshold", "0.7", "--pixel_threshold", "2.5"]


def argv(arch: str, mode: str, out: Path, *extra: str) -> list[str]:
    fx, size = FIXTURES[arch]
    refs = ["--reference_dir", str(REFS)] if mode == "few_shot" else []
    return ["--output", str(out), "--object_name", "bottle", *fx.model_args(size), *refs, *extra]


PREFETCH_FIXTURE = "exports"


def prefetch_in_background(python: str = sys.executable):
    """The ViT few-shot export with the default (dynamo) exporter, the slowest step of this
    file (about 12 s), started at collection as a real ``python export.py`` process on the
    other CPU; the ``exports`` fixture waits for it. Returns (process, output path)."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="aprilgan-onnx-")) / "vit_few_shot.onnx"
    proc = subprocess.Popen([python, str(REPO / "export.py"),
                             *argv("vit", "few_shot", out, *THRESHOLDS)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, out


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(arch, mode) -> the exported .onnx path, each exported once."""
    root, done = tmp_path_factory.mktemp("onnx"), {}

    def get(arch: str, mode: str) -> Path:
        if (arch, mode) not in done:
            out = root / f"{arch}_{mode}.onnx"
            extra = THRESHOLDS if mode == "few_shot" else []
            if (arch, mode) != ("vit", "few_shot"):
                extra = [*extra, "--exporter", "torchscript"]
            if (arch, mode) == ("vit", "few_shot"):  # a real export.py process: a fresh
                # interpreter started at collection (one process), or now in the fork server
                # (pytest -n: no CPU is left to overlap it)
                proc, made = session_processes.BACKGROUND.get(__name__) or prefetch_in_background(
                    session_processes.session_warm_python().ready())
                _, err = proc.communicate(timeout=600)
                assert proc.returncode == 0, err[-3000:]
                for f in (made, ex.sidecar_path(made)):
                    shutil.move(f, root / f.name)
                shutil.rmtree(made.parent, ignore_errors=True)
                out = root / made.name
            else:
                ex.run(export.parse_args(argv(arch, mode, out, *extra)), setup_logging())
            done[arch, mode] = out
        return done[arch, mode]

    return get


def batch(size: int) -> np.ndarray:
    tf = image_transform(size)
    return np.stack([tf(open_image(p)).numpy() for p in TESTS])  # [6, 3, S, S]


@torch.no_grad()
def torch_outputs(arch: str, mode: str, x: np.ndarray, few_stages: list[int] | None = None
                  ) -> dict:
    """The torch path from the model's parts: maps [N, S, S], scores [N] (float64)."""
    fx, size = FIXTURES[arch]
    few = mode == "few_shot"
    model, tok = build_model(fx.model_name, str(fx.weights), size, fx.stages,
                             (few_stages or fx.stages) if few else (), str(fx.config))
    load_projections(model.projections, fx.checkpoint)
    model.eval()
    text = TextFeatureBank(model.backbone.encode_text, tok, load_prompts(None, ["bottle"]),
                           torch.device("cpu"))("bottle")
    enc = model.encode(torch.from_numpy(x))
    head = model.head(enc["patch_tokens"], enc["image_embed"], text)
    amap = zero_shot_map(head["stage_logits"], size)
    text_score = head["image_score"].double().numpy()
    out = {"text_score": text_score, "mu": None}
    if few:
        refs = sorted(p.name for p in REFS.iterdir())
        tokens = reference_tokens(model, REFS, refs, 8, 0, torch.device("cpu"))
        bank = build_bank(model, "bottle", refs, tokens)
        amap = amap + few_shot_map(bank.distances(enc["patch_tokens"]), size)
        out["mu"] = normal_level(model, refs, tokens, text, size)
    out["anomaly_map"] = amap.numpy()
    out["map_max"] = amap.flatten(1).amax(1).double().numpy()
    out["image_score"] = (per_image_scores(text_score, out["map_max"], out["mu"]) if few
                          else text_score)
    return out


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("mode", ["zero_shot", "few_shot"])
@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_onnx_equals_torch_for_any_batch(exports, arch, mode):
    size = FIXTURES[arch][1]
    model = OnnxModel(exports(arch, mode))
    x = batch(size)
    ref, got = torch_outputs(arch, mode, x), model.run(x)
    assert got["anomaly_map"].shape == (len(TESTS), size, size)
    diffs = {k: max_diff(got[k], ref[k]) for k in ex.OUTPUTS}
    print(f"{arch} {mode} max |onnx - torch|: {diffs}")
    assert diffs["anomaly_map"] <= MAP_TOL and diffs["map_max"] <= MAP_TOL, diffs
    assert diffs["image_score"] <= SCORE_TOL and diffs["text_score"] <= SCORE_TOL, diffs
    if mode == "few_shot":
        assert model.meta["score"]["normal_level"] == pytest.approx(ref["mu"], rel=1e-9)
    else:
        np.testing.assert_array_equal(got["image_score"], got["text_score"])
    # dynamic batch: one image at a time and three at a time give the same per-image values
    ones = [model.run(x[i:i + 1]) for i in range(len(x))]
    threes = [model.run(x[i:i + 3]) for i in (0, 3)]
    for parts in (ones, threes):
        for k in ex.OUTPUTS:
            joined = np.concatenate([p[k] for p in parts])
            assert max_diff(joined, got[k]) <= (1e-5 if k == "anomaly_map" else 1e-6), (k, parts)


def test_memory_stages_other_than_the_map_stages(tmp_path):
    """--few_shot_features 2 4 with --features_list 1 2 3 4: recorded, and the graph uses them."""
    out = tmp_path / "rn_fs24.onnx"
    ex.run(export.parse_args(argv("resnet", "few_shot", out, "--few_shot_features", "2", "4",
                                  "--exporter", "torchscript")), setup_logging())
    model = OnnxModel(out)
    assert model.meta["features_list"] == RN.stages and model.meta["few_shot_features"] == [2, 4]
    assert model.meta["map"]["range"] == [0.0, float(len(RN.stages) + 2 * 2)]
    x = batch(FIXTURES["resnet"][1])
    got, ref = model.run(x), torch_outputs("resnet", "few_shot", x, few_stages=[2, 4])
    assert max_diff(got["anomaly_map"], ref["anomaly_map"]) <= MAP_TOL
    assert max_diff(got["image_score"], ref["image_score"]) <= SCORE_TOL
    assert model.meta["score"]["normal_level"] == pytest.approx(ref["mu"], rel=1e-9)
    every = torch_outputs("resnet", "few_shot", x)  # the four stages: another map
    assert max_diff(got["anomaly_map"], every["anomaly_map"]) > 1e-2


def test_sidecar_content(exports):
    path = exports("vit", "few_shot")
    meta = json.loads(ex.sidecar_path(path).read_text())
    assert meta["format"] == "aprilgan-onnx" and meta["format_version"] == 1
    assert (meta["object_name"], meta["mode"], meta["image_size"]) == ("bottle", "few_shot", 84)
    assert meta["onnx_file"] == path.name
    assert meta["input"] == {"name": "images", "shape": ["batch", 3, 84, 84], "dtype": "float32"}
    assert meta["outputs"]["anomaly_map"] == ["batch", 84, 84]
    assert meta["features_list"] == meta["few_shot_features"] == [2, 4, 6, 8]
    pre = meta["preprocessing"]
    assert (pre["resize"], pre["interpolation"], pre["color"]) == ("squash", "bicubic", "RGB")
    assert pre["size"] == [84, 84] and pre["mean"] == list(OPENAI_MEAN) and pre["std"] == list(OPENAI_STD)
    score = meta["score"]
    assert score["name"] == "per_image" and "(map_max - mu) / mu" in score["formula"]
    assert score["normal_level"] > 0
    assert meta["map"]["range"] == [0.0, 12.0]
    assert meta["references"]["files"] == [f"00{i}.png" for i in range(5)]
    assert meta["thresholds"] == {"image": 0.7, "pixel": 2.5, "source": "command line"}
    assert meta["model"]["name"] == "tiny-vit" and meta["model"]["kind"] == "vit"
    assert meta["checkpoint"]["sha256"] == file_digest(VIT.checkpoint)
    assert meta["opset"] == ex.DEFAULT_OPSET and meta["exporter"] == "dynamo"
    assert {"torch", "onnx", "onnxruntime", "open_clip_torch"} <= set(meta["versions"])
    assert max(meta["verification"]["max_abs_diff"].values()) <= 1e-4
    session_meta = OnnxModel(path).session.get_modelmeta().custom_metadata_map
    assert session_meta["aprilgan.export_id"] == meta["export_id"]
    zero = json.loads(ex.sidecar_path(exports("vit", "zero_shot")).read_text())
    assert zero["mode"] == "zero_shot" and zero["few_shot_features"] == []
    assert zero["score"]["name"] == "text" and zero["score"]["normal_level"] is None
    assert zero["references"] is None and zero["thresholds"] is None
    assert zero["map"]["range"] == [0.0, 4.0] and zero["exporter"] == "torchscript"
    rn = json.loads(ex.sidecar_path(exports("resnet", "few_shot")).read_text())
    assert rn["exporter"] == "torchscript" and rn["model"]["kind"] == "resnet"


def test_preprocess_is_the_training_transform(exports):
    model = OnnxModel(exports("resnet", "zero_shot"))
    jpeg = open_image(REFS / "000.png").convert("RGB").resize((90, 50))  # not square
    ref = image_transform(64)(jpeg).numpy()
    np.testing.assert_array_equal(model.preprocess(jpeg), ref)
    assert model.preprocess(TESTS[0]).shape == (3, 64, 64) and model.image_size == 64


def test_runtime_errors(exports, tmp_path):
    src = exports("vit", "few_shot")
    model = OnnxModel(src)
    with pytest.raises(ConfigError, match="'bottle'.*'screw'"):
        model.check(object_name="screw")
    with pytest.raises(ConfigError, match="84.*518"):
        model.check(image_size=518)
    model.check(object_name="bottle", image_size=84)
    with pytest.raises(ConfigError, match=r"\[B, 3, 84, 84\]"):
        model.run(np.zeros((1, 3, 64, 64), np.float32))
    lone = tmp_path / "lone.onnx"
    shutil.copy(src, lone)
    with pytest.raises(ModelLoadError, match="sidecar not found.*lone.onnx.json"):
        OnnxModel(lone)
    sidecar = json.loads(ex.sidecar_path(src).read_text())
    for broken, match in (("{not json", "not valid JSON"),
                          (json.dumps({**sidecar, "image_size": "84"}), "image_size")):
        ex.sidecar_path(lone).write_text(broken)
        with pytest.raises(ModelLoadError, match=match):
            OnnxModel(lone)
    ex.sidecar_path(lone).write_text(json.dumps({**sidecar, "image_size": 64}))
    with pytest.raises(ModelLoadError, match="84 px.*image_size 64"):
        OnnxModel(lone)
    pre = sidecar["preprocessing"]
    for other in ({"resize": "shortest"}, {"mean": [0.5, 0.5, 0.5]},
                  {"std": [s * 1.01 for s in pre["std"]]}, {"mean": pre["mean"][:2]}):
        ex.sidecar_path(lone).write_text(json.dumps({**sidecar, "preprocessing": {**pre, **other}}))
        with pytest.raises(ModelLoadError, match="preprocessing"):
            OnnxModel(lone)
    shutil.copy(ex.sidecar_path(exports("vit", "zero_shot")), ex.sidecar_path(lone))
    with pytest.raises(ModelLoadError, match="another export"):
        OnnxModel(lone)
    lone.write_bytes(b"not an onnx file")
    shutil.copy(ex.sidecar_path(src), ex.sidecar_path(lone))
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        OnnxModel(lone)
    with pytest.raises(ModelLoadError, match="ONNX file not found"):
        OnnxModel(tmp_path / "missing.onnx")


def test_export_user_errors(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "model.onnx"
    code = export.main(argv("vit", "zero_shot", out))
    assert_user_error(code, capsys.readouterr().err, "--output", str(blocker))
    out = tmp_path / "model.onnx"
    code = export.main(argv("vit", "zero_shot", out, "--reference_dir", str(tmp_path / "none")))
    assert_user_error(code, capsys.readouterr().err, "reference folder", str(tmp_path / "none"))
    code = export.main(argv("vit", "zero_shot", tmp_path))
    assert_user_error(code, capsys.readouterr().err, "--output", "is a folder")
    assert not out.exists() and not ex.sidecar_path(out).exists()


def test_help_does_not_import_torch():
    code = ("import sys, export\ntry:\n    export.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--reference_dir" in r.stdout, r.stderr
    assert "TORCH False" in r.stdout


def test_latency_benchmark_smoke(tmp_path, monkeypatch, capsys, warm_python):
    """--quick runs from another folder; each backend's row comes from a process of its own
    (its peak memory its own), the throughput column names the batch it ran, and --keep_onnx
    keeps the exported graphs."""
    from engine.deploy.openvino_runtime import bf16_supported

    spec = importlib.util.spec_from_file_location(
        "benchmark_latency", REPO / "scripts" / "benchmark_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--quick", "--repeats", "1", "--batch", "2", "--json", "latency.json",
                       "--keep_onnx", "graphs", "--python", warm_python.ready()]) == 0
    rows = json.loads((tmp_path / "latency.json").read_text())["rows"]
    assert {(row["mode"], row["backend"]) for row in rows} == {
        (m, b) for m in ("zero_shot", "few_shot") for b in ("torch", "onnxruntime", "openvino")}
    assert {row["precision"] for row in rows if row["backend"] == "openvino"} == (
        {"fp32", "bf16"} if bf16_supported() else {"fp32"})
    assert all(row["ms_per_image_b1"] > 0 and row["images_per_s"] > 0 and row["batch"] == 2
               and row["peak_mib"] > 0 for row in rows)
    # every row's outputs against onnxruntime's: float rounding in fp32 (torch's differ by a
    # little, so the two were really compared), the bf16 drift bounded where the CPU has bf16
    for row in rows:
        fp32 = row["precision"] == "fp32"
        assert row["map_diff"] <= (1e-4 if fp32 else 0.5), row
        assert row["score_diff"] <= (1e-5 if fp32 else 0.5), row
    assert all(0 < row["map_diff"] for row in rows if row["backend"] == "torch")
    pids = [row["pid"] for row in rows]
    assert len(set(pids)) == len(rows) and os.getpid() not in pids
    out = capsys.readouterr().out
    assert "img/s b2" in out and "img/s b8" not in out
    kept = sorted(p.name for p in (tmp_path / "graphs").iterdir())
    assert kept == ["tiny-vit_84_few_shot.onnx", "tiny-vit_84_zero_shot.onnx"]
    assert {row["onnx_file"] for row in rows} == {str(tmp_path / "graphs" / k) for k in kept}


@pytest.mark.parametrize("mode", ["zero_shot", "few_shot"])
def test_predict_with_onnx_writes_what_torch_writes(exports, mode, tmp_path, capsys):
    """predict.py --onnx FILE (no checkpoint, no model flags) = predict.py with torch."""
    import predict

    fx, size = FIXTURES["vit"]
    common = ["--image_dir", str(BOTTLE / "test"), "--recursive", "--save_maps", "--maps_dtype",
              "float32", "--no_report"]
    refs = ["--reference_dir", str(REFS)] if mode == "few_shot" else []
    assert predict.main([*common, "--object_name", "bottle", "--save_path",
                         str(tmp_path / "torch"), *fx.model_args(size), *refs,
                         *(THRESHOLDS if mode == "few_shot" else [])]) == 0
    assert predict.main([*common, "--onnx", str(exports("vit", mode)), "--save_path",
                         str(tmp_path / "onnx")]) == 0, capsys.readouterr().err
    a = json.loads((tmp_path / "torch" / "scores.json").read_text())
    b = json.loads((tmp_path / "onnx" / "scores.json").read_text())
    assert [r["path"] for r in a["images"]] == [r["path"] for r in b["images"]]
    for x, y in zip(a["images"], b["images"]):
        assert abs(x["score"] - y["score"]) <= SCORE_TOL
        assert x.get("anomalous") == y.get("anomalous")  # the sidecar's thresholds apply
        assert (tmp_path / "onnx" / y["heatmap"]).is_file()
    ma, mb = np.load(tmp_path / "torch" / "maps.npz"), np.load(tmp_path / "onnx" / "maps.npz")
    assert max_diff(ma["anomaly_maps"], mb["anomaly_maps"]) <= MAP_TOL
    assert b["mode"] == mode and b["normal_level"] == pytest.approx(a["normal_level"], rel=1e-6) \
        if mode == "few_shot" else b["normal_level"] is None
    assert a["thresholds"]["image"] == b["thresholds"]["image"]
    assert a["thresholds"]["pixel"] == b["thresholds"]["pixel"]
    assert a["heatmap_scale"]["vmin"] == pytest.approx(b["heatmap_scale"]["vmin"], abs=MAP_TOL)
    assert a["heatmap_scale"]["vmax"] == pytest.approx(b["heatmap_scale"]["vmax"], abs=MAP_TOL)
    if mode == "few_shot":  # a pixel threshold: the same masks (up to pixels at the threshold)
        assert a["thresholds"]["pixel"] == 2.5
        for x, y in zip(a["images"], b["images"]):
            ma_, mb_ = (np.asarray(Image.open(tmp_path / d / r["mask"])) > 0
                        for d, r in (("torch", x), ("onnx", y)))
            assert ma_.shape == mb_.shape and (ma_ != mb_).mean() <= 1e-3
        assert any((np.asarray(Image.open(tmp_path / "onnx" / r["mask"])) > 0).any()
                   for r in b["images"])
    # no --object_name: the sidecar's object is named everywhere
    assert a["object_name"] == b["object_name"] == "bottle"
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["object_name"] == "bottle"
    assert json.loads((tmp_path / "onnx" / "run.json").read_text())["config"]["object_name"] == "bottle"
    assert "files of 'bottle'" in (tmp_path / "onnx" / "log.txt").read_text()
    # a file for another object is refused with both names
    code = predict.main([*common, "--onnx", str(exports("vit", mode)), "--object_name", "screw",
                         "--save_path", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "screw" in err and "bottle" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # failed before any result: no new folder


def test_a_threshold_flag_with_onnx_keeps_its_value(exports, tmp_path, capsys):
    """--pixel_threshold with --onnx: the flag's pixel threshold, the sidecar's image one."""
    import predict

    assert predict.main(["--image_dir", str(BOTTLE / "test"), "--recursive", "--no_report",
                         "--no_heatmaps", "--onnx", str(exports("vit", "few_shot")),
                         "--pixel_threshold", "3.25", "--save_path", str(tmp_path / "o")]) == 0
    thr = json.loads((tmp_path / "o" / "scores.json").read_text())["thresholds"]
    assert (thr["image"], thr["pixel"]) == (0.7, 3.25)  # the export recorded 0.7 and 2.5
    assert "command line" in thr["source"] and "image from" in thr["source"]
