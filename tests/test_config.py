"""engine.config: the flags several commands take are declared once (in a flag group of
``engine/config/flags.py``) and mean the same in every command that takes them."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from engine.config import (
    EvalConfig,
    ExportConfig,
    FewShotStageFlags,
    PredictConfig,
    PromptFlags,
    ReferenceDirFlags,
    ServeConfig,
    StudyConfig,
    ThresholdFlags,
    TrainConfig,
)

CONFIG = Path(__file__).resolve().parents[1] / "engine" / "config"
GROUPS = (PromptFlags, FewShotStageFlags, ReferenceDirFlags, ThresholdFlags)
# the smallest valid settings of each command
NEEDS = {EvalConfig: {"checkpoint_path": "c.pth"}, StudyConfig: {"checkpoint_path": "c.pth"},
         TrainConfig: {}, ExportConfig: {"output": "o.onnx", "object_name": "screw",
                                         "checkpoint_path": "c.pth"},
         PredictConfig: {"image_dir": "in", "object_name": "screw", "checkpoint_path": "c.pth"},
         ServeConfig: {"object_name": "screw", "checkpoint_path": "c.pth"}}


def _declared() -> dict[str, list[str]]:
    """field name -> the classes of engine/config/ whose body declares it."""
    out: dict[str, list[str]] = {}
    for f in sorted(CONFIG.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                        out.setdefault(stmt.target.id, []).append(node.name)
    return out


def test_each_flag_of_a_group_is_declared_once():
    declared = _declared()
    for group in GROUPS:
        for f in dataclasses.fields(group):
            assert declared[f.name] == [group.__name__], (f.name, declared[f.name])


@pytest.mark.parametrize("cls", list(NEEDS), ids=lambda c: c.__name__)
def test_every_command_has_its_groups_flags_with_one_meaning(cls):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for group in GROUPS:
        if not issubclass(cls, group):
            continue
        for f in dataclasses.fields(group):
            assert fields[f.name].metadata["help"] == f.metadata["help"], (cls, f.name)
    takes = {g.__name__ for g in GROUPS if issubclass(cls, g)}
    want = {"EvalConfig": {"PromptFlags", "FewShotStageFlags"}, "TrainConfig": {"PromptFlags"}}
    want["StudyConfig"] = want["EvalConfig"]
    want["PredictConfig"] = want["ExportConfig"] = want["ServeConfig"] = {g.__name__ for g in GROUPS}
    assert takes == want[cls.__name__]


@pytest.mark.parametrize("cls", [c for c in NEEDS if issubclass(c, FewShotStageFlags)],
                         ids=lambda c: c.__name__)
def test_the_memory_bank_stages_default_to_the_map_stages_in_every_command(cls):
    cfg = cls(**NEEDS[cls], features_list=[3, 7])
    assert cfg.few_shot_features == [3, 7]
    cfg.features_list.append(9)  # a copy, not the same list
    assert cfg.few_shot_features == [3, 7]
    assert cls(**NEEDS[cls], features_list=[3, 7], few_shot_features=[7]).few_shot_features == [7]


def test_the_backbone_flags_come_first_then_the_groups_then_the_commands_own():
    names = [f.name for f in dataclasses.fields(PredictConfig)]
    assert names[0] == "model" and names.index("debug") < names.index("prompt_dir")
    assert names.index("prompt_dir") < names.index("few_shot_features") < \
        names.index("reference_dir") < names.index("thresholds") < names.index("image_dir")
