"""engine.core.features, unit by unit: the feature store's key (what stored values depend on:
weights, model config, image size, data, precision), the parts of one stored image, a folder
made under other settings refused, and ``encode_batch``: fresh images go through the backbone
and into the store (augmented ones never), stored ones read back as they were written."""
from __future__ import annotations

import hashlib
import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import GOLDEN, VIT, require

from datasets.feature_cache import FeatureCache, FeatureCacheError

from engine.core.features import encode_batch, open_store, store_key, store_layout
from engine.core.loading import build_model

SIZE = 28  # two 14-pixel patches a side: 4 tokens per stage
STAGES = [2, 8]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    require(VIT.weights, VIT.config)
    m, _ = build_model(VIT.model_name, str(VIT.weights), SIZE, STAGES, (), config_path=str(VIT.config))
    return m.eval()


def _cfg(**over):
    return SimpleNamespace(**{"model": "ignored-with-a-config", "pretrained": str(VIT.weights),
                              "config_path": str(VIT.config), "image_size": SIZE, **over})


def test_the_key_changes_with_weights_config_size_data_and_precision(tmp_path, monkeypatch):
    data = GOLDEN / "data" / "mvtec"
    key = store_key("ViT-B-16", str(VIT.weights), str(VIT.config), SIZE, "mvtec", data, False)
    assert key == {
        "model": VIT.config.stem,  # a config file names the model
        "weights": "sha256:" + hashlib.sha256(VIT.weights.read_bytes()).hexdigest(),
        "config_sha1": hashlib.sha1(VIT.config.read_bytes()).hexdigest(),
        "image_size": SIZE, "dataset": "mvtec", "data_root": str(data.resolve()), "autocast": False}
    monkeypatch.chdir(data.parent)  # a relative data root is the same data
    assert store_key("x", str(VIT.weights), str(VIT.config), SIZE, "mvtec", "mvtec", False) == key

    hub = store_key("ViT-L-14-336", "openai", None, 518, "visa", data, True)
    assert hub["weights"] == "tag:openai" and hub["model"] == "ViT-L-14-336"
    assert hub["config_sha1"] == hashlib.sha1(b"").hexdigest() and hub["autocast"] is True
    assert store_key("m", "openai", None, 518, "visa", data, "bfloat16")["autocast"] == "bfloat16"

    edited = tmp_path / "weights.pt"  # the same file name's bytes, one byte changed
    raw = bytearray(VIT.weights.read_bytes())
    raw[-1] ^= 1
    edited.write_bytes(bytes(raw))
    other = {
        "weights": store_key("x", str(edited), str(VIT.config), SIZE, "mvtec", data, False),
        "image_size": store_key("x", str(VIT.weights), str(VIT.config), 42, "mvtec", data, False),
        "dataset": store_key("x", str(VIT.weights), str(VIT.config), SIZE, "visa", data, False),
        "data_root": store_key("x", str(VIT.weights), str(VIT.config), SIZE, "mvtec", tmp_path, False),
        "autocast": store_key("x", str(VIT.weights), str(VIT.config), SIZE, "mvtec", data, True)}
    for field, k in other.items():
        assert [f for f in key if key[f] != k[f]] == [field], field


def test_one_stored_image_holds_each_stage_the_embedding_and_the_mask(model):
    # tiny-vit.json: width 64, patch 14, embed_dim 32; 28 px -> a 2 x 2 grid
    assert store_layout(model, STAGES) == [("stage2", (4, 64)), ("stage8", (4, 64)),
                                           ("image_embed", (32,)), ("mask", (SIZE, SIZE))]
    assert store_layout(model, [8]) == [("stage8", (4, 64)), ("image_embed", (32,)),
                                        ("mask", (SIZE, SIZE))]


def test_a_folder_made_under_other_settings_is_refused(tmp_path, model):
    data = GOLDEN / "data" / "mvtec"
    store = open_store(tmp_path / "s", _cfg(), model, CPU, "mvtec", data, "--feature_store")
    assert isinstance(store, FeatureCache) and store.key["autocast"] is False
    assert [n for n, _ in store.layout] == ["stage2", "stage8", "image_embed", "mask"]
    again = open_store(tmp_path / "s", _cfg(), model, CPU, "mvtec", data, "--feature_store")
    assert again.key == store.key  # the same settings reopen it
    copy = tmp_path / "copy.pt"
    shutil.copy(VIT.weights, copy)  # other path, same bytes: the same store
    open_store(tmp_path / "s", _cfg(pretrained=str(copy)), model, CPU, "mvtec", data, "--x")
    with pytest.raises(FeatureCacheError, match=r"differs in: image_size\).*--feature_store"):
        open_store(tmp_path / "s", _cfg(image_size=42), model, CPU, "mvtec", data, "--feature_store")
    with pytest.raises(FeatureCacheError, match=r"differs in: data_root, dataset\)"):
        open_store(tmp_path / "s", _cfg(), model, CPU, "visa", GOLDEN / "data" / "visa", "--x")
    model.backbone.autocast, model.backbone.autocast_dtype = True, torch.bfloat16
    try:  # bf16 autocast stores other values: another key
        bf16 = open_store(tmp_path / "b", _cfg(), model, CPU, "mvtec", data, "--x")
    finally:
        model.backbone.autocast, model.backbone.autocast_dtype = None, torch.float16
    assert bf16.key["autocast"] == "bfloat16"


def test_a_stored_batch_reads_back_as_written_and_augmented_images_stay_out(tmp_path, model):
    store = open_store(tmp_path, _cfg(), model, CPU, "mvtec", GOLDEN / "data" / "mvtec", "--x")
    items = SimpleNamespace(cache=store, keys=["e0", "e1", "e2"])
    g = torch.Generator().manual_seed(3)
    images = torch.rand(3, 3, SIZE, SIZE, generator=g)
    masks = (torch.rand(3, SIZE, SIZE, generator=g) > 0.5).float()
    batch = {"image": images, "mask": masks, "index": [0, 1, 2], "augmented": [False, True, False],
             "features": [None, None, None]}
    tokens, embed, n = encode_batch(model, batch, items, CPU)
    assert n == 3 and store.dtype == "float32"
    with torch.no_grad():
        ref = model.encode(images)  # the same batch through the backbone, here
    for s in STAGES:  # the same computation on the same batch: equal up to float32 rounding
        torch.testing.assert_close(tokens[s], ref["patch_tokens"][s].float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(embed, ref["image_embed"].float(), rtol=0, atol=1e-6)
    assert store.snapshot() == {"e0", "e2"}  # the mosaic-augmented item is not stored
    for j in (0, 2):
        got = store.get(f"e{j}")
        for s in STAGES:  # a float32 copy: bit for bit
            assert torch.equal(got[f"stage{s}"], tokens[s][j])
        assert torch.equal(got["image_embed"], embed[j]) and torch.equal(got["mask"], masks[j])

    # the next pass reads the stored images and encodes only the other one
    stored = [store.get("e0"), None, store.get("e2")]
    batch2 = {**batch, "image": images[1:2], "features": stored}
    tokens2, embed2, n2 = encode_batch(model, batch2, items, CPU)
    assert n2 == 1
    for s in STAGES:
        assert torch.equal(tokens2[s][[0, 2]], tokens[s][[0, 2]])
        # image 1 alone instead of in a batch of 3: float32 rounding of another batch size
        torch.testing.assert_close(tokens2[s][1], tokens[s][1], rtol=0, atol=1e-5)
    assert torch.equal(embed2[[0, 2]], embed[[0, 2]])
