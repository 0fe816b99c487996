r"""Whether oneDNN-packed linear layers (``--cpu_linear onednn``) beat torch's BLAS on this CPU.

Two measurements, fp32, on the CPU, random weights (speed does not depend on them):

1. each distinct linear-layer shape of the model's ViT blocks, at the rows one forward pass
   feeds it (tokens x batch): GFLOP/s (2 * rows * C_in * C_out per call) of ``F.linear`` (the
   BLAS torch was built with) and of the oneDNN-packed product;
2. the whole backbone forward (``ClipBackbone``, the stages of ``--features_list``): ms per
   image with the BLAS path and with ``models.onednn_linear.pack_vit_linears``, and the largest
   difference of their stage tokens.

The two paths are timed alternately, call after call, so a change of load on the machine hits
both alike; each figure is the median of ``--repeats`` calls after one untimed call. The last
line is the verdict.

    python scripts/benchmark_cpu_linear.py                                  # ViT-B-16 at 224
    python scripts/benchmark_cpu_linear.py --model ViT-L-14-336 --image_size 518 \
        --features_list 6 12 18 24 --repeats 3 --json cpu_linear.json        # the paper's model
    python scripts/benchmark_cpu_linear.py --model tiny --repeats 2          # CI smoke
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIXTURE = REPO / "tests" / "fixtures" / "golden" / "models"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-16",
                   help="open_clip ViT name, or 'tiny' (the test fixture) [default: ViT-B-16]")
    p.add_argument("--image_size", type=int, default=224, help="S [default: 224; tiny: 84]")
    p.add_argument("--features_list", type=int, nargs="+", default=[3, 6, 9, 12],
                   help="stages taken [default: 3 6 9 12; tiny: 2 4 6 8]")
    p.add_argument("--batch", type=int, default=1, help="images per forward [default: 1]")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per path [default: 5]")
    p.add_argument("--json", default=None, help="write the results here")
    return p.parse_args(argv)


def alternate(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, called in turn ``repeats`` times (one untimed
    call of each first)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def build(args):
    """(backbone, image size) of the model, fp32, random weights (seed 0)."""
    import torch

    from errors import ConfigError

    from engine.core.loading import build_model

    torch.manual_seed(0)
    try:
        if args.model == "tiny":
            model, _ = build_model("tiny-vit", str(FIXTURE / "tiny-vit-random.pt"), 84,
                                   [2, 4, 6, 8], (), str(FIXTURE / "tiny-vit.json"), "cpu")
        else:
            model, _ = build_model(args.model, "none", args.image_size, args.features_list, (),
                                   None, "cpu")
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    model.backbone.autocast = False
    if model.backbone.kind != "vit":
        raise SystemExit(f"error: {args.model} is not a ViT; --cpu_linear onednn packs ViT blocks")
    return model.backbone.eval(), model.image_size


def gemm_rows(backbone, rows: int, repeats: int) -> list[dict]:
    """GFLOP/s of BLAS and oneDNN on each distinct linear shape of the blocks."""
    import torch
    import torch.nn.functional as F

    block = backbone.clip.visual.transformer.resblocks[0]
    shapes = {("attention in", *block.attn.in_proj_weight.shape[::-1]),
              ("attention out", *block.attn.out_proj.weight.shape[::-1]),
              ("mlp c_fc", *block.mlp.c_fc.weight.shape[::-1]),
              ("mlp c_proj", *block.mlp.c_proj.weight.shape[::-1])}
    out = []
    g = torch.Generator().manual_seed(0)
    for name, c_in, c_out in sorted(shapes, key=lambda s: s[1] * s[2]):
        x = torch.randn(rows, c_in, generator=g)
        w = torch.randn(c_out, c_in, generator=g) / c_in ** 0.5
        b = torch.randn(c_out, generator=g)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, rows)
        t = alternate({"blas": lambda: F.linear(x, w, b),
                       "onednn": lambda: torch.ops.mkldnn._linear_pointwise(
                           x, packed, b, "none", [], "")}, repeats)
        flop = 2.0 * rows * c_in * c_out
        out.append({"layer": name, "rows": rows, "c_in": c_in, "c_out": c_out,
                    "blas_gflops": flop / t["blas"] / 1e9,
                    "onednn_gflops": flop / t["onednn"] / 1e9})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message=".*QuickGELU.*")
    import torch

    from models.onednn_linear import onednn_available, pack_vit_linears
    from utils.allocator import keep_large_buffers

    if not onednn_available():
        raise SystemExit("error: this torch build has no oneDNN linear operators")
    keep_large_buffers()  # as the entry points do
    blas, size = build(args)
    grid = next(iter(blas.info.values())).grid
    rows = args.batch * (grid ** 2 + 1)
    onednn = copy.deepcopy(blas)
    packed = pack_vit_linears(onednn.clip.visual, rows)
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))

    with torch.inference_mode():
        gemms = gemm_rows(blas, rows, args.repeats)
        ref, got = blas(x)["patch_tokens"], onednn(x)["patch_tokens"]
        diff = max((ref[s] - got[s]).abs().max().item() for s in ref)
        scale = max(ref[s].abs().max().item() for s in ref)
        t = alternate({"blas": lambda: blas(x), "onednn": lambda: onednn(x)}, args.repeats)
    ms = {k: 1e3 * v / args.batch for k, v in t.items()}
    speedup = ms["blas"] / ms["onednn"]
    load = os.getloadavg()[0]
    name = "tiny-vit" if args.model == "tiny" else args.model
    print(f"{name} at {size} px, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"{packed} packed products; median of {args.repeats} alternating calls; "
          f"load average {load:.1f}")
    print(f"{'layer':<14} {'rows':>6} {'C_in':>5} {'C_out':>5} {'BLAS GFLOP/s':>12} "
          f"{'oneDNN GFLOP/s':>14}")
    for r in gemms:
        print(f"{r['layer']:<14} {r['rows']:>6} {r['c_in']:>5} {r['c_out']:>5} "
              f"{r['blas_gflops']:>12.1f} {r['onednn_gflops']:>14.1f}")
    verdict = "faster" if speedup > 1.05 else "slower" if speedup < 0.95 else "no faster"
    print(f"cpu linear: backbone forward {ms['onednn']:.1f} ms/img with oneDNN vs "
          f"{ms['blas']:.1f} with BLAS ({speedup:.2f}x: oneDNN is {verdict} here); max |diff| "
          f"of the stage tokens {diff:.1e} (largest token value {scale:.1f})")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "model": name, "image_size": size, "batch": args.batch, "repeats": args.repeats,
            "threads": torch.get_num_threads(), "load_average_1min": load,
            "torch": torch.__version__, "gemm": gemms, "ms_per_image": ms, "speedup": speedup,
            "max_abs_diff": diff, "packed_products": packed}, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
