r"""Latency of scoring one object with torch, onnxruntime and OpenVINO (the graph export.py
writes; OpenVINO rows when the package is installed, bf16 where the CPU has it).

For each model -- ``tiny`` (the test fixture ViT, 84 px) and named open_clip architectures with
random weights (speed does not depend on the weights; nothing is downloaded) -- and each mode
(zero-shot; few-shot with memory banks of ``--k_shot`` random reference images), the graph of
``engine.export.build_graph`` (backbone, head, maps, scores) is timed in torch and, exported,
in onnxruntime: after ``--warmup`` untimed calls, the median of ``--repeats`` timed calls of one
batch, and the best call (less skewed by other work on the machine). Reported: ms per image at
batch 1, images/s at batch 8, and peak memory -- on a GPU ``torch.cuda.max_memory_allocated``
(torch rows), on the CPU the peak RSS of the process (``resource.getrusage``; reset before each
row through /proc/self/clear_refs where Linux allows, otherwise the peak so far). Torch on CUDA
runs with fp16 autocast as predict.py does; onnxruntime runs the float32 graph (the CUDA
provider when onnxruntime has it and ``--device cuda``).

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

FIXTURE = REPO / "tests" / "fixtures" / "golden" / "models"
TINY = dict(name="tiny-vit", config=FIXTURE / "tiny-vit.json", weights=FIXTURE / "tiny-vit-random.pt",
            checkpoint=FIXTURE / "linear-random.pth", size=84, stages=[2, 4, 6, 8])
MODES = ("zero_shot", "few_shot")


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

    from engine.export import build_graph
    from engine.inference import build_bank, normal_level
    from engine.loading import build_model, load_projections

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
    try:  # Linux: "5" resets the peak RSS (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
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


def measure(name: str, args, few: bool) -> list[dict]:
    """The rows (torch, onnxruntime, OpenVINO) for one model and mode."""
    import torch

    from engine.export import export_proto
    from engine.onnx_runtime import make_session

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    graph, size = build(name, args, few, torch.device("cpu"))
    t = time.perf_counter()
    data = export_proto(graph, size, exporter=args.exporter).SerializeToString()
    export_s = time.perf_counter() - t
    common = {"model": TINY["name"] if name == "tiny" else name, "image_size": size,
              "mode": MODES[few], "k_shot": args.k_shot if few else 0, "export_s": export_s,
              "onnx_mib": len(data) / 2**20}
    x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    xb = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(2))
    rows = []

    graph.to(device)
    graph.model.backbone.autocast = None  # fp16 autocast on CUDA, as predict.py
    reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    a1, ab = x1.to(device), xb.to(device)
    with torch.inference_mode():
        t1 = timings(lambda: graph(a1), args.warmup, args.repeats, sync)
        tb = timings(lambda: graph(ab), args.warmup, args.repeats, sync)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mib()
    rows.append({**common, "backend": "torch", "precision": "fp16 autocast" if cuda else "fp32",
                 "provider": str(device), **speeds(t1, tb, args.batch), "peak_mib": peak,
                 "peak_kind": "cuda max_memory_allocated" if cuda else "process peak RSS"})
    graph.to("cpu")
    del graph, a1, ab
    if cuda:
        torch.cuda.empty_cache()

    reset_peak()
    sess = make_session(data, args.device)
    n1, nb = {"images": x1.numpy()}, {"images": xb.numpy()}
    o1 = timings(lambda: sess.run(None, n1), args.warmup, args.repeats, lambda: None)
    ob = timings(lambda: sess.run(None, nb), args.warmup, args.repeats, lambda: None)
    rows.append({**common, "backend": "onnxruntime", "precision": "fp32",
                 "provider": sess.get_providers()[0], **speeds(o1, ob, args.batch),
                 "peak_mib": peak_rss_mib(),
                 "peak_kind": "process peak RSS (host)"})
    del sess
    rows += openvino_rows(data, common, n1, nb, args)
    return rows


def openvino_rows(data: bytes, common: dict, n1: dict, nb: dict, args) -> list[dict]:
    """OpenVINO CPU rows: fp32 (asked for explicitly), and bf16 where the CPU has it."""
    try:
        import openvino as ov
    except ImportError:
        return []
    from engine.openvino_runtime import PRECISIONS, bf16_supported

    core, rows = ov.Core(), []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.onnx"
        path.write_bytes(data)
        model = core.read_model(str(path))
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and not bf16_supported():
                continue
            reset_peak()
            compiled = core.compile_model(model, "CPU",
                                          {"INFERENCE_PRECISION_HINT": PRECISIONS[precision]})
            v1 = timings(lambda: compiled(n1), args.warmup, args.repeats, lambda: None)
            vb = timings(lambda: compiled(nb), args.warmup, args.repeats, lambda: None)
            rows.append({**common, "backend": "openvino", "precision": precision,
                         "provider": f"CPU {precision}", **speeds(v1, vb, args.batch),
                         "peak_mib": peak_rss_mib(), "peak_kind": "process peak RSS (host)"})
    return rows


def speeds(t1: tuple[float, float], tb: tuple[float, float], batch: int) -> dict:
    """ms per image at batch 1 and images/s at ``batch``: from the median and the best call."""
    return {"ms_per_image_b1": 1e3 * t1[0], "ms_per_image_b1_best": 1e3 * t1[1],
            "images_per_s_b8": batch / tb[0], "images_per_s_b8_best": batch / tb[1]}


def table(rows: list[dict]) -> str:
    head = (f"{'model':<12} {'S':>4} {'mode':<9} {'backend':<12} {'provider':<20} "
            f"{'ms/img b1':>9} {'(best)':>7} {'img/s b8':>8} {'(best)':>7} {'peak MiB':>8} "
            f"{'export s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<12} {r['image_size']:>4} {r['mode']:<9} {r['backend']:<12} "
                     f"{r['provider'][:20]:<20} {r['ms_per_image_b1']:>9.2f} "
                     f"{r['ms_per_image_b1_best']:>7.2f} {r['images_per_s_b8']:>8.2f} "
                     f"{r['images_per_s_b8_best']:>7.2f} {r['peak_mib']:>8.0f} "
                     f"{r['export_s']:>8.1f}")
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
    rows = []
    for name in args.model:
        for few in (False, True):
            rows += measure(name, args, few)
            print(f"measured {rows[-1]['model']} {MODES[few]}", file=sys.stderr, flush=True)
    print(f"ms/img at batch 1, img/s at batch {args.batch}: median (and best) of {args.repeats} "
          f"calls after {args.warmup} warm-up; {args.exporter} exporter; device {args.device}; "
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
