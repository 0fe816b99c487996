"""The benchmark scripts run (tiny sizes) and write their JSON; their numbers are not checked
here -- speed targets live in the benchmarks themselves, not in timed unit tests."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "fixtures" / "golden" / "models" / "tiny-vit.json"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def load_script(name: str):
    """A script of scripts/ as a module (its ``main(argv)`` runs in this process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_inference_tiny(tmp_path):
    out = tmp_path / "inference.json"
    bench = load_script("benchmark_inference")
    assert bench.main(["--device", "cpu", "--n_images", "4", "--batch_size", "2", "--model",
                       "tiny-vit", "--config_path", str(TINY), "--image_size", "84",
                       "--features_list", "2", "4", "6", "8", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["images"] == 4 and res["images_per_s_total"] > 0
    assert set(res["images_per_s"]) == {"backbone", "head", "memory_banks", "full_maps"}


def test_benchmark_pro_same_value(tmp_path):
    out = tmp_path / "pro.json"
    r = run("scripts/benchmark_pro.py", "--n-maps", "3", "--size", "32", "--repeats", "1",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(out.read_text())["results"]
    assert res["n_maps"] == 3 and res["size"] == 32 and not res["reference_extrapolated"]
    assert res["abs_diff"] <= 1e-6 and res["pro_fast"] == res["pro_reference"]


def test_benchmark_prompt_study_smoke(tmp_path, capsys):
    """One prompt folder: the study's metrics equal the separate test.py runs (in-process)."""
    bench = load_script("benchmark_prompt_study")
    out = tmp_path / "bench.json"
    assert bench.main(["--variants", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["evaluated"] == 2 and res["equal_1e-4"] and res["max_abs_metric_diff"] <= 1e-4
    assert res["backbone_images_study"] == 12  # the fixture's 12 test images, once
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("prompt study: 2 prompt")
