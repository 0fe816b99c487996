"""Few-shot evaluation (METHOD §5, §9): golden replay with --reference_list on both ViT fixtures,
and the paper protocol (several k and seeds in one pass) on the MVTec fixture.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DATASET_NAMES, REPO, VIT, aligned, compare_metrics, load_predictions, require, run_test_main
from tolerances import assert_metrics_close

from datasets import load_meta, make_samples
from datasets.references import draw_references
from datasets.transforms import image_transform, open_image
from models.anomaly_maps import combined_image_scores, final_maps, zero_shot_maps
from models.backbone import ClipBackbone
from prompts import TextFeatureBank

from engine.core.inference import build_bank, reference_tokens, run_category
from engine.core.loading import build_model

MAP_TOL = 1e-4
SCORE_TOL = 1e-5
METRIC_TOL = 1e-4
PRO_TOL = 5e-4
METRIC_KEYS = ("auroc_px", "f1_px", "ap_px", "pro", "auroc_sp", "f1_sp", "ap_sp")
K_SHOTS = (1, 2, 4)
SEEDS = (1, 2, 3, 4, 5)


# --- golden replay -----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=DATASET_NAMES)
def few_shot_run(request, tmp_path_factory):
    ds = request.param
    require(VIT.expected_npz(ds, "few_shot"), VIT.refs(ds), VIT.expected_metrics(ds, "few_shot"))
    save = tmp_path_factory.mktemp(f"fs_{ds}")
    code = run_test_main(VIT.args(ds, save, "few_shot", "--save_predictions",
                                  "--reference_list", str(VIT.refs(ds))))
    assert code == 0
    return ds, save


def test_predictions_match_golden(few_shot_run):
    ds, save = few_shot_run
    ours = load_predictions(save / "predictions.npz")
    exp = load_predictions(VIT.expected_npz(ds, "few_shot"))
    maps, emaps = aligned(ours, exp, "anomaly_maps")
    np.testing.assert_allclose(maps, emaps, rtol=0, atol=MAP_TOL)
    # pr_sp is the score the metrics use: in few-shot the combined score of METHOD §5
    score, escore = aligned(ours, exp, "pr_sp", "pr_sp_fewshot_combined")
    np.testing.assert_allclose(score, escore, rtol=0, atol=SCORE_TOL)
    gt, egt = aligned(ours, exp, "gt_sp")
    np.testing.assert_array_equal(gt, egt)


def test_metrics_match_golden(few_shot_run):
    ds, save = few_shot_run
    compare_metrics(save / "metrics.json", VIT.expected_metrics(ds, "few_shot"), METRIC_TOL, PRO_TOL)


def test_references_written(few_shot_run):
    ds, save = few_shot_run
    assert json.loads((save / "references.json").read_text()) == json.loads(VIT.refs(ds).read_text())
    metrics = json.loads((save / "metrics.json").read_text())
    assert metrics["mode"] == "few_shot"
    assert metrics["k_shot"] == max(map(len, json.loads(VIT.refs(ds).read_text()).values()))
    for name in ("metrics.md", "metrics.csv", "thresholds.json", "config.json"):
        assert (save / name).is_file()


# --- protocol: k in {1, 2, 4} x 5 seeds in one pass --------------------------------------------

@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory):
    ds = "mvtec"
    require(VIT.data(ds) / "meta.json")
    save = tmp_path_factory.mktemp("protocol")
    seen = []
    original = ClipBackbone.forward

    def counting_forward(self, images):
        seen.append(int(images.shape[0]))
        return original(self, images)

    mp = pytest.MonkeyPatch()
    mp.setattr(ClipBackbone, "forward", counting_forward)
    try:
        code = run_test_main(VIT.args(ds, save, "few_shot", "--no_mvtec_aupro",
                                      "--k_shot", *map(str, K_SHOTS), "--seed", *map(str, SEEDS)))
    finally:
        mp.undo()
    assert code == 0
    return ds, save, sum(seen)


def _runs():
    return [(k, s) for k in K_SHOTS for s in SEEDS]


def test_protocol_run_folders(protocol_run):
    ds, save, _ = protocol_run
    test = make_samples(VIT.data(ds), "test")
    train = make_samples(VIT.data(ds), "train")
    folders = sorted(p.name for p in save.iterdir() if p.is_dir())
    assert folders == sorted(f"k{k}_seed{s}" for k, s in _runs())
    for k, s in _runs():
        run = save / f"k{k}_seed{s}"
        assert (run / "metrics.json").is_file() and (run / "metrics.md").is_file()
        refs = json.loads((run / "references.json").read_text())
        assert list(refs) == list(test)
        for cls, paths in refs.items():
            assert len(paths) == k
            assert set(paths) <= {x.img_path for x in train[cls] if not x.anomaly}
        m = json.loads((run / "metrics.json").read_text())
        assert m["k_shot"] == k and m["seed"] == s
    assert not (save / "metrics.json").exists()  # the per-run results live in the sub-folders


def test_each_image_through_backbone_once(protocol_run):
    ds, save, n_backbone = protocol_run
    n_test = sum(map(len, make_samples(VIT.data(ds), "test").values()))
    distinct = set()
    for k, s in _runs():
        refs = json.loads((save / f"k{k}_seed{s}" / "references.json").read_text())
        distinct |= {p for paths in refs.values() for p in paths}
    assert n_backbone == n_test + len(distinct)


def test_protocol_summary(protocol_run):
    ds, save, _ = protocol_run
    summary = json.loads((save / "summary.json").read_text())
    assert set(summary) == {f"k{k}" for k in K_SHOTS}
    runs = {r: json.loads((save / f"k{r[0]}_seed{r[1]}" / "metrics.json").read_text())
            for r in _runs()}
    for k in K_SHOTS:
        assert (save / f"summary_k{k}.md").is_file() and (save / f"summary_k{k}.csv").is_file()
        entry = summary[f"k{k}"]
        assert entry["n_runs"] == len(SEEDS)
        for key in METRIC_KEYS:
            values = [runs[(k, s)]["mean"][key] for s in SEEDS]
            assert entry["metrics"]["mean"][key]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert entry["metrics"]["mean"][key]["std"] == pytest.approx(np.std(values), abs=1e-12)
        md = (save / f"summary_k{k}.md").read_text()
        assert "±" in md and any(l.startswith("| mean") for l in md.splitlines())


def test_same_seed_same_references(protocol_run, tmp_path):
    ds, save, _ = protocol_run
    k, s = 2, SEEDS[2]
    again = tmp_path / "again"
    assert run_test_main(VIT.args(ds, again, "few_shot", "--no_mvtec_aupro",
                                  "--k_shot", str(k), "--seed", str(s))) == 0
    first = json.loads((save / f"k{k}_seed{s}" / "references.json").read_text())
    assert json.loads((again / "references.json").read_text()) == first
    # the per-run metrics do not depend on what else ran in the same pass
    a = json.loads((save / f"k{k}_seed{s}" / "metrics.json").read_text())["mean"]
    b = json.loads((again / "metrics.json").read_text())["mean"]
    # references encoded in other batches (all runs' distinct references together, or this
    # run's alone): float32 rounding apart on some CPUs, which PRO feels most
    assert_metrics_close({k: a[k] for k in METRIC_KEYS}, {k: b[k] for k in METRIC_KEYS})


def test_draw_is_reproducible_and_seed_dependent():
    train = make_samples(VIT.data("mvtec"), "train", meta=load_meta(VIT.data("mvtec")))
    a = draw_references(train, 4, 7)
    assert a == draw_references(train, 4, 7)
    assert any(draw_references(train, 4, s) != a for s in range(8, 20))
    assert all(len(v) == 4 for v in a.values())


def test_metric_workers_give_the_same_results(tmp_path):
    """--metric_workers computes metrics in other processes: same numbers, same predictions."""
    ds = DATASET_NAMES[0]
    require(VIT.refs(ds))
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same float operations in both runs
    try:
        for w in ("0", "2"):
            out[w] = tmp_path / f"workers{w}"
            assert run_test_main(VIT.args(ds, out[w], "few_shot", "--save_predictions",
                                          "--reference_list", str(VIT.refs(ds)),
                                          "--metric_workers", w)) == 0
    finally:
        torch.set_num_threads(threads)
    a = json.loads((out["0"] / "metrics.json").read_text())
    b = json.loads((out["2"] / "metrics.json").read_text())
    assert a["per_category"] == b["per_category"] and a["mean"] == b["mean"]
    pa, pb = load_predictions(out["0"] / "predictions.npz"), load_predictions(out["2"] / "predictions.npz")
    np.testing.assert_array_equal(pa["pr_sp"], pb["pr_sp"])
    np.testing.assert_array_equal(pa["anomaly_maps"], pb["anomaly_maps"])


def test_a_metric_worker_imports_no_model_code():
    """What a spawned metric worker imports (its module, as a fresh interpreter does): torch and
    the metric code, not open_clip, torchvision or the model-loading and inference modules, so
    that each worker of --metric_workers starts in seconds."""
    import subprocess
    import sys

    heavy = ("open_clip", "torchvision", "engine.core.inference", "engine.core.loading",
             "datasets.loaders", "models.backbone")
    code = ("import sys, engine.evaluate.metric_pool\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == ""


def test_image_score_per_image_and_both(tmp_path):
    """--image_score: the metrics of the score in use; both sets side by side with 'both'."""
    ds = DATASET_NAMES[0]
    require(VIT.refs(ds))
    out = {}
    for how in ("released", "per_image", "both"):
        out[how] = tmp_path / how
        assert run_test_main(VIT.args(ds, out[how], "few_shot", "--save_predictions",
                                      "--no_mvtec_aupro", "--reference_list", str(VIT.refs(ds)),
                                      "--image_score", how)) == 0
    m = {h: json.loads((p / "metrics.json").read_text()) for h, p in out.items()}
    assert m["released"]["image_score"] == "released" and m["per_image"]["image_score"] == "per_image"
    for c in m["released"]["per_category"]:
        for k in ("auroc_px", "ap_px", "pro"):  # the maps do not change
            assert m["per_image"]["per_category"][c][k] == m["released"]["per_category"][c][k]
        assert m["both"]["per_category"][c] == m["released"]["per_category"][c]
        side = m["both"]["per_image_score"]["per_category"][c]
        for k in ("auroc_sp", "f1_sp", "ap_sp"):
            assert side[k] == pytest.approx(m["per_image"]["per_category"][c][k], abs=1e-12)
    assert "per-image score" in (out["both"] / "metrics.md").read_text()
    whole = json.loads((out["both"] / "thresholds.json").read_text())
    thr = whole["per_category"]
    assert all("image_per_image" in v for v in thr.values())
    # what they are thresholds of, for predict.py and export.py to check
    assert (whole["mode"], whole["image_score"], whole["model"]) == ("few_shot", "released",
                                                                     VIT.model_name)
    assert whole["image_size"] == VIT.image_size(ds) and whole["features_list"] == VIT.stages
    assert whole["k_shot"] == m["both"]["k_shot"] and whole["few_shot_features"] == VIT.stages
    per = json.loads((out["per_image"] / "thresholds.json").read_text())
    assert per["image_score"] == "per_image"
    # per_image scores: 0.5 * (text + clip((max - mu) / mu, 0, 1)), each image on its own
    p = load_predictions(out["per_image"] / "predictions.npz")
    r = load_predictions(out["released"] / "predictions.npz")
    np.testing.assert_array_equal(p["anomaly_maps"], r["anomaly_maps"])
    assert not np.allclose(p["pr_sp"], r["pr_sp"])
    assert np.all((p["pr_sp"] >= 0) & (p["pr_sp"] <= 1))


def test_separate_few_shot_stages_against_a_reference_computation():
    """--features_list 2 8 with --few_shot_features 3 8, by hand from raw block outputs."""
    require(VIT.weights)
    model, tok = build_model(VIT.model_name, str(VIT.weights), 84, [2, 8], [3, 8],
                             config_path=str(VIT.config))
    sd = torch.load(VIT.checkpoint, map_location="cpu", weights_only=True)["trainable_linearlayer"]
    model.projections.load_state_dict({k: v for k, v in sd.items() if k.startswith(("fc.0", "fc.1"))})
    meta = load_meta(VIT.data("mvtec"))
    test = make_samples(VIT.data("mvtec"), "test", ["bottle"], meta=meta)["bottle"]
    refs = ["bottle/train/good/000.png", "bottle/train/good/002.png"]
    text = TextFeatureBank(model.backbone.encode_text, tok)("bottle")
    tokens = reference_tokens(model, VIT.data("mvtec"), refs, 4, 0, torch.device("cpu"))
    bank = build_bank(model, "bottle", refs, tokens)
    from datasets.loaders import loader
    res = run_category(model, loader(VIT.data("mvtec"), test, 84, 4, 0), text, [bank], torch.device("cpu"))
    ours = final_maps(zero_shot_maps(res["logits"], 84, torch.device("cpu")), res["distances"][0], 84)

    v = model.backbone.clip.visual
    grab = {}
    hooks = [v.transformer.resblocks[s - 1].register_forward_hook(
        lambda m, i, o, s=s: grab.__setitem__(s, o)) for s in (2, 3, 8)]
    tf = image_transform(84)
    try:
        def blocks(paths):
            with torch.no_grad():
                v(torch.stack([tf(open_image(VIT.data("mvtec") / p)) for p in paths]))
            return {s: grab[s][:, 1:] for s in (2, 3, 8)}  # [B, 36, 64], class token dropped
        t, r = blocks([s.img_path for s in test]), blocks(refs)
    finally:
        for hk in hooks:
            hk.remove()
    want = 0
    for i, s in enumerate((2, 8)):  # zero-shot stages through fc.0, fc.1
        p = F.normalize(model.projections.fc[i](t[s]), dim=-1)
        logits = (100 * p @ text).permute(0, 2, 1).reshape(-1, 2, 6, 6)
        up = F.interpolate(logits, size=84, mode="bilinear", align_corners=True)
        want = want + up.softmax(dim=1)[:, 1]
    for s in (3, 8):  # memory stages: raw tokens, 1 - max cosine to the bank
        b = F.normalize(r[s].reshape(-1, r[s].shape[-1]), dim=-1)
        d = 1 - (F.normalize(t[s], dim=-1) @ b.T).amax(dim=-1)
        want = want + F.interpolate(d.reshape(-1, 1, 6, 6), size=84, mode="bilinear",
                                    align_corners=True)[:, 0]
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)


def test_few_shot_score_with_equal_maxima_warns_and_uses_the_text():
    text = np.array([0.2, 0.9, 0.4])
    with pytest.warns(UserWarning, match="share one maximum"):
        s = combined_image_scores(text, np.array([1.5, 1.5, 1.5]))
    np.testing.assert_array_equal(s, 0.5 * text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = combined_image_scores(text, np.array([1.0, 3.0, 2.0]))
    np.testing.assert_allclose(s, 0.5 * (text + np.array([0.0, 1.0, 0.5])))
