"""Prompt ensemble (METHOD §3): the prompt data and sentences without any model, edited
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

from errors import DatasetError
from prompts import (
    PROMPT_DIR,
    PromptError,
    PromptSet,
    TextFeatureBank,
    build_prompts,
    ensemble_text_features,
    load_prompts,
)

from engine.core.loading import load_clip, tokenizer_for

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
    with pytest.raises(PromptError, match="prompt file not found: .*templates.txt"):
        PromptSet.load(d)
    (d / "overrides.json").write_text("{not json")
    (d / "templates.txt").write_text("a {}.\n")
    with pytest.raises(ValueError, match="overrides.json"):
        PromptSet.load(d)


def _where(problems):
    """The ``file:line`` each problem starts with."""
    return [q.split(": ", 1)[0] for q in problems]


def test_every_problem_of_a_file_is_reported(tmp_path):
    """Three bad lines in one file: all three named, each with its line (counted by hand)."""
    d = _copy_prompts(tmp_path)
    f = d / "templates.txt"
    f.write_text("# templates\n"            # 1
                 "a photo of a {}.\n"       # 2
                 "a photo of a thing.\n"    # 3: no placeholder
                 "\n"                       # 4
                 "{} next to {}.\n"         # 5: two placeholders
                 "a close-up of a {}.\n"    # 6
                 "a photo of a {}.\n")      # 7: repeats line 2
    with pytest.raises(PromptError) as err:
        PromptSet.load(d)
    assert _where(err.value.problems) == [f"{f}:3", f"{f}:5", f"{f}:7"]
    assert "exactly one '{}'" in err.value.problems[0] and "'{} next to {}.'" in err.value.problems[1]
    assert "repeats line 2" in err.value.problems[2]
    assert str(err.value).startswith("3 problems: ")


def test_every_problem_of_every_file_in_one_error(tmp_path):
    """Problems in both state files and overrides.json: one error (one line) naming all."""
    d = _copy_prompts(tmp_path)
    (d / "normal_states.txt").write_text("{}\nperfect\n")
    (d / "abnormal_states.txt").write_text("damaged {}\ndamaged {}\n")
    (d / "overrides.json").write_text('{\n  "bottle": {"mode": "merge"}\n}\n')
    with pytest.raises(PromptError) as err:
        PromptSet.load(d)
    assert _where(err.value.problems) == [f"{d / 'normal_states.txt'}:2",
                                          f"{d / 'abnormal_states.txt'}:2",
                                          f"{d / 'overrides.json'}:2"]
    assert "not 'merge'" in err.value.problems[2]
    with pytest.raises(DatasetError) as err:
        load_prompts(d, ["bottle"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("bad prompt files: 3 problems: ")
    assert all(w in msg for w in (f"{d / 'normal_states.txt'}:2:", f"{d / 'abnormal_states.txt'}:2:",
                                  f"{d / 'overrides.json'}:2:"))


OVERRIDES = """{
  "_comment": "ignored",
  "bottle": {
    "colour": "red",
    "abnormal": [
      "cracked {}",
      "no placeholder",
      "cracked {}",
      "broken {}"
    ]
  },
  "screw": {"object": "", "normal": "flawless {}"},
  "cable": "x"
}
"""


def test_every_override_problem_named_with_its_line(tmp_path):
    """Seven problems of overrides.json, each at the line it is on (counted by hand in
    OVERRIDES): an unknown key (4), a state without '{}' (7), a state listed twice (8, its
    second time), a state the base already has ('broken {}', 9), an empty object word and a
    state list that is a string (12), an entry that is not an object (13)."""
    d = _copy_prompts(tmp_path)
    o = d / "overrides.json"
    o.write_text(OVERRIDES)
    with pytest.raises(PromptError) as err:
        PromptSet.load(d)
    want = [(4, "'bottle': unknown keys ['colour']"),
            (7, "'bottle': abnormal state 'no placeholder' needs exactly one '{}'"),
            (8, "'bottle': abnormal state 'cracked {}' is listed twice"),
            (9, "'bottle': abnormal state 'broken {}' is already in abnormal_states.txt"),
            (12, "'screw': object must be a non-empty word"),
            (12, "'screw': 'normal' must be a list of states"),
            (13, "'cable': must be an object")]
    got = err.value.problems
    assert len(got) == len(want), got
    for q, (line, words) in zip(got, want):
        assert q.startswith(f"{o}:{line}: {words}"), (q, line, words)


class _WordTokenizer:
    """A tokenizer of whitespace-separated words with a context of 8 tokens (start and end
    included): a sentence of more than 6 words is too long."""

    context_length = 8

    def encode(self, text):
        return text.split()

    def __call__(self, texts):
        return torch.zeros(len(texts), 1, dtype=torch.long)


@pytest.mark.parametrize("shared", [None, {}], ids=["one_set", "shared_sentences"])
def test_every_long_prompt_is_named_with_its_lines(tmp_path, shared):
    """Of the 8 sentences of 2x2 states and 2 templates, 4 exceed the context of 8 tokens (words
    + 2, counted by hand below); all 4, from both groups, are named with the state and template
    lines they are made of, in one error."""
    d = tmp_path / "p"
    d.mkdir()
    (d / "normal_states.txt").write_text("{}\nvery very very clean {}\n")
    (d / "abnormal_states.txt").write_text("damaged {}\nvery very badly damaged {}\n")
    (d / "templates.txt").write_text("a {}.\nthis is a photo of a {}.\n")
    n, a, t = (str(d / f) for f in ("normal_states.txt", "abnormal_states.txt", "templates.txt"))
    want = [(f"{n}:1 in {t}:2", "this is a photo of a bottle.", 9),
            (f"{n}:2 in {t}:2", "this is a photo of a very very very clean bottle.", 13),
            (f"{a}:1 in {t}:2", "this is a photo of a damaged bottle.", 10),
            (f"{a}:2 in {t}:2", "this is a photo of a very very badly damaged bottle.", 13)]
    bank = TextFeatureBank(lambda ids: torch.ones(len(ids), 4), _WordTokenizer(),
                           PromptSet.load(d), sentences=shared)
    with pytest.raises(DatasetError) as err:
        bank("bottle")
    msg = str(err.value)
    assert msg.startswith("4 prompts too long: ") and "\n" not in msg
    for where, text, tokens in want:
        assert (f"{where}: the prompt {text!r} is {tokens} tokens long, more than the text "
                f"encoder's context of 8") in msg
    assert msg.count("tokens long") == 4  # "a very very very clean bottle." (8) fits


def test_every_prompt_problem_in_one_error_line_of_test_py(tmp_path, capsys):
    """test.py: one error line naming the problems of two files, exit 2, no run."""
    d = _copy_prompts(tmp_path)
    (d / "normal_states.txt").write_text("{}\n{} and {}\n")
    (d / "templates.txt").write_text("a photo of a {}.\na photo of a {}.\n")
    code = run_test_main(VIT.args("mvtec", tmp_path / "run", "zero_shot", "--prompt_dir", str(d)))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"{d / 'normal_states.txt'}:2:" in err[0] and f"{d / 'templates.txt'}:2:" in err[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


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


@pytest.mark.parametrize("total", [75, 76, 77, 78, 79])
def test_the_token_limit_at_its_edge_with_the_real_tokenizer(total):
    """open_clip's tokenizer of ViT-L-14-336 (context 77, start and end tokens included).
    "a a ... a bottle." with k words "a" is k + 2 tokens ("a" x k, "bottle", "."), k + 4 with the
    start and end tokens: 75, 76 and 77 fit, 78 and 79 are refused. Independently, the
    tokenizer's own ids keep every token of a sentence that fits (its end token at position
    total - 1) and cut the "." of one that does not."""
    import open_clip

    from prompts.ensemble import check_lengths

    tokenizer = open_clip.get_tokenizer("ViT-L-14-336")
    sentence = "a " * (total - 4) + "bottle."
    ids = tokenizer([sentence])[0].tolist()
    end, dot = 49407, 269  # the end-of-text and "." ids of CLIP's vocabulary
    encode = lambda t: torch.ones(len(t), 4)  # noqa: E731 - the ids are all this test needs
    if total <= 77:
        assert ids[total - 1] == end and ids[total - 2] == dot and ids[total:] == [0] * (77 - total)
        check_lengths(tokenizer, [[sentence]])
        assert ensemble_text_features(encode, tokenizer, ([sentence], ["a {}"])).shape == (4, 2)
        return
    assert ids[-1] == end and dot not in ids  # the tokenizer would cut the sentence silently
    with pytest.raises(DatasetError) as err:
        ensemble_text_features(encode, tokenizer, (["a bottle."], [sentence]))
    assert str(err.value) == (f"the prompt {sentence!r} is {total} tokens long, more than the text "
                              "encoder's context of 77: the tokenizer would cut them silently; "
                              "shorten the states or templates")


def test_shared_sentences_are_encoded_once_and_give_the_same_features(tmp_path):
    """Two prompt sets sharing a sentence cache (prompt_study.py): a sentence both have is
    encoded once; each set's T equals the uncached ensemble; a bank computes a category once."""
    torch.manual_seed(0)
    table = torch.randn(64, 6)
    seen: list[int] = []

    def encode(ids):
        seen.extend(ids[:, 0].tolist())
        return table[ids[:, 0]]

    def tok(sentences):
        return torch.tensor([[zlib.crc32(s.encode()) % 64] for s in sentences])

    d = _copy_prompts(tmp_path)
    (d / "normal_states.txt").write_text("{}\nclean {}\n")
    (d / "abnormal_states.txt").write_text("broken {}\n")
    (d / "templates.txt").write_text("a {}.\na photo of a {}.\n")
    other = tmp_path / "other"
    shutil.copytree(d, other)
    (other / "abnormal_states.txt").write_text("cracked {}\n")
    shared: dict = {}
    a = TextFeatureBank(encode, tok, PromptSet.load(d), sentences=shared)
    b = TextFeatureBank(encode, tok, PromptSet.load(other), sentences=shared)
    ta = a("bottle")
    assert len(seen) == 6 and len(shared) == 6  # 4 normal + 2 abnormal sentences
    tb = b("bottle")
    assert len(seen) == 8  # only "a cracked bottle." and "a photo of a cracked bottle." new
    for t, folder in ((ta, d), (tb, other)):
        plain = ensemble_text_features(encode, tok, build_prompts("bottle", folder))
        torch.testing.assert_close(t, plain, rtol=0, atol=1e-6)
    assert a("bottle") is ta and len(seen) == 8 + 2 * 6  # the plain ensembles: 6 each
