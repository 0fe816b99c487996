r"""Benchmark ``prompt_study.py`` against one ``test.py --prompt_dir`` run per variant.

N prompt folders are written (the baseline with one state or template left out each), then, in
this one process, after one untimed test.py run (so both paths are timed warm):
``prompt_study.py --variants`` on all of them (the baseline comes along), and ``test.py
--prompt_dir`` on each folder and on the baseline. Reported: the two wall times, their ratio,
the images through the backbone, the study's cost in separate test.py runs, and the largest
difference between a variant's metrics in the study and in its own test.py run. The model is the
tiny random ViT of the test fixtures, the data the golden MVTec-layout fixture (or ``--data``
with ``--dataset``); both paths run in-process, so neither pays a process start.

Usage:
    python scripts/benchmark_prompt_study.py                 # 16 variants
    python scripts/benchmark_prompt_study.py --variants 8 --json results/prompt_bench.json
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import prompt_study
from prompts import PromptSet
from utils.io import atomic_write_json

from engine.evaluate.prompt_variants import ablations, write_prompt_dir

GOLDEN = REPO / "tests" / "fixtures" / "golden"
MODELS = GOLDEN / "models"


def _load_test_py():
    import importlib.util

    spec = importlib.util.spec_from_file_location("aprilgan_test_py", REPO / "test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", type=int, default=16, help="prompt folders [16]")
    p.add_argument("--data", type=Path, default=GOLDEN / "data" / "mvtec")
    p.add_argument("--dataset", default="mvtec")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    model = ["--model", "tiny-vit", "--config_path", str(MODELS / "tiny-vit.json"),
             "--pretrained", str(MODELS / "tiny-vit-random.pt"), "--image_size", "84",
             "--features_list", "2", "4", "6", "8", "--device", "cpu", "--num_workers", "0",
             "--checkpoint_path", str(MODELS / "linear-random.pth"), "--no_report"]
    common = ["--mode", "zero_shot", "--dataset", a.dataset, "--data_path", str(a.data), *model]
    with tempfile.TemporaryDirectory(prefix="prompt-bench-") as tmp:
        tmp = Path(tmp)
        chosen = ablations(PromptSet.load(None), ["states", "templates"])[:a.variants]
        if len(chosen) < a.variants:
            raise SystemExit(f"only {len(chosen)} ablations of the shipped prompts exist")
        folders = [write_prompt_dir(v, tmp / "variants" / v.name) for v in chosen]
        test_py = _load_test_py()
        # one untimed run first: both paths are then timed warm (imports, caches, first calls)
        assert test_py.main([*common, "--save_path", str(tmp / "warmup")]) == 0
        t0 = time.perf_counter()
        assert prompt_study.main([*common, "--save_path", str(tmp / "study"), "--variants",
                                  *map(str, folders)]) == 0
        t_study = time.perf_counter() - t0
        study = json.loads((tmp / "study" / "study.json").read_text())
        t0 = time.perf_counter()
        separate = {}
        for name, folder in [("baseline", None)] + [(f.name, f) for f in folders]:
            extra = ["--prompt_dir", str(folder)] if folder else []
            out = tmp / "test" / name
            assert test_py.main([*common, "--save_path", str(out), *extra]) == 0
            separate[name] = json.loads((out / "metrics.json").read_text())
        t_sep = time.perf_counter() - t0
    diff = 0.0
    for row in study["variants"]:
        ref = separate[row["name"]]["per_category"]
        for cat, m in row["per_category"].items():
            for k, v in m.items():
                if v is not None and ref[cat].get(k) is not None and math.isfinite(v):
                    diff = max(diff, abs(v - ref[cat][k]))
    runs = len(separate)
    per_run = t_sep / runs
    res = {"variants": a.variants, "evaluated": runs, "study_s": round(t_study, 2),
           "separate_s": round(t_sep, 2), "ratio": round(t_sep / t_study, 2),
           "study_in_test_py_runs": round(t_study / per_run, 2),
           "backbone_images_study": study["settings"]["backbone_images"],
           "max_abs_metric_diff": diff, "equal_1e-4": diff <= 1e-4,
           "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}
    if a.json:
        atomic_write_json(a.json, res)
    print(json.dumps(res, indent=1))
    print(f"prompt study: {runs} prompt sets in {t_study:.1f} s vs {t_sep:.1f} s for {runs} "
          f"test.py runs ({t_sep / t_study:.1f}x; the study costs {t_study / per_run:.1f} "
          f"test.py runs); metrics equal within 1e-4: {'yes' if diff <= 1e-4 else 'NO'} "
          f"(max |diff| {diff:.1e})")
    return 0 if diff <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
