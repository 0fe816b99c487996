"""Behaviour a mutation review found unguarded: the mosaic, separate few-shot stages checked
against a reference computation, the few-shot score's equal-maxima branch, and predict.py
few-shot against the golden maps."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import GOLDEN, VIT, load_predictions, require

import predict
from datasets import anomaly_dataset as ad
from datasets import load_meta, make_samples
from datasets.transforms import image_transform, open_image
from models.anomaly_maps import combined_image_scores
from prompts import TextFeatureBank

from engine.core.inference import build_bank, final_maps, reference_tokens, run_category, zero_shot_maps
from engine.core.loading import build_model

ROOT = GOLDEN / "data" / "mvtec"


def _dataset(aug):
    require(ROOT / "meta.json")
    samples = [s for v in make_samples(ROOT, "test").values() for s in v]
    return ad.AnomalyDataset(ROOT, samples, 84, aug_rate=aug, seed=5), samples


def test_mosaic_probability_is_honoured():
    ds, samples = _dataset(0.2)
    hits = 0
    for epoch in range(100):
        ds.set_epoch(epoch)
        hits += sum(ds.is_augmented(i) for i in range(len(samples)))
    n = 100 * len(samples)  # 1,200 seeded draws: within 4 standard deviations of 0.2
    assert abs(hits / n - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n)
    assert not any(_dataset(0.0)[0].is_augmented(i) for i in range(len(samples)))
    ds1, _ = _dataset(1.0)
    assert all(ds1.is_augmented(i) for i in range(len(samples)))


def test_mosaic_tiles_and_masks(monkeypatch):
    ds, samples = _dataset(1.0)
    drawn = []
    real = ad.load_pair

    def record(root, s):
        drawn.append(s)
        return real(root, s)
    monkeypatch.setattr(ad, "load_pair", record)
    for i, s in enumerate(samples):
        drawn.clear()
        rng = ds._rng(i)
        rng.random()  # the aug decision comes first
        image, mask = ad.mosaic(ROOT, ds.mosaic_pool[s.cls_name], rng)
        assert len(drawn) == 4 and {t.cls_name for t in drawn} == {s.cls_name}  # same category
        w, h = open_image(ROOT / drawn[0].img_path).size
        assert image.size == (2 * w, 2 * h) and mask.size == (2 * w, 2 * h)
        m = np.asarray(mask)
        for k, t in enumerate(drawn):  # tile k at ((k % 2) w, (k // 2) h), row-major
            x, y = (k % 2) * w, (k // 2) * h
            tile_img, tile_mask = real(ROOT, t)
            np.testing.assert_array_equal(np.asarray(image)[y:y + h, x:x + w],
                                          np.asarray(tile_img.convert("RGB")))
            np.testing.assert_array_equal(m[y:y + h, x:x + w], np.asarray(tile_mask))
    # the dataset serves exactly that mosaic, resized, with its mask
    item = ds[0]
    assert item["augmented"] and item["image"].shape == (3, 84, 84)


def test_separate_few_shot_stages_against_a_reference_computation():
    """--features_list 2 8 with --few_shot_features 3 8, by hand from raw block outputs."""
    require(VIT.weights)
    model, tok = build_model(VIT.model_name, str(VIT.weights), 84, [2, 8], [3, 8],
                             config_path=str(VIT.config))
    sd = torch.load(VIT.checkpoint, map_location="cpu", weights_only=True)["trainable_linearlayer"]
    model.projections.load_state_dict({k: v for k, v in sd.items() if k.startswith(("fc.0", "fc.1"))})
    meta = load_meta(ROOT)
    test = make_samples(ROOT, "test", ["bottle"], meta=meta)["bottle"]
    refs = ["bottle/train/good/000.png", "bottle/train/good/002.png"]
    text = TextFeatureBank(model.backbone.encode_text, tok)("bottle")
    tokens = reference_tokens(model, ROOT, refs, 4, 0, torch.device("cpu"))
    bank = build_bank(model, "bottle", refs, tokens)
    from datasets.loaders import loader
    res = run_category(model, loader(ROOT, test, 84, 4, 0), text, [bank], torch.device("cpu"))
    ours = final_maps(zero_shot_maps(res["logits"], 84, torch.device("cpu")), res["distances"][0], 84)

    v = model.backbone.clip.visual
    grab = {}
    hooks = [v.transformer.resblocks[s - 1].register_forward_hook(
        lambda m, i, o, s=s: grab.__setitem__(s, o)) for s in (2, 3, 8)]
    tf = image_transform(84)
    try:
        def blocks(paths):
            with torch.no_grad():
                v(torch.stack([tf(open_image(ROOT / p)) for p in paths]))
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


def test_predict_few_shot_maps_equal_the_golden_run(tmp_path, capsys):
    """predict.py with the golden run's two reference images gives the golden few-shot maps."""
    exp_path = VIT.expected_npz("mvtec", "few_shot")
    require(exp_path, VIT.refs("mvtec"))
    refs = json.loads(VIT.refs("mvtec").read_text())["bottle"]
    ref_dir = tmp_path / "refs"
    ref_dir.mkdir()
    for p in dict.fromkeys(refs):  # duplicates do not change a nearest-neighbour maximum
        shutil.copy(ROOT / p, ref_dir / p.replace("/", "_"))
    save = tmp_path / "out"
    code = predict.main(["--image_dir", str(ROOT / "bottle" / "test"), "--recursive",
                         "--object_name", "bottle", "--save_path", str(save),
                         "--reference_dir", str(ref_dir), "--save_maps", "--maps_dtype", "float32",
                         "--no_heatmaps", *VIT.model_args(84)])
    assert code == 0, capsys.readouterr().err
    maps = np.load(save / "maps.npz")
    assert maps["anomaly_maps"].dtype == np.float32
    exp = load_predictions(exp_path)
    idx = [exp["index"][f"bottle/test/{p}"] for p in maps["paths"]]
    np.testing.assert_allclose(maps["anomaly_maps"], exp["anomaly_maps"][idx], rtol=0, atol=1e-4)
