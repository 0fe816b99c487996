"""``scripts/benchmark_metrics.py`` runs at a tiny size from another folder; its numbers are not
timed here (the speed target lives in the benchmark), only its output format and equal values."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_metrics_runs_from_any_folder(tmp_path, warm_python):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [warm_python.ready(), str(REPO / "scripts" / "benchmark_metrics.py"), "--n", "4", "--size", "32",
         "--repeats", "1", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=warm_python.env(),
    )
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    gpu = r"\d+\.\dx" if torch.cuda.is_available() else "n/a"
    assert re.fullmatch(rf"speed-up vs scikit-learn: CPU \d+\.\dx, GPU {gpu}", last), last
    res = json.loads(out.read_text())
    assert res["values_equal"] and res["n"] == 4 and res["pixels"] == 4 * 32 * 32
    assert res["max_abs_diff"]["cpu"]["pro"] == 0.0
