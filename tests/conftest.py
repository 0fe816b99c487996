"""Shared pieces of the test suite: paths of the golden fixtures, the repository's ``test.py``
loaded as a module, and helpers that run the command-line entry points in-process.

The golden root is ``$APRILGAN_GOLDEN`` or ``tests/fixtures/golden``; every test derives the
image size (from the expected ``anomaly_maps``), the categories and the file names from that
folder, so another fixture of the same structure works unchanged. Stage lists are constants:
the tiny ViT has 8 blocks (``2 4 6 8``), the ResNet 4 layers (``1 2 3 4``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "").isdigit():
    # pytest -n N: the CPUs are shared among the N workers (torch's and the scripts' threads),
    # set before torch starts its thread pool; busy threads of two workers on one core would
    # slow both. The tests hold for any thread count (README, "Any CPU").
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1)
                                            // max(1, int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

GOLDEN = Path(os.environ.get("APRILGAN_GOLDEN", REPO / "tests" / "fixtures" / "golden")).resolve()
VIT_STAGES = [2, 4, 6, 8]
RN_STAGES = [1, 2, 3, 4]
DATASET_NAMES = ("mvtec", "visa")
# files that a run may leave behind when it fails (they describe the attempt, not a result)
ALLOWED_AFTER_ERROR = {"log.txt", "log.failed.txt"}


def load_repo_test_module():
    """The repository's ``test.py`` (``import test`` could give the stdlib ``test`` package)."""
    name = "aprilgan_test_cli"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "test.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _model_config(models: Path) -> Path:
    """The open_clip model-config JSON of a fixture's ``models/`` folder."""
    for p in sorted(models.glob("*.json")):
        try:
            cfg = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(cfg, dict) and "vision_cfg" in cfg:
            return p
    raise FileNotFoundError(f"no open_clip model config in {models}")


def _one(models: Path, pattern: str) -> Path:
    found = sorted(models.glob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} in {models}")
    return found[0]


@dataclass
class Fixture:
    """One golden fixture family (ViT or ResNet) and the flags that reproduce it."""

    name: str
    expected: Path
    models: Path
    stages: list[int]
    prefix: str = ""  # expected-file prefix ("rn_" for the ResNet set)
    datasets: tuple[str, ...] = DATASET_NAMES
    extra: dict = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return _model_config(self.models)

    @property
    def model_name(self) -> str:
        return self.config.stem

    @property
    def weights(self) -> Path:
        return _one(self.models, "*-random.pt")

    @property
    def checkpoint(self) -> Path:
        return _one(self.models, "linear*.pth")

    def data(self, ds: str) -> Path:
        return GOLDEN / "data" / ds

    def expected_npz(self, ds: str, mode: str = "zero_shot") -> Path:
        suffix = "zero_shot" if mode == "zero_shot" else "few_shot_k2"
        return self.expected / f"{self.prefix}{ds}_{suffix}.npz"

    def expected_metrics(self, ds: str, mode: str = "zero_shot") -> Path:
        suffix = "zero_shot" if mode == "zero_shot" else "few_shot_k2"
        return self.expected / f"{self.prefix}{ds}_{suffix}_metrics.json"

    def refs(self, ds: str) -> Path:
        return self.expected / f"{self.prefix}{ds}_few_shot_k2_refs.json"

    def image_size(self, ds: str = "mvtec") -> int:
        """Run size S, read from the expected maps [N, S, S]."""
        for mode in ("zero_shot", "few_shot"):
            p = self.expected_npz(ds, mode)
            if p.is_file():
                with np.load(p) as z:
                    return int(z["anomaly_maps"].shape[-1])
        raise FileNotFoundError(f"no expected npz for {ds} in {self.expected}")

    def model_args(self, image_size: int | None = None, stages: list[int] | None = None) -> list[str]:
        """Model flags of test.py (weights, config, size, stages, checkpoint)."""
        s = stages or self.stages
        return ["--model", self.model_name, "--config_path", str(self.config),
                "--pretrained", str(self.weights), "--checkpoint_path", str(self.checkpoint),
                "--image_size", str(image_size or self.image_size()),
                "--features_list", *map(str, s), "--few_shot_features", *map(str, s),
                "--device", "cpu", "--num_workers", "0"]

    def args(self, ds: str, save: Path, mode: str = "zero_shot", *extra: str,
             report: bool = False) -> list[str]:
        """Full test.py argv for dataset ``ds`` (image size from that dataset's expected maps).

        Without ``report`` the run writes no report.html (``--no_report``): about 1 s of plots
        per run that only the tests of the report look at (they pass ``report=True``)."""
        quiet = [] if report or "--no_report" in extra else ["--no_report"]
        return ["--mode", mode, "--dataset", ds, "--data_path", str(self.data(ds)),
                "--save_path", str(save), *self.model_args(self.image_size(ds)), *extra, *quiet]


VIT = Fixture("vit", GOLDEN / "expected", GOLDEN / "models", VIT_STAGES)
RN = Fixture("resnet", GOLDEN / "resnet" / "expected", GOLDEN / "resnet" / "models", RN_STAGES,
             prefix="rn_")


def require(*paths: Path) -> None:
    """Skip the calling test when a fixture file is absent (another golden set may lack it)."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        pytest.skip(f"fixture files missing: {', '.join(missing)}")


@pytest.fixture(autouse=True)
def seeded_generators():
    """Every test starts from the same global RNG state: no result may depend on chance."""
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


pytest_plugins = [
    "tiers",  # the e2e mark of the end-to-end files (tests/tiers.py)
    "session_processes",  # the warm fork server and background work (tests/session_processes.py)
]


@pytest.fixture(scope="session")
def testpy():
    return load_repo_test_module()


def run_test_main(argv: list[str]) -> int:
    """``test.main(argv)``; argparse's SystemExit becomes its exit status."""
    mod = load_repo_test_module()
    try:
        return mod.main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        return e.code if isinstance(e.code, int) else 1


def run_prepare(kind: str, root: Path) -> subprocess.CompletedProcess:
    """``python -m datasets.prepare KIND ROOT`` as a real process, from the repository root."""
    return subprocess.run([sys.executable, "-m", "datasets.prepare", kind, str(root)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def assert_user_error(code: int, err: str, *names: str) -> str:
    """Exit status 2, exactly one ``error:`` line naming every ``names``, no traceback."""
    assert code == 2, f"exit status {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [l.strip() for l in err.replace("\r", "\n").splitlines() if l.strip().startswith("error:")]
    assert len(lines) == 1, f"expected one 'error:' line, got:\n{err}"
    for n in names:
        assert str(n) in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def assert_no_results(save: Path) -> None:
    """A failed run leaves no metrics or partial result files in ``save``."""
    if not save.exists():
        return
    left = {p.relative_to(save).as_posix() for p in save.rglob("*")}
    assert left <= ALLOWED_AFTER_ERROR, f"files left in {save}: {sorted(left - ALLOWED_AFTER_ERROR)}"
    failed = save / "log.failed.txt"
    if failed.exists():  # kept only to say why: never empty
        text = failed.read_text()
        assert "error: " in text and "command: " in text, text


def copy_dataset(ds: str, dst: Path, with_meta: bool = True) -> Path:
    """Copy a fixture dataset folder to ``dst`` (optionally without meta.json)."""
    ignore = None if with_meta else shutil.ignore_patterns("meta.json")
    shutil.copytree(GOLDEN / "data" / ds, dst, ignore=ignore)
    return dst


def load_predictions(path: Path) -> dict:
    """predictions.npz (or an expected npz) as a dict of arrays plus ``index`` {img_path: row}."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["index"] = {str(p): i for i, p in enumerate(out["img_paths"])}
    return out


def aligned(ours: dict, exp: dict, key: str, exp_key: str | None = None):
    """(ours[key], exp[exp_key]) reordered to the expected img_path order."""
    assert set(ours["index"]) == set(exp["index"]), "different image sets"
    order = [ours["index"][str(p)] for p in exp["img_paths"]]
    return ours[key][order], exp[exp_key or key]


def expected_metrics(path: Path) -> dict[str, dict[str, float]]:
    """{category or 'mean': {metric: value}} of a fixture metrics JSON (``aupro`` -> ``pro``)."""
    raw = json.loads(path.read_text())
    table = raw.get("metrics", raw)
    return {c: {("pro" if k == "aupro" else k): v for k, v in m.items()} for c, m in table.items()}


def compare_metrics(ours_json: Path, expected_json: Path, tol: float, pro_tol: float) -> None:
    """Every fixture metric, per category and mean, within ``tol`` (``pro`` within ``pro_tol``).

    ``pro`` is a step function of the maps (a 200-point threshold grid from the category's
    minimum and maximum), so map differences of float rounding (a one-ulp difference in the
    text features, times 100, whose pattern depends on the CPU's kernels) can move a pixel
    across a threshold. A ``pro`` outside ``pro_tol`` is accepted only when the run saved its
    predictions and all of this holds, so the residual is the maps' rounding and nothing else:
    our maps equal the expected ones within the map tolerance (1e-4), ``metrics.pro`` gives the
    released value on the expected maps (1e-6), and our reported ``pro`` is ``metrics.pro`` of
    our own maps (1e-9).
    """
    ours = json.loads(ours_json.read_text())
    table = {**ours["per_category"], "mean": ours["mean"]}
    exp = expected_metrics(expected_json)
    assert set(exp) == set(table)
    bad, pro_off = [], []
    for c, metrics in exp.items():
        for k, v in metrics.items():
            t = pro_tol if k == "pro" else tol
            if not abs(table[c][k] - v) <= t:
                (pro_off if k == "pro" else bad).append(
                    (c, f"{c}/{k}: ours {table[c][k]:.8f} expected {v:.8f}"))
    bad = [b for _, b in bad]
    if pro_off:
        bad += _unexplained_pro(ours_json.parent / "predictions.npz", expected_json, table, exp,
                                pro_off)
    assert not bad, "; ".join(bad)


def _unexplained_pro(ours_npz: Path, expected_json: Path, table: dict, exp: dict,
                     off: list) -> list[str]:
    """The ``pro`` differences that map rounding does not explain (see ``compare_metrics``)."""
    npz = expected_json.with_name(expected_json.name.replace("_metrics.json", ".npz"))
    if not ours_npz.is_file() or not npz.is_file():
        return [msg for _, msg in off]
    from metrics import pro

    ours, expd = load_predictions(ours_npz), load_predictions(npz)
    maps, emaps = aligned(ours, expd, "anomaly_maps")
    out = []
    cats = [c for c, _ in off if c != "mean"]
    for c, msg in off:
        if c == "mean":  # explained when every category's pro is
            mean = np.mean([table[k]["pro"] for k in table if k != "mean"])
            if not abs(mean - table["mean"]["pro"]) <= 1e-9 or not cats:
                out.append(msg)
            continue
        i = expd["cls_names"] == c
        masks = expd["gt_masks"][i]
        if not (np.abs(maps[i] - emaps[i]).max() <= 1e-4
                and abs(pro(masks, emaps[i]) - exp[c]["pro"]) <= 1e-6
                and abs(pro(masks, maps[i]) - table[c]["pro"]) <= 1e-9):
            out.append(msg + " (not explained by map rounding)")
    return out


@pytest.fixture
def count_backbone(monkeypatch):
    """Counts the images that go through ClipBackbone.forward: ``count_backbone["n"]``."""
    from models.backbone import ClipBackbone

    seen = {"n": 0}
    original = ClipBackbone.forward

    def forward(self, images):
        seen["n"] += images.shape[0]
        return original(self, images)

    monkeypatch.setattr(ClipBackbone, "forward", forward)
    return seen
