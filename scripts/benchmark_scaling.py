r"""Images/s of test.py and predict.py with 1 process and with N processes (torchrun).

    python scripts/benchmark_scaling.py                        # tiny model, synthetic data, CPU
    python scripts/benchmark_scaling.py --nproc 4 --model ViT-B-16 --pretrained none \
        --image_size 224 --features_list 3 6 9 12              # on a machine with 4 GPUs

Each command runs as a real process (torchrun for N > 1) on a synthetic MVTec-layout dataset
(``--n_test`` images per category) and a folder of the same images for predict.py; the time
of a run is its own report (``timings.json`` / the log), and the last line reads
``scaling test.py: 1.00x -> 1.8x with 2 processes; predict.py: ...``. On a CPU machine the
processes share the cores, so expect little gain; on N GPUs each process takes one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TINY = REPO / "tests" / "fixtures" / "golden" / "models"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, args: list[str], n: int, cwd: Path) -> float:
    """Wall seconds of one run (1 process, or torchrun with n)."""
    head = [sys.executable] if n == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
        "--master_addr", "127.0.0.1", "--master_port", str(_port())]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if n > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // n))
    t0 = time.perf_counter()
    r = subprocess.run([*head, str(REPO / script), *args], cwd=cwd, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"error: {script} with {n} process(es) failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/benchmark_scaling.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2, help="processes of the torchrun runs")
    p.add_argument("--n_test", type=int, default=12, help="normal and anomalous test images "
                   "per category (each)")
    p.add_argument("--model", default="tiny-vit")
    p.add_argument("--pretrained", default=str(TINY / "tiny-vit-random.pt"))
    p.add_argument("--config_path", default=None)
    p.add_argument("--image_size", type=int, default=84)
    p.add_argument("--features_list", type=int, nargs="+", default=[2, 4, 6, 8])
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    from scripts.make_synthetic_data import make  # the repository is on sys.path now

    tmp = Path(tempfile.mkdtemp(prefix="aprilgan_scaling_"))
    try:
        mvtec, _ = make(tmp / "data", n_train=3, n_test=a.n_test)
        folder = tmp / "images"
        folder.mkdir()
        for i, f in enumerate(sorted(mvtec.rglob("test/*/*.png"))):
            shutil.copy(f, folder / f"{i:05d}.png")
        n_images = sum(len(v) for v in json.loads((mvtec / "meta.json").read_text())["test"].values())
        config = a.config_path or (str(TINY / "tiny-vit.json") if a.model == "tiny-vit" else None)
        model = ["--model", a.model, "--pretrained", a.pretrained, "--image_size",
                 str(a.image_size), "--features_list", *map(str, a.features_list),
                 "--batch_size", str(a.batch_size), *(["--config_path", config] if config else [])]
        ckpt = tmp / "proj.pth"
        make_projections(a, config, ckpt)
        out = {"n_images": n_images, "nproc": a.nproc, "runs": {}}
        for script, args in (
                ("test.py", ["--mode", "zero_shot", "--dataset", "mvtec", "--data_path",
                             str(mvtec), "--checkpoint_path", str(ckpt), "--no_report", *model]),
                ("predict.py", ["--image_dir", str(folder), "--object_name", "bottle",
                                "--checkpoint_path", str(ckpt), "--no_report", "--no_heatmaps",
                                *model])):
            times = {}
            for n in (1, a.nproc):
                times[n] = launch(script, [*args, "--save_path", str(tmp / f"{script}_{n}")], n, tmp)
                print(f"{script:10s} {n} process(es): {times[n]:6.1f} s, "
                      f"{n_images / times[n]:6.1f} images/s (wall, with start-up)")
            out["runs"][script] = times
        if a.json:
            a.json.write_text(json.dumps(out, indent=2))
        ratio = {s: t[1] / t[a.nproc] for s, t in out["runs"].items()}
        print(f"scaling test.py: 1.00x -> {ratio['test.py']:.2f}x with {a.nproc} processes; "
              f"predict.py: 1.00x -> {ratio['predict.py']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def make_projections(a, config: str | None, path: Path) -> None:
    """Random projections of the benchmarked model (seeded), in the released format."""
    import torch

    from models.projection import CHECKPOINT_KEY

    from engine.core.loading import build_model

    torch.manual_seed(0)
    model, _ = build_model(a.model, a.pretrained, a.image_size, a.features_list,
                           config_path=config)
    torch.save({CHECKPOINT_KEY: model.projections.state_dict()}, path)


if __name__ == "__main__":
    sys.exit(main())
