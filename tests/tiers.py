"""The suite's two tiers.

The end-to-end tier is the files whose tests run the commands (an entry point's ``main()`` on
files, a subprocess, torchrun, a bash script, a server, a browser); their tests carry the mark
``e2e``. Every other file is the unit tier: it imports the module it tests and calls it.

    python -m pytest -q -m "not e2e" tests      # the fast tier alone
    python -m pytest -q -m e2e tests            # the end-to-end tier alone

Under ``pytest -n`` the end-to-end files are handed out first and the unit files last.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
E2E_FILES = frozenset({
    "test_benchmark_sets.py", "test_benchmarks.py", "test_calibration.py", "test_cli_errors.py",
    "test_distributed.py", "test_export.py", "test_few_shot.py", "test_first_hour.py",
    "test_metrics_benchmark.py", "test_mixed_precision.py", "test_mutation_check.py",
    "test_next_steps.py", "test_no_split_sets.py", "test_onednn_linear.py", "test_openvino.py",
    "test_predict.py", "test_predict_guards.py", "test_prepare_index_folder.py",
    "test_prompt_study.py", "test_protocol_speed.py", "test_report.py", "test_report_aspect.py",
    "test_report_explains.py", "test_report_galleries.py", "test_report_image_level.py",
    "test_report_links.py", "test_report_study.py", "test_resnet.py", "test_resnet_sizes.py",
    "test_scripts.py", "test_serve.py", "test_serve_batching.py", "test_serve_page.py",
    "test_train.py", "test_user_faults.py", "test_warm_python.py", "test_watch.py",
    "test_zero_shot.py",
})


def pytest_collection_modifyitems(config, items) -> None:
    """Mark the tests of ``E2E_FILES`` ``e2e``; a name there that is no test file is an error
    (a renamed file would otherwise drop out of its tier unnoticed)."""
    missing = sorted(n for n in E2E_FILES if not (TESTS / n).is_file())
    if missing:
        raise pytest.UsageError(f"tests/tiers.py E2E_FILES names no file: {missing}")
    for item in items:
        if item.path.name in E2E_FILES:
            item.add_marker(pytest.mark.e2e)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest -n: the workers take the files in this order, so the long end-to-end files
        # go first and the quick unit files last, to fill in until both workers are done
        items.sort(key=lambda item: item.path.name not in E2E_FILES)
