"""The OpenVINO runtime for exported graphs: fp32 equals onnxruntime on the tiny ViT and ResNet,
zero- and few-shot, at any batch; predict.py --runtime openvino writes what onnxruntime writes;
bf16 runs where the CPU has it (and is refused with one line where not); clear errors for a
missing package and for flags that do not apply."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_export import BOTTLE, FIXTURES, MAP_TOL, SCORE_TOL, TESTS, argv

from errors import ConfigError, ModelLoadError

from engine.deploy import export as ex
from engine.deploy import openvino_runtime as ov_runtime
from engine.deploy.onnx_runtime import OnnxModel


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """(arch, mode) -> an exported .onnx (torchscript exporter, each made once)."""
    import export

    root, done = tmp_path_factory.mktemp("ov"), {}

    def get(arch: str, mode: str):
        if (arch, mode) not in done:
            out = root / f"{arch}_{mode}.onnx"
            assert export.main(argv(arch, mode, out, "--exporter", "torchscript",
                                    "--no_verify", "--image_threshold", "0.5",
                                    "--pixel_threshold", "2.0")) == 0
            done[(arch, mode)] = out
        return done[(arch, mode)]
    return get


def _batch(model) -> np.ndarray:
    return np.stack([model.preprocess(p) for p in TESTS])


@pytest.mark.parametrize("mode", ["zero_shot", "few_shot"])
@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_fp32_equals_onnxruntime_at_any_batch(graphs, arch, mode):
    path = graphs(arch, mode)
    ort, ov = OnnxModel(path, "cpu"), ov_runtime.OpenVinoModel(path, "cpu", "fp32")
    x = _batch(ort)
    a, b = ort.run(x), ov.run(x)
    assert b["anomaly_map"].shape == (len(TESTS), FIXTURES[arch][1], FIXTURES[arch][1])
    assert np.abs(a["anomaly_map"] - b["anomaly_map"]).max() <= MAP_TOL
    assert np.abs(a["map_max"] - b["map_max"]).max() <= MAP_TOL
    for k in ("image_score", "text_score"):
        assert np.abs(a[k] - b[k]).max() <= SCORE_TOL, k
    ones = np.concatenate([ov.run(x[i:i + 1])["anomaly_map"] for i in range(len(x))])
    assert np.abs(ones - b["anomaly_map"]).max() <= MAP_TOL  # dynamic batch
    assert ov.run(x[:0])["image_score"].shape == (0,)


def test_predict_with_openvino_writes_what_onnxruntime_writes(graphs, tmp_path, capsys):
    import predict

    path = graphs("vit", "few_shot")
    common = ["--image_dir", str(BOTTLE / "test"), "--recursive", "--onnx", str(path),
              "--no_report", "--no_heatmaps"]
    assert predict.main([*common, "--save_path", str(tmp_path / "ort")]) == 0
    assert predict.main([*common, "--runtime", "openvino", "--save_path",
                         str(tmp_path / "ov")]) == 0, capsys.readouterr().err
    a = json.loads((tmp_path / "ort" / "scores.json").read_text())["images"]
    b = json.loads((tmp_path / "ov" / "scores.json").read_text())["images"]
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b):
        assert abs(x["score"] - y["score"]) <= SCORE_TOL and x["anomalous"] == y["anomalous"]
    assert "openvino" in (tmp_path / "ov" / "log.txt").read_text()


def test_bf16_where_the_cpu_has_it(graphs):
    import openvino

    path = graphs("vit", "zero_shot")
    caps = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert ov_runtime.bf16_supported() == ("BF16" in caps)  # what OpenVINO reports, either way
    if not ov_runtime.bf16_supported():
        with pytest.raises(ConfigError, match="no bf16 support"):
            ov_runtime.OpenVinoModel(path, "cpu", "bf16")
        return
    ort, ov = OnnxModel(path, "cpu"), ov_runtime.OpenVinoModel(path, "cpu", "bf16")
    x = _batch(ort)
    drift = np.abs(ort.run(x)["anomaly_map"] - ov.run(x)["anomaly_map"]).max()
    assert np.isfinite(drift) and drift < 0.5  # bf16: 8 bits of mantissa, maps in [0, 4]


def test_missing_package_and_flags_that_do_not_apply(graphs, monkeypatch):
    import builtins

    from engine.config import PredictConfig
    real = builtins.__import__

    def no_openvino(name, *a, **k):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("no module named openvino")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(ModelLoadError, match="OpenVINO is not installed"):
        ov_runtime.OpenVinoModel(graphs("vit", "zero_shot"), "cpu")
    monkeypatch.undo()
    base = dict(image_dir="x", object_name="bottle", checkpoint_path="c.pth")
    with pytest.raises(ConfigError, match="applies to --onnx"):
        PredictConfig(**base, runtime="openvino")
    with pytest.raises(ConfigError, match="needs --runtime openvino"):
        PredictConfig(**base, onnx="m.onnx", precision="bf16")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        ov_runtime.OpenVinoModel(graphs("vit", "zero_shot"), "cuda")
    assert ex.OUTPUTS  # the runtime reads the same outputs as the exporter writes


def test_a_sidecar_of_another_export_is_refused_as_onnxruntime_refuses_it(graphs, tmp_path):
    """Both runtimes read the export id the graph carries (ONNX metadata ``aprilgan.export_id``)
    and refuse, with the same words, a sidecar of another export of the same object and size; a
    sidecar differing only in its export id too; the graph's own sidecar, and a graph that
    carries no id (nothing to check), are taken."""
    import shutil

    import onnx

    src, other = graphs("vit", "zero_shot"), graphs("vit", "few_shot")
    lone = tmp_path / "lone.onnx"
    shutil.copy(src, lone)
    sidecar = json.loads(ex.sidecar_path(src).read_text())

    def both(what: str):
        for runtime in (lambda p: OnnxModel(p, "cpu"), ov_runtime.OpenVinoModel):
            with pytest.raises(ModelLoadError) as err:
                runtime(lone)
            yield str(err.value)

    for text in (ex.sidecar_path(other).read_text(),
                 json.dumps({**sidecar, "export_id": "0" * 32})):
        ex.sidecar_path(lone).write_text(text)
        a, b = both(text)
        assert a == b == (f"{lone} and its sidecar disagree: the sidecar was written by another "
                          "export (graph of 'bottle' at 84 px); export again")
    ex.sidecar_path(lone).write_text(json.dumps(sidecar))
    assert ov_runtime.OpenVinoModel(lone).mode == OnnxModel(lone, "cpu").mode == "zero_shot"
    graph = onnx.load(str(src))
    assert {p.key for p in graph.metadata_props} >= {"aprilgan.export_id"}
    del graph.metadata_props[:]
    onnx.save(graph, str(lone))
    ex.sidecar_path(lone).write_text(json.dumps({**sidecar, "export_id": "0" * 32}))
    assert ov_runtime.OpenVinoModel(lone).mode == OnnxModel(lone, "cpu").mode == "zero_shot"


def test_devices_other_than_the_cpu_are_refused_whatever_their_name(graphs):
    """OpenVINO's own AUTO device sorts before 'cpu' and GPU after it: both are refused; ' CPU '
    as a command line may give it is the CPU."""
    path = graphs("vit", "zero_shot")
    for device in ("AUTO", "GPU"):
        with pytest.raises(ConfigError, match=f"--device {device}: the OpenVINO runtime runs on "
                                              "the CPU here"):
            ov_runtime.OpenVinoModel(path, device)
    assert ov_runtime.OpenVinoModel(path, " CPU ").providers == ["OpenVINO CPU (fp32)"]


def test_only_bf16_needs_the_cpus_bf16(graphs, monkeypatch):
    """On a CPU without bf16 (as OpenVINO reports it, made so here on any CPU) fp32 loads and
    bf16 is refused, given as a command line gives it (a new string, not this file's literal)."""
    path = graphs("vit", "zero_shot")
    monkeypatch.setattr(ov_runtime, "bf16_supported", lambda: False)
    assert ov_runtime.OpenVinoModel(path, "cpu", "fp32").precision == "fp32"
    with pytest.raises(ConfigError, match="no bf16 support"):
        ov_runtime.OpenVinoModel(path, "cpu", "".join(["bf", "16"]))


@pytest.mark.parametrize("error, said", [(RuntimeError("bad graph\nat node 3"), "bad graph"),
                                         (RuntimeError("x" * 400), "x" * 300),
                                         (RuntimeError(""), "RuntimeError")])
def test_a_graph_openvino_cannot_load_is_one_line(graphs, monkeypatch, error, said):
    """Whatever OpenVINO raises while reading the graph: one line naming the file and the first
    line of its message, cut at 300 characters (or, when it has none, the error's type)."""
    class _Core:
        def read_model(self, path):
            raise error

    path = graphs("vit", "zero_shot")
    monkeypatch.setattr(ov_runtime, "_ov", lambda: type("ov", (), {"Core": _Core}))
    with pytest.raises(ModelLoadError) as err:
        ov_runtime.OpenVinoModel(path, "cpu")
    assert str(err.value) == f"OpenVINO cannot load {path}: {said}"
