"""engine.predict.prediction, unit by unit (no model run): the final image score of each kind,
what a resumed run shares with the killed one and which files it scores again, the thresholds
and object settled from the flags and an export's sidecar, and the result files written from a
finished run's records (rows in the folder's order whatever rank wrote them)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datasets.normalization import OPENAI_MEAN, OPENAI_STD
from errors import DatasetError
from utils.visualize import ColorScale

from engine.config import PredictConfig
from engine.plumbing.distributed import Dist
from engine.plumbing.result_set import open_records
from engine.predict.prediction import (
    PredictJob,
    _records,
    _todo,
    final_scores,
    fingerprint,
    finish,
    interrupted,
    settle_object_name,
    settle_thresholds,
)
from engine.predict.regions import REGION_COLUMNS

LOG = logging.getLogger("aprilgan.test_prediction")


def _job(tmp_path: Path, memory: int = 2, mu: float | None = 0.5, **flags) -> PredictJob:
    """A job whose scorer is built (its facts only); warnings collected in ``job.warned``."""
    base = {"image_dir": str(tmp_path / "images"), "object_name": "bottle",
            "checkpoint_path": "x.pth", "save_path": str(tmp_path / "results")}
    cfg = PredictConfig(**{**base, **flags})
    job = PredictJob(cfg, tmp_path / "staging", Dist(), LOG, Path(cfg.image_dir))
    job.scorer = SimpleNamespace(n_stages=2, n_memory_stages=memory, normal_level=mu,
                                 device=torch.device("cpu"))
    job.warned = []
    job.warn = lambda path, why: job.warned.append((path, why))
    return job


def test_final_scores_of_each_kind(tmp_path):
    text = np.array([0.2, 0.4, 0.6])
    zero = _job(tmp_path, memory=0, mu=None)
    assert zero.mode == "zero_shot" and final_scores(zero, text, np.array([9.0, 1, 2])) is text
    per = _job(tmp_path)  # mu 0.5: rises of 0, 0.5 and 2 (clipped to 1) above it
    got = final_scores(per, text, np.array([0.5, 0.75, 1.5]))
    np.testing.assert_allclose(got, [0.1, 0.45, 0.8], rtol=0, atol=1e-15)  # float64 arithmetic
    rel = _job(tmp_path, image_score="released")  # map maxima min-max over the folder: 0, .5, 1
    np.testing.assert_allclose(final_scores(rel, text, np.array([1.0, 2, 3])), [0.1, 0.45, 0.8],
                               rtol=0, atol=1e-15)
    assert rel.warned == []
    np.testing.assert_allclose(final_scores(rel, text, np.array([2.0, 2, 2])), [0.1, 0.2, 0.3],
                               rtol=0, atol=1e-15)
    ((where, why),) = rel.warned  # one maximum for all: the map term is 0, and it says so
    assert where == str(rel.image_dir) and "share one maximum" in why and "per_image" in why


def test_a_resumed_run_shares_the_settings_and_scores_unfinished_batches_again(tmp_path):
    config = {"image_dir": "i", "object_name": "o", "checkpoint_path": "c", "image_size": 84,
              "resume": True, "restart": False, "debug": True, "num_workers": 2, "batch_size": 8,
              "save_path": "s", "no_report": True}
    assert fingerprint(config) == {"image_dir": "i", "object_name": "o", "checkpoint_path": "c",
                                   "image_size": 84}
    out = tmp_path / "staging"
    out.mkdir()
    cfg = SimpleNamespace(save_path="results/x")
    assert "no image was scored yet" in str(interrupted(out, cfg))
    rec = lambda p, t: json.dumps({"path": p, "text_score": t}) + "\n"  # noqa: E731
    (out / "records-r0.jsonl").write_text(rec("a.png", 0.1) + rec("c.png", 0.3))
    (out / "records-r1.jsonl").write_text(rec("b.png", 0.2))
    msg = str(interrupted(out, cfg))
    assert msg.startswith("3 scored image(s) are kept in results/x") and "--resume" in msg
    with open(out / "records-r1.jsonl", "a") as f:  # a line that does not parse, then a later
        f.write('{"path": "d.pn\n' + rec("a.png", 0.7))  # attempt's record of a.png
    done = _records(out)
    assert sorted(done) == ["a.png", "b.png", "c.png"] and done["a.png"]["text_score"] == 0.7
    with open(out / "records-r0.jsonl", "a") as f:  # a file that could not be read
        f.write(json.dumps({"path": "u.png", "error": "cannot identify image file"}) + "\n")
    # a.png recorded twice, u.png not scored, the cut line nothing: still 3 scored images
    assert str(interrupted(out, cfg)).startswith("3 scored image(s) are kept in results/x")
    (out / "records-r0.jsonl").write_text(rec("a.png", 0.1) + rec("c.png", 0.3))
    paths = ["a.png", "b.png", "c.png", "d.png", "e.png"]  # batches of 2: ab, cd, e
    assert _todo(paths, Dist(), 2, done) == ["c.png", "d.png", "e.png"]  # c again with d
    assert _todo(paths, Dist(0, 2), 2, done) == ["e.png"]  # rank 0: batches ab and e
    assert _todo(paths, Dist(1, 2), 2, done) == ["c.png", "d.png"]  # rank 1: batch cd
    assert _todo(paths, Dist(), 2, {}) == paths



@pytest.mark.parametrize("killed_mid_line", [True, False])
def test_a_resumed_run_appends_after_a_line_a_kill_cut(tmp_path, killed_mid_line):
    """A kill in the middle of a record leaves a line without its newline; the resumed run's
    first record must not be glued to it (both would be lost)."""
    path = tmp_path / "records-r0.jsonl"
    whole = '{"path": "a.png", "text_score": 0.1}\n{"path": "b.png", "text_score": 0.2}\n'
    path.write_text(whole + ('{"path": "c.pn' if killed_mid_line else ""))
    with open_records(path) as sink:
        sink.write('{"path": "c.png", "text_score": 0.3}\n')
    assert path.read_text() == whole + '{"path": "c.png", "text_score": 0.3}\n'
    assert sorted(_records(tmp_path)) == ["a.png", "b.png", "c.png"]
    with open_records(tmp_path / "records-r1.jsonl") as sink:  # a first attempt: a new file
        sink.write("x\n")
    assert (tmp_path / "records-r1.jsonl").read_text() == "x\n"


def _sidecar(path: Path, **over) -> Path:
    path.write_text(json.dumps({
        "format": "aprilgan-onnx", "format_version": 1, "object_name": "screw", "mode": "few_shot",
        "image_size": 28, "score": {}, "features_list": [2, 8],
        "preprocessing": {"resize": "squash", "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)},
        **over}))
    return path


def test_an_export_names_the_object_and_fills_the_thresholds_no_flag_set(tmp_path):
    onnx = str(tmp_path / "m.onnx")
    _sidecar(tmp_path / "m.onnx.json")
    cfg = PredictConfig(image_dir="x", onnx=onnx)
    settle_object_name(cfg)
    assert cfg.object_name == "screw"  # the sidecar's, for the log, scores.json and the report
    given = PredictConfig(image_dir="x", onnx=onnx, object_name="bottle")
    settle_object_name(given)
    assert given.object_name == "bottle"

    meta = {"model": {"name": "tiny-vit"}, "image_size": 28, "features_list": [2, 8],
            "few_shot_features": [8], "references": {"count": 2}}
    for flags, want, source in (
            ({"image_threshold": 0.5}, (0.5, 1.2), f"command line; pixel from {onnx} (sidecar)"),
            ({}, (0.7, 1.2), f"{onnx} (sidecar)")):
        job = _job(tmp_path, memory=1, mu=0.9, onnx=onnx, checkpoint_path=None, **flags)
        job.scorer.onnx = SimpleNamespace(meta=meta, thresholds={"image": 0.7, "pixel": 1.2,
                                                                  "precision": "bf16"})
        settle_thresholds(job)
        assert job.definition == {"mode": "few_shot", "image_score": "per_image", "model": "tiny-vit",
                                  "image_size": 28, "features_list": [2, 8],
                                  "few_shot_features": [8], "k_shot": 2, "precision": "fp32"}
        assert (job.thresholds["image"], job.thresholds["pixel"], job.thresholds["source"]) == \
            (*want, source)
        assert job.scale == ColorScale(0.0, 2.4, "pixel threshold 1.2 at mid-scale")
        ((where, why),) = job.warned  # fitted at bf16, scored at fp32
        assert where == f"{onnx} (sidecar thresholds)" and "fitted at bf16" in why


def test_torch_thresholds_come_from_the_flags_and_the_scale_from_the_references(tmp_path):
    job = _job(tmp_path, memory=1, mu=0.9, model="tiny-vit", image_size=28, features_list=[2, 8],
               few_shot_features=[8])
    job.refs = ["r0.png", "r1.png", "r2.png"]
    settle_thresholds(job)
    assert job.definition["k_shot"] == 3 and job.definition["precision"] == "fp32"
    assert job.thresholds == {"image": None, "pixel": None, "source": None}
    assert job.scale == ColorScale(0.0, 1.8, "references' map peak 0.9 at mid-scale")
    job = _job(tmp_path, heatmap_scale="image", pixel_threshold=1.0)
    settle_thresholds(job)
    assert job.thresholds["pixel"] == 1.0 and job.scale is None  # each map on its own min-max


def test_the_result_files_list_the_folder_in_order_with_verdicts_and_regions(tmp_path):
    job = _job(tmp_path, image_threshold=0.4, pixel_threshold=1.0, no_report=True)
    settle_thresholds(job)
    job.out.mkdir()
    job.paths = ["a.png", "b.png", "c.png", "d.png", "e.png"]  # e.png: never scored (none left)
    region = {"region": 1, "x0": 2, "y0": 3, "x1": 10, "y1": 12, "area_px": 50,
              "area_fraction": 0.0123456789, "max_score": 1.5, "mean_score": 1.25}
    lines = {0: [{"path": "c.png", "text_score": 0.6, "map_max": 1.5, "regions": [region]},
                 {"path": "a.png", "text_score": 0.2, "map_max": 0.5, "regions": []}],
             1: [{"path": "d.png", "error": "not an image"},
                 {"path": "b.png", "text_score": 0.4, "map_max": 0.75, "regions": []}]}
    for rank, recs in lines.items():
        (job.out / f"records-r{rank}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    result = finish(job, '{"config": 1}')
    # per_image, mu 0.5: 0.1, 0.45, 0.8; the image threshold 0.4
    assert (job.out / "scores.csv").read_text() == (
        "path,score,anomalous\na.png,0.100000,0\nb.png,0.450000,1\nc.png,0.800000,1\n")
    assert (job.out / "regions.csv").read_text() == (
        ",".join(("path", *REGION_COLUMNS)) + "\nc.png,1,2,3,10,12,50,0.0123457,1.5,1.25\n")
    saved = json.loads((job.out / "scores.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [(i["path"], i["anomalous"]) for i in saved["images"]] == \
        [("a.png", False), ("b.png", True), ("c.png", True)]
    assert (saved["n_files"], saved["n_scored"], saved["skipped"]) == \
        (5, 3, [{"path": "d.png", "error": "not an image"}])
    assert saved["mode"] == "few_shot" and saved["image_score"] == "per_image"
    assert saved["image_dir"] == str(job.image_dir.resolve())
    assert (job.out / "config.json").read_text() == '{"config": 1}'
    assert not list(job.out.glob("records-r*.jsonl"))  # the records are folded into the files

    bad = _job(tmp_path / "bad")
    settle_thresholds(bad)
    bad.out.mkdir(parents=True)
    bad.paths = ["x.txt"]
    (bad.out / "records-r0.jsonl").write_text(json.dumps({"path": "x.txt", "error": "no"}) + "\n")
    with pytest.raises(DatasetError, match="none of the 1 files"):
        finish(bad, "{}")
