"""Prompt files and the ensemble at their edges, without a model: where each sentence comes from
(file and line, overrides included), a replace override that names one group only, checks of a
prompt set built in code, tokenizers the length check cannot use, unreadable files.

Every expected value is worked by hand from the small prompt folders written here.
"""
from __future__ import annotations

import json

import pytest
import torch

from errors import DatasetError
from prompts import PromptError, PromptSet, TextFeatureBank, ensemble_text_features
from prompts.ensemble import check_lengths, read_lines


def _folder(tmp_path, overrides: str | None = None):
    d = tmp_path / "p"
    d.mkdir()
    (d / "normal_states.txt").write_text("# normal\n{}\nclean {}\n")       # lines 2, 3
    (d / "abnormal_states.txt").write_text("broken {}\n")                  # line 1
    (d / "templates.txt").write_text("a {}.\n\na photo of a {}.\n")         # lines 1, 3
    if overrides is not None:
        (d / "overrides.json").write_text(overrides)
    return d


def _scan(tmp_path, text: str):
    """``text`` written as tmp_path/overrides.json and scanned against the base states '{}'
    (normal) and 'broken {}' (abnormal): (its path, (overrides, origins, problems))."""
    from prompts.checks import scan_overrides

    path = tmp_path / "overrides.json"
    path.write_text(text)
    return path, scan_overrides(path, ("{}",), ("broken {}",))


OVERRIDES = """{
  "_comment": "ignored",
  "bottle": {
    "object": "glass bottle",
    "abnormal": ["cracked {}"]
  },
  "screw": {"mode": "replace", "normal": ["shiny {}"]}
}
"""


def test_each_sentence_named_with_the_lines_it_is_made_of(tmp_path):
    """The state's file:line in the template's file:line, an override's state at its line in
    overrides.json (line 5), its object word put in."""
    d = _folder(tmp_path, OVERRIDES)
    n, a, t, o = (str(d / f) for f in ("normal_states.txt", "abnormal_states.txt",
                                       "templates.txt", "overrides.json"))
    assert PromptSet.load(d).sentence_sources("bottle") == {
        "a glass bottle.": f"{n}:2 in {t}:1", "a photo of a glass bottle.": f"{n}:2 in {t}:3",
        "a clean glass bottle.": f"{n}:3 in {t}:1",
        "a photo of a clean glass bottle.": f"{n}:3 in {t}:3",
        "a broken glass bottle.": f"{a}:1 in {t}:1",
        "a photo of a broken glass bottle.": f"{a}:1 in {t}:3",
        "a cracked glass bottle.": f"{o}:5 in {t}:1",
        "a photo of a cracked glass bottle.": f"{o}:5 in {t}:3"}
    # a set built in code knows no lines: nothing to name
    p = PromptSet(("{}",), ("broken {}",), ("a {}.",))
    assert p.sentence_sources("bottle") == {}


def test_a_replace_override_of_one_group_keeps_the_other(tmp_path):
    """screw replaces its normal states only: its abnormal states stay the files'."""
    p = PromptSet.load(_folder(tmp_path, OVERRIDES))
    assert p.states_for("screw") == ("screw", ("shiny {}",), ("broken {}",))
    assert p.build_prompts("screw") == (["a shiny screw.", "a photo of a shiny screw."],
                                        ["a broken screw.", "a photo of a broken screw."])
    assert p.states_for("bottle") == ("glass bottle", ("{}", "clean {}"),
                                      ("broken {}", "cracked {}"))


def test_a_prompt_set_built_in_code_is_checked_when_used():
    p = PromptSet(("{}",), ("broken {}",), ("a {}.",), {"bottle": {"mode": "merge"}})
    with pytest.raises(PromptError) as err:
        p.states_for("bottle")
    assert err.value.problems == ["overrides for 'bottle': mode must be 'extend' or 'replace', "
                                  "not 'merge'"]
    assert p.states_for("screw") == ("screw", ("{}",), ("broken {}",))


def test_read_lines(tmp_path):
    d = _folder(tmp_path)
    assert read_lines(d / "normal_states.txt") == ("{}", "clean {}")
    (d / "bad.txt").write_text("{}\nno placeholder\n{}\n")
    with pytest.raises(PromptError) as err:
        read_lines(d / "bad.txt")
    assert [q.split(": ", 1)[0] for q in err.value.problems] == [f"{d / 'bad.txt'}:2",
                                                                f"{d / 'bad.txt'}:3"]


def test_unreadable_files_and_an_overrides_file_that_is_not_an_object(tmp_path):
    d = _folder(tmp_path, "[1, 2]\n")
    (d / "templates.txt").write_bytes(b"a \xff {}.\n")
    with pytest.raises(PromptError) as err:
        PromptSet.load(d)
    assert err.value.problems[0].startswith(f"{d / 'templates.txt'}: cannot read it as UTF-8")
    assert err.value.problems[1] == f"{d / 'overrides.json'}:1: must be a JSON object of " \
                                    "categories"
    assert len(err.value.problems) == 2


class _Counting:
    """A tokenizer with ``encode`` (whitespace words) and a context of ``context_length``."""

    def __init__(self, context_length, fail=False):
        self.context_length, self.fail = context_length, fail

    def encode(self, text):
        if self.fail:
            raise RuntimeError("no plain encode here")
        return text.split()

    def __call__(self, texts):
        return torch.zeros(len(texts), 1, dtype=torch.long)


def test_tokenizers_the_length_check_cannot_use_are_not_checked():
    """No context length (0 or absent), no encode(), or an encode() that fails: nothing is
    refused; with a context of 4 (2 words + start and end), 3 words are."""
    long = [["one two three"]]
    no_length = _Counting(4)
    no_length.__dict__.pop("context_length")  # encode() but no context_length at all
    for tok in (_Counting(0), _Counting(None), _Counting(4, fail=True), no_length,
                lambda texts: torch.zeros(len(texts), 1, dtype=torch.long)):
        check_lengths(tok, long)
    check_lengths(_Counting(4), [["one two"]])
    with pytest.raises(DatasetError, match="'one two three' is 5 tokens long, more than the text "
                                        "encoder's context of 4"):
        check_lengths(_Counting(4), long)


def test_text_features_carry_no_autograd_history():
    """An encoder with trainable weights: T is computed without building a graph."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(1, 3)
    t = ensemble_text_features(lambda ids: layer(ids.float()), lambda s: torch.ones(len(s), 1),
                               (["a"], ["b"]))
    assert t.shape == (3, 2) and not t.requires_grad


def test_a_bank_without_prompts_uses_the_packaged_files():
    bank = TextFeatureBank(lambda ids: torch.ones(len(ids), 2), lambda s: torch.ones(len(s), 1))
    assert bank.prompts == PromptSet.load() and len(bank.prompts.templates) == 35
    assert json.loads(json.dumps(bank.prompts.overrides)) == {}


def test_a_prompt_set_is_a_value(tmp_path):
    """A bank, a cache and a study's variants share one PromptSet: its lists cannot be replaced
    after it was read."""
    from dataclasses import FrozenInstanceError

    ps = PromptSet.load(_folder(tmp_path))
    with pytest.raises(FrozenInstanceError):
        ps.templates = ("{}",)
    assert ps.templates == ("a {}.", "a photo of a {}.")


def test_an_extend_override_repeating_a_normal_state_is_refused(tmp_path):
    """The normal states of an override are checked against normal_states.txt (and the abnormal
    ones against abnormal_states.txt): 'clean {}' is line 3 of the normal file."""
    d = _folder(tmp_path, '{"bottle": {"normal": ["clean {}"]}}')
    with pytest.raises(PromptError) as err:
        PromptSet.load(d)
    assert str(err.value) == (f"{d / 'overrides.json'}:1: 'bottle': normal state 'clean {{}}' is "
                              "already in normal_states.txt (with mode 'extend' it would weigh "
                              "twice)")


def test_a_template_that_cannot_be_filled_is_refused_before_any_work(tmp_path):
    """'a {} with {' has its one '{}', so the files load; filling it in for a category fails,
    and load_prompts does that for every category at once."""
    from prompts.ensemble import load_prompts

    d = _folder(tmp_path)
    (d / "templates.txt").write_text("a {} with {\n")
    PromptSet.load(d)
    with pytest.raises(DatasetError, match=r"^bad prompt files: Single '\{' encountered"):
        load_prompts(d, ["bottle"])


def test_two_long_prompts_are_counted():
    """Each sentence is 3 words + the start and end tokens = 5 tokens, over a context of 4."""
    with pytest.raises(DatasetError, match=r"^2 prompts too long: the prompt 'one two three' is "
                                           r"5 tokens long"):
        check_lengths(_Counting(4), [["one two three"], ["four five six"]])


def test_a_state_written_with_an_escape_is_named_at_its_category(tmp_path):
    """'cr\\u00e4cked' is 'cräcked' once parsed, which the file's text does not contain: the
    problem is named at the line of its category's key (line 3), not guessed elsewhere."""
    path, (overrides, origins, problems) = _scan(tmp_path, (
        '{\n  "_c": "x",\n  "bottle": {\n    "normal": ["cr\\u00e4cked"]\n  }\n}\n'))
    assert overrides == {"bottle": {"normal": ["cräcked"]}}
    assert origins == {("bottle", "normal", "cräcked"): f"{path}:3"}
    assert problems == [f"{path}:3: 'bottle': normal state 'cräcked' needs exactly one '{{}}' "
                        "placeholder"]



def test_the_same_bad_state_in_two_categories_is_named_at_each_ones_line(tmp_path):
    """The search for a value starts at its own category: the second category's copy of a
    state is named at line 6, not at the first category's line 3."""
    path, (_, origins, problems) = _scan(tmp_path, (
        '{\n  "screw": {\n    "normal": ["cracked"]\n  },\n'
        '  "bottle": {\n    "normal": ["cracked"]\n  }\n}\n'))
    need = "normal state 'cracked' needs exactly one '{}' placeholder"
    assert problems == [f"{path}:3: 'screw': {need}", f"{path}:6: 'bottle': {need}"]
    assert origins[("bottle", "normal", "cracked")] == f"{path}:6"

def test_an_overrides_path_that_cannot_be_read_is_named(tmp_path):
    from prompts.checks import scan_overrides

    folder = tmp_path / "overrides.json"
    folder.mkdir()  # a folder: reading it fails with an OSError
    overrides, origins, problems = scan_overrides(folder, (), ())
    assert (overrides, origins, len(problems)) == ({}, {}, 1)
    assert problems[0].startswith(f"{folder}: cannot read it as UTF-8 text (")


def test_an_unknown_key_and_a_bad_mode_are_named_at_their_own_lines(tmp_path):
    """Unknown keys 'colour' (line 3) and 'size' (line 4): the first is named; the mode 'merge'
    is on line 5, not at its category's key (line 2)."""
    path, (_, _, problems) = _scan(tmp_path, (
        '{\n  "bottle": {\n    "colour": "red",\n    "size": 3,\n'
        '    "mode": "merge"\n  }\n}\n'))
    assert problems == [
        f"{path}:3: 'bottle': unknown keys ['colour', 'size'] (known: object, normal, "
        "abnormal, mode)",
        f"{path}:5: 'bottle': mode must be 'extend' or 'replace', not 'merge'"]


def test_a_state_list_that_is_not_a_list_does_not_hide_the_other_groups_problems(tmp_path):
    """'normal' is a string, and the abnormal state has no '{}': both are named at once."""
    from prompts.checks import override_problems

    entry = {"normal": "clean {}", "abnormal": ["no placeholder"]}
    assert [what for *_, what in override_problems(entry, ("{}",), ("broken {}",))] == [
        "'normal' must be a list of states (strings)",
        "abnormal state 'no placeholder' needs exactly one '{}' placeholder"]


def test_the_count_of_problems_is_said_from_two_on():
    assert str(PromptError(["a.json:1: x"])) == "a.json:1: x"
    assert str(PromptError(["a", "b"])) == "2 problems: a; b"


def test_values_are_named_at_their_own_lines_whatever_the_files_edges(tmp_path):
    """A file that starts with an empty line and ends without a newline: the blank object word
    is named at line 4, the 'normal' that is not a list at line 5, the state 'bottle' (the
    category's own name) at line 6, not at the key of line 3; the escaped state of 'screw' is
    not in the text as parsed, so it is named at its category's key, line 8."""
    path, (_, _, problems) = _scan(tmp_path, (
        '\n{\n  "bottle": {\n    "object": "  ",\n    "normal": "clean {}",\n'
        '    "abnormal": ["bottle"]\n  },\n  "screw": {"normal": ["cr\\u00e4ck"]}\n}'))
    assert problems == [
        f"{path}:4: 'bottle': object must be a non-empty word, not '  '",
        f"{path}:5: 'bottle': 'normal' must be a list of states (strings)",
        f"{path}:6: 'bottle': abnormal state 'bottle' needs exactly one '{{}}' placeholder",
        f"{path}:8: 'screw': normal state 'cräck' needs exactly one '{{}}' placeholder"]


def test_a_state_listed_three_times_is_named_at_its_second_and_third_lines(tmp_path):
    path, (_, _, problems) = _scan(tmp_path, (
        '{\n  "bottle": {\n    "abnormal": [\n      "dent {}",\n      "dent {}",\n'
        '      "dent {}"\n    ]\n  }\n}\n'))
    twice = "abnormal state 'dent {}' is listed twice (it would weigh twice)"
    assert problems == [f"{path}:5: 'bottle': {twice}", f"{path}:6: 'bottle': {twice}"]


def test_placeholders_and_the_mode_against_the_base_states():
    """Two '{}' are as wrong as none; with mode 'replace' a base state may be listed again;
    with 'extend' (as a file gives it, or by default) it may not."""
    from prompts.checks import override_problems

    def problems(entry):
        return [what for *_, what in override_problems(entry, ("{}",), ("broken {}",))]

    assert problems({"normal": ["a {} on {}"]}) == [
        "normal state 'a {} on {}' needs exactly one '{}' placeholder"]
    assert problems({"mode": "replace", "normal": ["{}"], "abnormal": ["broken {}"]}) == []
    twice = ("normal state '{}' is already in normal_states.txt (with mode 'extend' it would "
             "weigh twice)")
    assert problems(json.loads('{"mode": "extend", "normal": ["{}"]}')) == [twice]
    assert problems({"normal": ["{}"]}) == [twice]
