"""engine.evaluate.runs, unit by unit: the runs one test.py call plans. Zero-shot is one run;
few-shot is one run per (k, seed), k major, each with k references per category drawn as the
released code draws them (``torch.randint`` under a generator seeded with the seed and the
category); on a set without an official split the references come from the normal test images
and are left out of that run's test set; a ``--reference_list`` is one run (k = the longest
list, no seed)."""
from __future__ import annotations

import json
import zlib

import pytest
import torch
from conftest import GOLDEN

from datasets.anomaly_dataset import Sample, load_meta, make_samples
from datasets.sets.index_format import EVERY_IMAGE, LEFT_OUT
from errors import DatasetError

from engine.evaluate.runs import FewShotRun, ZeroShotRun, plan_runs

MVTEC = GOLDEN / "data" / "mvtec"


def released_draw(normal: list[str], k: int, seed: int, cls: str) -> list[str]:
    """The references the released protocol draws: k indices with replacement from a generator
    seeded with (seed, category), as ``datasets.references`` documents it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(cls.encode()))
    return [normal[i] for i in torch.randint(0, len(normal), (k,), generator=g).tolist()]


def _mvtec():
    meta = load_meta(MVTEC, "mvtec")
    return meta, make_samples(MVTEC, "test", None, "mvtec", meta)


def test_zero_shot_is_one_run_without_references():
    meta, test = _mvtec()
    runs = plan_runs("zero_shot", [1, 2], [1, 2], None, meta, MVTEC, test, "mvtec")
    assert len(runs) == 1 and isinstance(runs[0], ZeroShotRun)
    (run,) = runs
    assert run.mode == "zero_shot" and run.label == "zero-shot" and run.folder() == ""
    assert run.info() == {}  # MVTec AD is no benchmark set of datasets.sets: nothing to record


def test_few_shot_plans_one_run_per_k_and_seed_with_the_released_draws():
    meta, test = _mvtec()
    runs = plan_runs("few_shot", [1, 2, 4], [1, 2, 3], None, meta, MVTEC, test, "mvtec")
    assert [(r.k, r.seed) for r in runs] == [(k, s) for k in (1, 2, 4) for s in (1, 2, 3)]
    assert [r.folder() for r in runs[:4]] == ["k1_seed1", "k1_seed2", "k1_seed3", "k2_seed1"]
    assert runs[4].label == "k=2 seed=2" and runs[4].mode == "few_shot"
    train = {c: [e["img_path"] for e in rows if not e["anomaly"]] for c, rows in meta["train"].items()}
    tested = {s.img_path for v in test.values() for s in v}
    for r in runs:
        assert set(r.references) == {"bottle", "grid"}
        for cls, refs in r.references.items():
            assert refs == released_draw(train[cls], r.k, r.seed, cls), (r.label, cls)
            assert not set(refs) & tested  # references come from the train split only
        assert r.left_out is None and r.info() == {"k_shot": r.k, "seed": r.seed}
        assert all(r.tests(s.cls_name, s.img_path) for v in test.values() for s in v)
    # another seed draws other images (5 train images per category: not all seeds agree)
    assert len({tuple(r.references["bottle"]) for r in runs if r.k == 2}) > 1


def _no_split_set(tmp_path, n_normal: int = 5, n_bad: int = 2):
    """A KolektorSDD-like index (no official split: every image is a test image)."""
    normal = [Sample(f"part/ok/{i}.png", "", "part", "good", 0) for i in range(n_normal)]
    bad = [Sample(f"part/bad/{i}.png", f"part/bad/{i}_mask.png", "part", "bad", 1)
           for i in range(n_bad)]
    for s in normal + bad:
        (tmp_path / s.img_path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / s.img_path).write_bytes(b"")  # a --reference_list is checked on disk
    meta = {"dataset": "ksdd", "index_version": 2, "official_split": False,
            "test_images": EVERY_IMAGE, "test": {}}
    return meta, {"part": normal + bad}


def test_without_an_official_split_references_are_drawn_from_the_test_images_and_left_out(tmp_path):
    meta, test = _no_split_set(tmp_path)
    (zero,) = plan_runs("zero_shot", [3], [1], None, meta, tmp_path, test, "ksdd")
    assert zero.info() == {"test_images": EVERY_IMAGE}
    normal = [s.img_path for s in test["part"] if not s.anomaly]
    seeds = range(1, 9)
    draws = {s: released_draw(normal, 3, s, "part") for s in seeds}
    dup = next(s for s in seeds if len(set(draws[s])) < 3)  # a draw with a repeated image
    runs = plan_runs("few_shot", [3], [1, dup], None, meta, tmp_path, test, "ksdd")
    for r in runs:
        refs = draws[r.seed]
        assert r.references == {"part": refs}
        assert r.left_out == {"part": list(dict.fromkeys(refs))}  # each image once, drawn order
        assert r.test_images == LEFT_OUT
        assert r.info() == {"k_shot": 3, "seed": r.seed, "test_images": LEFT_OUT,
                            "references_left_out": len(set(refs))}
        for s in test["part"]:
            assert r.tests("part", s.img_path) == (s.img_path not in refs), s.img_path
    assert runs[1].info()["references_left_out"] < 3  # the repeated image counted once


def test_a_reference_list_is_one_run_of_the_longest_list(tmp_path):
    meta, test = _no_split_set(tmp_path)
    listed = tmp_path / "refs.json"
    listed.write_text(json.dumps({"part": ["part/ok/1.png", "part/ok/1.png", "part/ok/3.png"]}))
    (run,) = plan_runs("few_shot", [1, 2], [1, 2], str(listed), meta, tmp_path, test, "ksdd")
    assert isinstance(run, FewShotRun) and (run.k, run.seed) == (3, None)
    assert run.label == "k=3 (listed)"
    assert run.references == {"part": ["part/ok/1.png", "part/ok/1.png", "part/ok/3.png"]}
    assert run.left_out == {"part": ["part/ok/1.png", "part/ok/3.png"]}
    assert not run.tests("part", "part/ok/3.png") and run.tests("part", "part/ok/0.png")
    assert run.info()["references_left_out"] == 2

    mvtec_meta, mvtec_test = _mvtec()  # with a train split nothing is left out
    refs = {"bottle": ["bottle/train/good/002.png"],
            "grid": ["grid/train/good/000.png", "grid/train/good/003.png"]}
    listed.write_text(json.dumps(refs))
    (run,) = plan_runs("few_shot", [1], [7], str(listed), mvtec_meta, MVTEC, mvtec_test, "mvtec")
    assert (run.k, run.seed, run.references, run.left_out) == (2, None, refs, None)
    assert run.info() == {"k_shot": 2, "seed": None}


def test_an_index_of_a_set_without_a_split_written_under_the_old_rule_is_refused(tmp_path):
    meta, test = _no_split_set(tmp_path)
    old = {k: v for k, v in meta.items() if k != "index_version"}  # version 1: held images back
    for mode in ("zero_shot", "few_shot"):
        with pytest.raises(DatasetError, match=r"python -m datasets\.prepare ksdd"):
            plan_runs(mode, [1], [1], None, old, tmp_path, test, "ksdd")
