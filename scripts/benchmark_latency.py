r"""Latency of scoring one object with torch, onnxruntime and OpenVINO (the graph export.py
writes; OpenVINO rows when the package is installed, bf16 where the CPU has it).

For each model -- ``tiny`` (the test fixture ViT, 84 px) and named open_clip architectures with
random weights (speed does not depend on the weights; nothing is downloaded) -- and each mode
(zero-shot; few-shot with memory banks of ``--k_shot`` random reference images), the graph of
``engine.deploy.export.build_graph`` (backbone, head, maps, scores) is timed in torch and, exported,
in onnxruntime and OpenVINO: after ``--warmup`` untimed calls, the median of ``--repeats`` timed
calls of one batch, and the best call (less skewed by other work on the machine). Each backend
runs in a fresh process of its own (this script with ``--row``), so its memory is its own.
Reported: ms per image at batch 1, images/s at batch ``--batch`` (the column says which), and
the peak RSS of the backend's process (imports, model and buffers; VmHWM on Linux), plus in
the JSON ``gpu_peak_mib`` (``torch.cuda.max_memory_allocated``) for torch on a GPU. Torch on
CUDA runs with fp16 autocast as predict.py does; onnxruntime runs the float32 graph (the CUDA
provider when onnxruntime has it and ``--device cuda``); OpenVINO runs fp32 (asked for
explicitly) and bf16 where the CPU reports it. ``map diff`` and ``score diff``: each row's largest difference from
the onnxruntime row's anomaly map and image score on the batch-1 input (the drift of bf16 or
fp16, float rounding otherwise). ``--keep_onnx DIR`` keeps the exported graphs.

    python scripts/benchmark_latency.py                    # tiny + ViT-B-16 at 224 on the CPU
    python scripts/benchmark_latency.py --model ViT-B-16 --pretrained none --image_size 224 \
        --features_list 3 6 9 12 --k_shot 4 --device cuda --json latency.json
    python scripts/benchmark_latency.py --quick --json latency.json   # CI smoke: tiny, 3 repeats
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine.deploy.onnx_sidecar import OUTPUTS  # light: no torch

FIXTURE = REPO / "tests" / "fixtures" / "golden" / "models"
TINY = dict(name="tiny-vit", config=FIXTURE / "tiny-vit.json", weights=FIXTURE / "tiny-vit-random.pt",
            checkpoint=FIXTURE / "linear-random.pth", size=84, stages=[2, 4, 6, 8])
MODES = ("zero_shot", "few_shot")
ROW_TAG = "ROW "  # a --row process prints its row on a line starting with this


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=None,
                   help="'tiny' and/or open_clip model names [default: tiny ViT-B-16; --quick: tiny]")
    p.add_argument("--pretrained", default="none", help="weights of the named models [default: none]")
    p.add_argument("--image_size", type=int, default=224, help="S of the named models [default: 224]")
    p.add_argument("--features_list", type=int, nargs="+", default=[3, 6, 9, 12],
                   help="stages of the named models (also the memory-bank stages) [default: 3 6 9 12]")
    p.add_argument("--k_shot", type=int, default=4, help="reference images in the banks [default: 4]")
    p.add_argument("--repeats", type=int, default=None, help="timed calls [default: 10; --quick: 3]")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls [default: 2; --quick: 1]")
    p.add_argument("--batch", type=int, default=8, help="batch of the throughput column [default: 8]")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] [default: cpu]")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default=None,
                   help="torch.onnx exporter [default: dynamo; --quick: torchscript]")
    p.add_argument("--quick", action="store_true", help="CI smoke run: tiny model, few repeats")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--keep_onnx", default=None, metavar="DIR",
                   help="keep the exported graphs in DIR (<model>_<S>_<mode>.onnx) [default: a "
                        "temporary folder, removed]")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter of the per-backend processes [default: this one]")
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: one backend's row
    p.add_argument("--row_onnx", default=None, help=argparse.SUPPRESS)
    p.add_argument("--row_few", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--row_out", default=None, help=argparse.SUPPRESS)  # its batch-1 outputs
    a = p.parse_args(argv)
    a.model = a.model or (["tiny"] if a.quick else ["tiny", "ViT-B-16"])
    a.repeats = a.repeats or (3 if a.quick else 10)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    a.exporter = a.exporter or ("torchscript" if a.quick else "dynamo")
    return a


def build(name: str, args, few: bool, device):
    """(graph, size) of one model and mode: random projections, text and references."""
    import torch
    import torch.nn.functional as F

    from engine.core.inference import build_bank, normal_level
    from engine.core.loading import build_model, load_projections
    from engine.deploy.export import build_graph

    torch.manual_seed(0)
    if name == "tiny":
        model, _ = build_model(TINY["name"], str(TINY["weights"]), TINY["size"], TINY["stages"],
                               TINY["stages"] if few else (), str(TINY["config"]), device)
        load_projections(model.projections, TINY["checkpoint"])
    else:
        model, _ = build_model(name, args.pretrained, args.image_size, args.features_list,
                               args.features_list if few else (), None, device)
    model.eval()
    model.backbone.autocast = False
    size = model.image_size
    text = F.normalize(torch.randn(model.backbone.embed_dim, 2, device=device), dim=0)
    banks = mu = None
    if few:
        refs = [f"ref{i}" for i in range(args.k_shot)]
        with torch.no_grad():
            enc = model.encode(torch.randn(args.k_shot, 3, size, size, device=device))
        tokens = {r: {s: t[i] for s, t in enc["patch_tokens"].items()} for i, r in enumerate(refs)}
        banks = {s: build_bank(model, "bench", refs, tokens).bank(s) for s in model.few_shot_features}
        mu = normal_level(model, refs, tokens, text, size)
    return build_graph(model, text, banks, mu), size


def reset_peak() -> None:
    """Restart the peak RSS count at the current RSS (Linux; elsewhere nothing happens)."""
    try:  # "5" resets VmHWM, the high-water mark of this process's memory
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB): VmHWM on Linux, else ``ru_maxrss``.

    Not ``ru_maxrss`` on Linux: it survives ``exec``, so a child started by a large parent
    would report the parent's size at the fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (2**20 if sys.platform == "darwin" else 2**10)


def timings(fn, warmup: int, repeats: int, sync) -> tuple[float, float]:
    """(median, minimum) seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def inputs(size: int, batch: int):
    """The timed inputs, the same in every backend's process: [1|B, 3, S, S] float32."""
    import numpy as np

    x1 = np.random.default_rng(1).standard_normal((1, 3, size, size), dtype=np.float32)
    xb = np.random.default_rng(2).standard_normal((batch, 3, size, size), dtype=np.float32)
    return x1, xb


def backends(args) -> list[str]:
    """The rows to run: torch, onnxruntime, and OpenVINO fp32 (bf16 where the CPU has it)."""
    out = ["torch", "onnxruntime"]
    try:
        import openvino  # noqa: F401
    except ImportError:
        return out
    from engine.deploy.openvino_runtime import bf16_supported

    return out + ["openvino:fp32"] + (["openvino:bf16"] if bf16_supported() else [])


def measure(name: str, args, few: bool) -> list[dict]:
    """The rows (torch, onnxruntime, OpenVINO) for one model and mode, each backend timed in a
    process of its own, so its peak memory is its own (imports, model and buffers included)."""
    import torch

    from engine.deploy.export import export_proto

    graph, size = build(name, args, few, torch.device("cpu"))
    t = time.perf_counter()
    proto = export_proto(graph, size, exporter=args.exporter)
    export_s = time.perf_counter() - t
    del graph
    model = TINY["name"] if name == "tiny" else name
    common = {"model": model, "image_size": size, "mode": MODES[few],
              "k_shot": args.k_shot if few else 0, "batch": args.batch, "export_s": export_s}
    with tempfile.TemporaryDirectory() as tmp:  # the graph (unless kept) and row outputs
        folder = Path(args.keep_onnx).resolve() if args.keep_onnx else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        onnx = folder / f"{model}_{size}_{MODES[few]}.onnx"
        data = proto.SerializeToString()
        onnx.write_bytes(data)
        common["onnx_mib"] = len(data) / 2**20
        if args.keep_onnx:
            common["onnx_file"] = str(onnx)
        del proto, data
        names = backends(args)
        outputs = [Path(tmp) / f"{b.replace(':', '_')}.npz" for b in names]
        rows = [{**common, **run_row(name, few, b, onnx, out, args)}
                for b, out in zip(names, outputs)]
        drift(rows, outputs)
        return rows


def drift(rows: list[dict], outputs: list[Path]) -> None:
    """Each row's largest difference from the onnxruntime (fp32) row on the batch-1 input:
    ``map_diff`` over the anomaly map, ``score_diff`` over the image score (bf16 drift, fp16
    autocast on a GPU, float rounding elsewhere)."""
    import numpy as np

    loaded = []
    for path in outputs:
        with np.load(path) as z:
            loaded.append({k: z[k] for k in z.files})
    ref = loaded[[r["backend"] for r in rows].index("onnxruntime")]
    for r, out in zip(rows, loaded):
        r["map_diff"] = float(np.abs(out["anomaly_map"] - ref["anomaly_map"]).max())
        r["score_diff"] = float(np.abs(out["image_score"] - ref["image_score"]).max())


def run_row(name: str, few: bool, backend: str, onnx: Path, out: Path, args) -> dict:
    """One backend's row, measured by a fresh process running this script with ``--row``
    (its batch-1 outputs go to ``out``)."""
    import subprocess

    cmd = [args.python, str(Path(__file__).resolve()), "--row", backend, "--row_onnx", str(onnx),
           "--model", name, "--pretrained", args.pretrained, "--image_size", str(args.image_size),
           "--features_list", *map(str, args.features_list), "--k_shot", str(args.k_shot),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--batch", str(args.batch), "--device", args.device,
           "--row_out", str(out)] + (
               ["--row_few"] if few else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(ROW_TAG)]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"error: the {backend} row of {name} {MODES[few]} failed "
                         f"(exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][len(ROW_TAG):])


def row(args) -> dict:
    """Time one backend in this process (``--row``): its row without the common fields."""
    reset_peak()  # a process forked from a warm interpreter starts at that one's peak
    backend, _, precision = args.row.partition(":")
    size = TINY["size"] if args.model == ["tiny"] else args.image_size
    x1, xb = inputs(size, args.batch)
    if backend == "torch":
        import torch

        device = torch.device(args.device)
        cuda = device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        graph, _ = build(args.model[0], args, args.row_few, torch.device("cpu"))
        graph.to(device)
        graph.model.backbone.autocast = None  # fp16 autocast on CUDA, as predict.py
        a1, ab = torch.from_numpy(x1).to(device), torch.from_numpy(xb).to(device)
        with torch.inference_mode():
            t1 = timings(lambda: graph(a1), args.warmup, args.repeats, sync)
            tb = timings(lambda: graph(ab), args.warmup, args.repeats, sync)
            outputs = [o.float().cpu().numpy() for o in graph(a1)]
        out = {"backend": "torch", "precision": "fp16 autocast" if cuda else "fp32",
               "provider": str(device), **speeds(t1, tb, args.batch)}
        if cuda:
            out["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    elif backend == "onnxruntime":
        from engine.deploy.onnx_runtime import make_session

        sess = make_session(args.row_onnx, args.device)
        n1, nb = {"images": x1}, {"images": xb}
        t1 = timings(lambda: sess.run(None, n1), args.warmup, args.repeats, lambda: None)
        tb = timings(lambda: sess.run(None, nb), args.warmup, args.repeats, lambda: None)
        outputs = sess.run(list(OUTPUTS), n1)
        out = {"backend": "onnxruntime", "precision": "fp32",
               "provider": sess.get_providers()[0], **speeds(t1, tb, args.batch)}
    else:  # openvino:fp32 or openvino:bf16; fp32 is asked for explicitly
        import openvino as ov

        from engine.deploy.openvino_runtime import PRECISIONS

        compiled = ov.Core().compile_model(args.row_onnx, "CPU",
                                           {"INFERENCE_PRECISION_HINT": PRECISIONS[precision]})
        t1 = timings(lambda: compiled(x1), args.warmup, args.repeats, lambda: None)
        tb = timings(lambda: compiled(xb), args.warmup, args.repeats, lambda: None)
        res = compiled(x1)
        outputs = [res[compiled.output(n)] for n in OUTPUTS]
        out = {"backend": "openvino", "precision": precision, "provider": f"CPU {precision}",
               **speeds(t1, tb, args.batch)}
    if args.row_out:
        import numpy as np

        np.savez(args.row_out, **{n: np.asarray(o, dtype=np.float32)
                                  for n, o in zip(OUTPUTS, outputs)})
    return {**out, "peak_mib": peak_rss_mib(),
            "peak_kind": "peak RSS of the backend's own process", "pid": os.getpid()}


def speeds(t1: tuple[float, float], tb: tuple[float, float], batch: int) -> dict:
    """ms per image at batch 1 and images/s at ``batch`` (the row's ``batch``): from the
    median and from the best call."""
    return {"ms_per_image_b1": 1e3 * t1[0], "ms_per_image_b1_best": 1e3 * t1[1],
            "images_per_s": batch / tb[0], "images_per_s_best": batch / tb[1]}


def table(rows: list[dict]) -> str:
    """The rows as a text table; the throughput column is labelled with the batch it ran."""
    batch = f"img/s b{rows[0]['batch']}" if rows else "img/s"
    head = (f"{'model':<12} {'S':>4} {'mode':<9} {'backend':<12} {'provider':<20} "
            f"{'ms/img b1':>9} {'(best)':>7} {batch:>9} {'(best)':>7} {'peak MiB':>8} "
            f"{'export s':>8} {'map diff':>8} {'score diff':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<12} {r['image_size']:>4} {r['mode']:<9} {r['backend']:<12} "
                     f"{r['provider'][:20]:<20} {r['ms_per_image_b1']:>9.2f} "
                     f"{r['ms_per_image_b1_best']:>7.2f} {r['images_per_s']:>9.2f} "
                     f"{r['images_per_s_best']:>7.2f} {r['peak_mib']:>8.0f} "
                     f"{r['export_s']:>8.1f} {r['map_diff']:>8.1e} {r['score_diff']:>10.1e}")
    return "\n".join(lines)


def machine(args) -> dict:
    import importlib.metadata as md

    import torch

    out = {"platform": platform.platform(), "python": platform.python_version(),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "device": args.device,
           "load_average_1min": os.getloadavg()[0]}
    for pkg in ("torch", "onnxruntime", "onnx", "open_clip_torch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    if args.device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message=".*QuickGELU.*")
    if args.row:
        print(ROW_TAG + json.dumps(row(args)), flush=True)
        return 0
    rows = []
    for name in args.model:
        for few in (False, True):
            rows += measure(name, args, few)
            print(f"measured {rows[-1]['model']} {MODES[few]}", file=sys.stderr, flush=True)
    print(f"ms/img at batch 1, img/s at batch {args.batch}: median (and best) of {args.repeats} "
          f"calls after {args.warmup} warm-up; {args.exporter} exporter; device {args.device}; "
          f"each backend in its own process (peak MiB: that process's peak RSS); "
          f"load average {os.getloadavg()[0]:.1f} (other work on the machine skews the median)")
    print(table(rows))
    result = {"machine": machine(args), "settings": vars(args),
              "rows": rows}
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
