"""Prompt ensemble (METHOD §3; STYLE 7): the prompt data and sentences without any model, edited
prompt folders and overrides, and the text features of both fixture models (≤ 1e-6).
"""
from __future__ import annotations

import json
import shutil
import zlib

import numpy as np
import pytest
import torch

from conftest import RN, VIT, load_predictions, require, run_test_main
from engine.loading import load_clip, tokenizer_for
from prompts import PROMPT_DIR, PromptSet, TextFeatureBank, build_prompts, ensemble_text_features

TEXT_TOL = 1e-6
NORMAL = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
          "{} without defect", "{} without damage")
ABNORMAL = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
FIRST_TEMPLATES = ("a bad photo of a {}.", "a low resolution photo of the {}.")
LAST_TEMPLATE = "this is one {} in the scene."


def _copy_prompts(tmp_path):
    d = tmp_path / "prompts"
    d.mkdir()
    for name in ("normal_states.txt", "abnormal_states.txt", "templates.txt"):
        shutil.copy(PROMPT_DIR / name, d / name)
    return d


# --- data and sentences, no model --------------------------------------------------------------

def test_default_prompt_data():
    p = PromptSet.load()
    assert p.normal_states == NORMAL
    assert p.abnormal_states == ABNORMAL
    assert len(p.templates) == 35 and len(set(p.templates)) == 35
    assert p.templates[:2] == FIRST_TEMPLATES and p.templates[-1] == LAST_TEMPLATE
    assert all(t.count("{}") == 1 for t in p.templates)


def test_sentences_use_folder_name_unchanged():
    normal, abnormal = build_prompts("metal_nut")
    assert len(normal) == 7 * 35 and len(abnormal) == 5 * 35
    assert normal[0] == "a bad photo of a metal_nut."  # state-major, then template order
    assert normal[35] == "a bad photo of a flawless metal_nut."
    assert abnormal[-1] == "this is one metal_nut with damage in the scene."


def test_edited_prompt_dir(tmp_path):
    d = _copy_prompts(tmp_path)
    (d / "templates.txt").write_text("# only one\n\na photo of a {}.\n")
    (d / "abnormal_states.txt").write_text("cracked {}\n")
    normal, abnormal = build_prompts("bottle", d)
    assert normal == [f"a photo of a {s.format('bottle')}." for s in NORMAL]
    assert abnormal == ["a photo of a cracked bottle."]
    # no overrides.json in the folder: none applied
    assert PromptSet.load(d).overrides == {}


def test_overrides_extend_and_replace(tmp_path):
    d = _copy_prompts(tmp_path)
    (d / "overrides.json").write_text(json.dumps({
        "_comment": "ignored",
        "pcb1": {"object": "printed circuit board", "abnormal": ["{} with a missing component"]},
        "candle": {"mode": "replace", "normal": ["clean {}"], "abnormal": ["melted {}"]},
    }))
    p = PromptSet.load(d)
    obj, normal, abnormal = p.states_for("pcb1")
    assert obj == "printed circuit board"
    assert normal == NORMAL and abnormal == ABNORMAL + ("{} with a missing component",)
    assert p.build_prompts("pcb1")[1][-1] == (
        "this is one printed circuit board with a missing component in the scene.")
    obj, normal, abnormal = p.states_for("candle")
    assert (obj, normal, abnormal) == ("candle", ("clean {}",), ("melted {}",))
    assert len(p.build_prompts("candle")[0]) == 35
    # other categories untouched
    assert p.states_for("bottle") == ("bottle", NORMAL, ABNORMAL)


@pytest.mark.parametrize("overrides, match", [
    ({"bottle": {"colour": "red"}}, "unknown keys"),
    ({"bottle": {"mode": "merge"}}, "mode"),
    ({"bottle": {"abnormal": ["no placeholder"]}}, "placeholder|\\{\\}"),
])
def test_bad_overrides(tmp_path, overrides, match):
    d = _copy_prompts(tmp_path)
    (d / "overrides.json").write_text(json.dumps(overrides))
    with pytest.raises(ValueError, match=match):
        PromptSet.load(d).build_prompts("bottle")


def test_bad_prompt_files(tmp_path):
    d = _copy_prompts(tmp_path)
    (d / "templates.txt").write_text("a photo of {} and {}.\n")
    with pytest.raises(ValueError, match="templates.txt:1"):
        PromptSet.load(d)
    (d / "templates.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no prompts"):
        PromptSet.load(d)
    (d / "templates.txt").unlink()
    with pytest.raises(FileNotFoundError):
        PromptSet.load(d)
    (d / "overrides.json").write_text("{not json")
    (d / "templates.txt").write_text("a {}.\n")
    with pytest.raises(ValueError, match="overrides.json"):
        PromptSet.load(d)


def test_ensemble_arithmetic_with_a_fake_encoder():
    """normalize(mean(normalize(E(p)))) per group, column 0 normal, column 1 abnormal."""
    torch.manual_seed(0)
    table = torch.randn(100, 8)
    encode = lambda ids: table[ids[:, 0]] * (1 + ids[:, 1:2].float())  # noqa: E731
    tok = lambda sents: torch.tensor([[zlib.crc32(s.encode()) % 100, len(s) % 3] for s in sents])  # noqa: E731
    sentences = (["a", "bb", "ccc"], ["dd", "e"])
    t = ensemble_text_features(encode, tok, sentences)
    assert t.shape == (8, 2)
    for col, group in enumerate(sentences):
        e = encode(tok(group))
        e = e / e.norm(dim=-1, keepdim=True)
        m = e.mean(0)
        torch.testing.assert_close(t[:, col], m / m.norm())


# --- text features of the fixture models -------------------------------------------------------

@pytest.mark.parametrize("fx, name", [(VIT, "text_features.npz"), (RN, "rn_text_features.npz")],
                         ids=["vit", "resnet"])
def test_text_features_match_golden(fx, name):
    path = fx.expected / name
    require(path, fx.weights)
    clip = load_clip(fx.model_name, str(fx.weights), fx.image_size(), str(fx.config))
    bank = TextFeatureBank(clip.encode_text, tokenizer_for(fx.model_name))
    with np.load(path) as z:
        expected = {k: z[k] for k in z.files}
    for cls, exp in expected.items():
        ours = bank(cls).numpy()
        assert ours.shape == exp.shape
        np.testing.assert_allclose(ours, exp, rtol=0, atol=TEXT_TOL, err_msg=cls)
    assert bank(next(iter(expected))) is bank(next(iter(expected)))  # cached per category


# --- --prompt_dir through test.py --------------------------------------------------------------

def test_prompt_dir_flag(tmp_path):
    """A copy of the default prompts reproduces the golden scores; an edit changes them."""
    ds = "mvtec"
    require(VIT.expected_npz(ds))
    exp = load_predictions(VIT.expected_npz(ds))
    cls = str(exp["cls_names"][0])
    same, edited = _copy_prompts(tmp_path), tmp_path / "edited"
    shutil.copytree(same, edited)
    (edited / "overrides.json").write_text(json.dumps(
        {cls: {"mode": "replace", "abnormal": ["{} full of holes"]}}))
    rows = [i for i, c in enumerate(exp["cls_names"]) if c == cls]
    scores = {}
    for name, d in (("same", same), ("edited", edited)):
        out = tmp_path / f"run_{name}"
        assert run_test_main(VIT.args(ds, out, "zero_shot", "--save_predictions", "--no_mvtec_aupro",
                                      "--categories", cls, "--prompt_dir", str(d))) == 0
        pred = load_predictions(out / "predictions.npz")
        scores[name] = pred["pr_sp"][[pred["index"][str(exp["img_paths"][i])] for i in rows]]
    np.testing.assert_allclose(scores["same"], exp["pr_sp"][rows], rtol=0, atol=5e-6)
    assert np.abs(scores["edited"] - exp["pr_sp"][rows]).max() > 1e-3
