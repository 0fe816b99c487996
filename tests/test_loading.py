"""engine.core.loading.scoring_model: the one model test.py, predict.py, serve.py and export.py
score with, built from the flags (tiny random CLIP of the golden fixture)."""
from __future__ import annotations

import torch
from conftest import VIT

from engine.config import PredictConfig
from engine.core.loading import read_checkpoint, scoring_model


def _cfg(**flags) -> PredictConfig:
    return PredictConfig(image_dir="x", object_name="bottle", model=VIT.model_name,
                         config_path=str(VIT.config), pretrained=str(VIT.weights),
                         checkpoint_path=str(VIT.checkpoint), image_size=84,
                         features_list=[2, 4, 6, 8], few_shot_features=[6, 8], device="cpu", **flags)


def test_the_flags_make_the_model():
    model, tokenizer = scoring_model(_cfg(), torch.device("cpu"), few=False)
    assert not model.training and model.features_list == [2, 4, 6, 8]
    assert list(model.few_shot_features) == []  # no memory stages without references
    assert tokenizer(["a photo"]).shape[-1] == 77
    few, _ = scoring_model(_cfg(), torch.device("cpu"), few=True)
    assert list(few.few_shot_features) == [6, 8]
    saved = read_checkpoint(VIT.checkpoint)["trainable_linearlayer"]
    mine = few.projections.state_dict()
    assert mine.keys() == saved.keys()
    for k, v in mine.items():  # the checkpoint's own weights, not a fresh initialisation
        assert torch.equal(v, saved[k]), k


def test_precision_from_the_flag_unless_the_caller_fixes_it():
    cpu = torch.device("cpu")
    model, _ = scoring_model(_cfg(precision="bf16"), cpu, few=False)
    assert model.backbone.autocast and model.backbone.autocast_dtype == torch.bfloat16
    fixed, _ = scoring_model(_cfg(precision="bf16"), cpu, few=False, precision="fp32")
    assert not fixed.backbone.autocast  # export.py: the graph is always fp32


def test_the_loader_workers_default_is_written_once():
    """--num_workers: 4 on a GPU, 0 on the CPU by default; a given value (0 too) everywhere."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert (_cfg().loader_workers(cpu), _cfg().loader_workers(gpu)) == (0, 4)
    given = PredictConfig(image_dir="x", object_name="o", checkpoint_path="c.pth", num_workers=0)
    assert given.loader_workers(gpu) == 0
    given.num_workers = 2
    assert (given.loader_workers(cpu), given.loader_workers(gpu)) == (2, 2)


def test_one_tokenizer_per_model_config_and_another_for_another_config(tmp_path):
    """tokenizer_for reuses the tokenizer it built for a model name, unless a config registered
    later under that name has other text settings: then that config's tokenizer (its context)."""
    import json

    from engine.core.loading import register_model_config, tokenizer_for

    name = register_model_config(VIT.config, None)
    first = tokenizer_for(name)
    assert tokenizer_for(name) is first and first.context_length == 77
    assert first("a bottle").shape == (1, 77)
    cfg = json.loads(VIT.config.read_text())
    cfg["text_cfg"]["context_length"] = 24
    other = tmp_path / VIT.config.name  # the same file name: the same model name
    other.write_text(json.dumps(cfg))
    try:
        assert register_model_config(other, None) == name
        short = tokenizer_for(name)
        assert short is not first and short("a bottle").shape == (1, 24)
    finally:
        register_model_config(VIT.config, None)  # the fixture's config again, for later tests
    assert tokenizer_for(name) is first
