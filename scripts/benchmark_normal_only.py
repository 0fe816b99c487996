"""Benchmark training from normal images only (``train.py --synthesize_anomalies``) on synthetic data.

On a synthetic dataset pair drawn with generator seed ``--seed`` (``tools.synthetic``, MVTec and
VisA layouts), for each layout it evaluates zero-shot on the layout's own test split (whose
defects come from the generator, which the synthesizer shares no code with) three sets of
projections that all start from the same random weights (``linear-random.pth``):

* untrained: those random weights as they are;
* normal-only: trained on the layout's ``train/good`` images (``--train_split train``) with
  synthesized anomalies, never seeing a generator defect;
* supervised: the paper's recipe, trained on the *other* layout's labelled test split (paper
  epochs: 3 on MVTec for VisA, 15 on VisA for MVTec).

It prints one table (pixel and image metrics, in %, untrained / normal-only / supervised side by
side), the per-layout gains, and as its last line
``normal-only vs untrained: auroc_px +X, pro +Y`` (percentage points, the mean over both layouts
of each layout's mean over categories). Model: the tiny random ViT of the test fixtures at 84 px
(``--image_size``), so the numbers say whether the training signal transfers, not how well a
real CLIP does. A few minutes on 2 CPU cores.

    python scripts/benchmark_normal_only.py --seed 100
    python scripts/benchmark_normal_only.py --seed 101 --epochs 6 --out /tmp/bench101
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train
from datasets.sets.indexing import prepare
from tools.synthetic import CATEGORIES, generate_mvtec, generate_visa

from engine.config import PAPER_EPOCHS

MODELS = REPO / "tests" / "fixtures" / "golden" / "models"
RANDOM_INIT = MODELS / "linear-random.pth"
VARIANTS = ("untrained", "normal-only", "supervised")
COLUMNS = (("auroc_px", "pixel AUROC"), ("pro", "PRO"), ("ap_px", "pixel AP"),
           ("auroc_sp", "image AUROC"), ("ap_sp", "image AP"))
OTHER = {"mvtec": "visa", "visa": "mvtec"}


def _test_py():
    """The repository's test.py as a module (``import test`` may give the stdlib package)."""
    spec = importlib.util.spec_from_file_location("aprilgan_test_cli", REPO / "test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


test_py = _test_py()


def model_args(image_size: int) -> list[str]:
    return ["--model", "tiny-vit", "--config_path", str(MODELS / "tiny-vit.json"),
            "--pretrained", str(MODELS / "tiny-vit-random.pt"), "--image_size", str(image_size),
            "--features_list", "2", "4", "6", "8", "--device", "cpu"]


def quiet(fn, argv: list[str], what: str) -> None:
    """Run ``fn(argv)`` (a script's main) with its console output captured; exit on failure."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = fn(argv)
    if rc != 0:
        sys.stderr.write(out.getvalue()[-4000:])
        sys.exit(f"benchmark_normal_only: {what} failed (exit {rc})")


def make_data(out: Path, a: argparse.Namespace) -> dict[str, Path]:
    """Both synthetic layouts of generator seed ``a.seed`` under ``out``, indexed."""
    roots = {"mvtec": generate_mvtec(out / "mvtec", a.mvtec_categories, a.n_train, a.n_test,
                                     a.n_test, 96, a.seed, overwrite=True),
             "visa": generate_visa(out / "visa", a.visa_categories, a.n_train, a.n_test,
                                   a.n_test, (120, 90), a.seed + 1, overwrite=True)}
    with contextlib.redirect_stderr(io.StringIO()):  # "standard categories not found" notices
        for kind, root in roots.items():
            prepare(kind, root)
    return roots


def train_run(save: Path, data: Path, dataset: str, a: argparse.Namespace, extra: list[str]) -> Path:
    args = ["--dataset", dataset, "--train_data_path", str(data), "--save_path", str(save),
            *model_args(a.image_size), "--batch_size", str(a.batch_size), "--init_checkpoint",
            str(RANDOM_INIT), "--seed", str(a.train_seed), *extra]
    quiet(train.main, args, f"training {save.name}")
    return max(save.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))


def eval_run(save: Path, data: Path, dataset: str, ckpt: Path, a: argparse.Namespace) -> dict:
    args = ["--mode", "zero_shot", "--dataset", dataset, "--data_path", str(data),
            "--checkpoint_path", str(ckpt), "--save_path", str(save), *model_args(a.image_size),
            "--batch_size", str(a.batch_size), "--no_mvtec_aupro"]
    quiet(test_py.main, args, f"evaluating {save.name}")
    return json.loads((save / "metrics.json").read_text())


def layout_results(layout: str, roots: dict[str, Path], work: Path, a: argparse.Namespace) -> dict:
    """{variant: metrics.json} of one layout's zero-shot evaluation."""
    other = OTHER[layout]
    normal = ["--train_split", "train", "--synthesize_anomalies", str(a.synthesize_anomalies),
              "--epoch", str(a.epochs), "--learning_rate", str(a.learning_rate),
              "--aug_rate", str(a.aug_rate)]
    ckpts = {"untrained": RANDOM_INIT,
             "normal-only": train_run(work / f"train_{layout}_normal_only", roots[layout],
                                      layout, a, normal),
             "supervised": train_run(work / f"train_{other}_test_split", roots[other], other, a,
                                     ["--epoch", str(a.supervised_epochs or PAPER_EPOCHS[other])])}
    return {v: eval_run(work / f"eval_{layout}_{v}", roots[layout], layout, ckpts[v], a)
            for v in VARIANTS}


def table(results: dict[str, dict]) -> list[str]:
    """Markdown rows: one per (layout, category) and a mean per layout; cells U / N / S in %."""
    head = "| layout | category | " + " | ".join(f"{n} (U / N / S)" for _, n in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (2 + len(COLUMNS))]
    for layout, res in results.items():
        cats = list(res["untrained"]["per_category"])
        for cat in [*cats, "mean"]:
            cells = []
            for key, _ in COLUMNS:
                vals = [(res[v]["mean"] if cat == "mean" else res[v]["per_category"][cat])[key]
                        for v in VARIANTS]
                cells.append(" / ".join(f"{100 * x:.1f}" for x in vals))
            name = f"**{cat}**" if cat == "mean" else cat
            lines.append(f"| {layout} | {name} | " + " | ".join(cells) + " |")
    return lines


def gains(results: dict[str, dict], variant: str = "normal-only") -> dict[str, dict[str, float]]:
    """{layout: {metric: points over untrained}} of the per-layout means."""
    return {layout: {k: 100 * (res[variant]["mean"][k] - res["untrained"]["mean"][k])
                     for k, _ in COLUMNS} for layout, res in results.items()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/benchmark_normal_only.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=100, help="generator seed of the synthetic data")
    p.add_argument("--out", type=Path, default=None,
                   help="working folder (data, runs, results.json) [default: a temporary one]")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the normal-only training [default: train.py's default]")
    p.add_argument("--synthesize_anomalies", type=float, default=0.5, help="P of train.py")
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--aug_rate", type=float, default=0.2, help="mosaic rate (MVTec layout)")
    p.add_argument("--mvtec_categories", nargs="+", default=["bottle", "grid", "screw"],
                   choices=sorted(CATEGORIES), metavar="CAT")
    p.add_argument("--visa_categories", nargs="+", default=["candle", "pcb1", "capsule"],
                   choices=sorted(CATEGORIES), metavar="CAT")
    p.add_argument("--n_train", type=int, default=20, help="normal train images per category")
    p.add_argument("--n_test", type=int, default=6,
                   help="normal and anomalous test images per category (each)")
    p.add_argument("--image_size", type=int, default=84)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--train_seed", type=int, default=111, help="train.py --seed")
    p.add_argument("--supervised_epochs", type=int, default=None,
                   help="epochs of the supervised runs [default: the paper's, 3 on MVTec, 15 on VisA]")
    a = p.parse_args(argv)
    if a.epochs is None:
        a.epochs = train.parse_args(["--train_split", "train", "--synthesize_anomalies",
                                     str(a.synthesize_anomalies)]).epoch
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        work = a.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_no_")))
        roots = make_data(work / "data", a)
        results = {layout: layout_results(layout, roots, work / "runs", a)
                   for layout in ("mvtec", "visa")}
        g = gains(results)
        (work / "results.json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(a).items()}, "results": results, "gains": g},
            indent=1))
    print(f"normal-only training benchmark: tiny random ViT at {a.image_size} px, synthetic data "
          f"(generator seed {a.seed}; {a.n_train} train, {a.n_test}+{a.n_test} test images per "
          f"category); normal-only: P {a.synthesize_anomalies}, {a.epochs} epochs, lr "
          f"{a.learning_rate}, aug_rate {a.aug_rate}")
    print("U = untrained (linear-random.pth), N = normal-only (own train/good + synthesized "
          "anomalies), S = supervised (other layout's test split); zero-shot, %; the zero-shot "
          "image score is the text score of the image embedding (METHOD §4), so the projections "
          "do not change the image metrics\n")
    print("\n".join(table(results)) + "\n")
    for layout, d in g.items():
        print(f"{layout}: normal-only vs untrained: " +
              ", ".join(f"{k} {v:+.1f}" for k, v in d.items()))
    print(f"({time.time() - t0:.0f} s)")
    mean = {k: sum(d[k] for d in g.values()) / len(g) for k in ("auroc_px", "pro")}
    print(f"normal-only vs untrained: auroc_px {mean['auroc_px']:+.1f}, pro {mean['pro']:+.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
