"""Small unit tests that a mutation-testing pass showed were missing: each one fails on a
plausible one-line change (a flipped ``or``/``and``, an exception type dropped from an
``except``, ``0.5 *`` turned into ``0.5 /``, a lost guard) in code whose output a user sees.

Values are worked out by hand (in the comments) or computed independently, never by calling
the function under test a second time.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN
from PIL import Image

from datasets import AnomalyDataset, make_samples
from datasets.normal_only import SynthesizingDataset, training_dataset
from errors import DatasetError, RunLockedError
from models.anomaly_maps import combined_image_scores, per_image_scores

from engine.config import PredictConfig
from engine.core.thresholds import definition, resolve_thresholds
from engine.plumbing.result_set import FAILED_LOG, LOCK, ResultSet


# --- engine.core.thresholds --------------------------------------------------------------------------
def _resolve(path: Path | None, **flags) -> tuple[dict, list[str]]:
    cfg = PredictConfig(image_dir="x", object_name="bottle", checkpoint_path="x.pth",
                        thresholds=str(path) if path else None, **flags)
    warned: list[str] = []
    run = definition("zero_shot", "per_image", "tiny-vit", 84, [2, 4], [2, 4], None)
    return resolve_thresholds(cfg, run, lambda where, why: warned.append(why)), warned


def _thresholds_file(tmp_path: Path, entry: str) -> Path:
    path = tmp_path / "thresholds.json"
    path.write_text('{"mode": "zero_shot", "per_category": {"bottle": %s}}' % entry)
    return path


@pytest.mark.parametrize("flag", ["image_threshold", "pixel_threshold"])
def test_a_flag_alone_names_the_command_line_as_the_source(flag):
    """The source is recorded in scores.json and the ONNX sidecar (which drops thresholds
    that have no source)."""
    thr, warned = _resolve(None, **{flag: 0.5})
    key = flag.split("_")[0]
    assert thr[key] == 0.5 and thr["source"] == "command line" and warned == []
    assert thr["image" if key == "pixel" else "pixel"] is None


@pytest.mark.parametrize("flag", ["image_threshold", "pixel_threshold"])
def test_a_flag_over_a_file_keeps_the_file_as_the_source(tmp_path, flag):
    path = _thresholds_file(tmp_path, '{"image": 0.7, "pixel": 1.5}')
    thr, _ = _resolve(path, **{flag: 0.25})
    assert thr["source"] == f"{path.resolve()} [bottle]"
    want = (0.25, 1.5) if flag == "image_threshold" else (0.7, 0.25)
    assert (thr["image"], thr["pixel"]) == want


@pytest.mark.parametrize("value", ['"high"', "[0.5]", "{}"])
def test_a_threshold_that_is_not_a_number_is_a_clear_error(tmp_path, value):
    """float("high") raises ValueError, float([0.5]) TypeError: both are a DatasetError that
    names the category and the value, not a traceback."""
    path = _thresholds_file(tmp_path, '{"image": %s, "pixel": 1.0}' % value)
    with pytest.raises(DatasetError, match=r"image threshold of 'bottle' is not a number"):
        _resolve(path)


@pytest.mark.parametrize("table, listed", [({"screw": {"image": 1}, "pcb1": {}}, "screw, pcb1"),
                                           ({}, "none")])
def test_a_missing_category_lists_the_ones_the_file_has(tmp_path, table, listed):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"per_category": table}))
    with pytest.raises(DatasetError) as e:
        _resolve(path)
    assert (f"has no thresholds for 'bottle' (it has: {listed}); pass --threshold_category"
            in str(e.value))


# --- models.anomaly_maps: image scores of the few-shot runs ---------------------------------------
def test_released_few_shot_score_by_hand():
    text = np.array([0.2, 0.4, 0.6, 0.8])
    peak = np.array([1.0, 3.0, 2.0, 5.0])  # min 1, max 5: minmax = 0, 0.5, 0.25, 1
    expected = [0.5 * (0.2 + 0), 0.5 * (0.4 + 0.5), 0.5 * (0.6 + 0.25), 0.5 * (0.8 + 1)]
    np.testing.assert_allclose(combined_image_scores(text, peak), expected, rtol=0, atol=1e-12)


def test_released_few_shot_score_when_every_map_has_the_same_peak():
    with pytest.warns(UserWarning, match="share one maximum"):
        got = combined_image_scores(np.array([0.3, 0.9]), np.array([2.0, 2.0]))
    np.testing.assert_allclose(got, [0.15, 0.45], rtol=0, atol=1e-12)  # map term 0, not NaN


@pytest.mark.parametrize("mu, peak, text, expected", [
    (0.5, 0.6, 0.3, 0.5 * (0.3 + 0.2)),  # a normal level below 1: s = (0.6 - 0.5) / 0.5 = 0.2
    (0.0, 0.0, 0.4, 0.5 * (0.4 + 0.0)),  # mu = 0 is taken as a tiny positive level, not 0/0
    (0.0, 1e-3, 0.4, 0.5 * (0.4 + 1.0)),  # ... so any peak above it is far above: s = 1
])
def test_per_image_score_at_small_normal_levels(mu, peak, text, expected):
    got = per_image_scores(np.array([text]), np.array([peak]), mu)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [expected], rtol=0, atol=1e-12)


# --- datasets.normal_only: the synthesizing training set ------------------------------------------
class _Recorder:
    """A stand-in synthesizer: marks every pixel as changed and records the mode it was given."""

    def __init__(self):
        self.modes: list[str] = []

    def synth(self, img, epoch, index):
        self.modes.append(img.mode)
        return img, np.ones((img.height, img.width), bool)


def _mvtec_samples(split: str = "test"):
    root = GOLDEN / "data" / "mvtec"
    if not root.is_dir():
        pytest.skip(f"golden fixtures not found under {GOLDEN}")
    return root, [s for c in make_samples(root, split).values() for s in c]


@pytest.mark.parametrize("rate", [-0.1, 1.5, 2.0])
def test_a_synthesis_rate_outside_0_1_is_refused(rate):
    root, samples = _mvtec_samples()
    with pytest.raises(ValueError, match=r"synth_rate must be in \[0, 1\]"):
        SynthesizingDataset(root, samples, 84, 0.0, 111, rate, _Recorder())


def test_the_synthesis_rate_bounds_and_the_synthesizer_it_needs():
    root, samples = _mvtec_samples()
    for rate in (0.0, 1.0):  # both ends are allowed
        ds = SynthesizingDataset(root, samples, 84, 0.0, 111, rate, _Recorder())
        assert ds.synth_rate == rate
    assert SynthesizingDataset(root, samples, 84, 0.0, 111, 0.0).synth_rate == 0.0
    with pytest.raises(ValueError, match="needs a synthesizer"):
        SynthesizingDataset(root, samples, 84, 0.0, 111, 0.5)


def test_the_defaults_are_the_released_dataset():
    """``SynthesizingDataset(root, samples, size)``: no mosaic, no synthesis, as released."""
    root, samples = _mvtec_samples()
    ds = SynthesizingDataset(root, samples, 84)
    assert (ds.aug_rate, ds.synth_rate, ds.synthesizer) == (0.0, 0.0, None)
    i = next(k for k, s in enumerate(samples) if s.anomaly)
    a, b = ds[i], AnomalyDataset(root, samples, 84)[i]
    assert a["label"] == b["label"] == 1 and not a["augmented"]
    assert bool((a["mask"] == b["mask"]).all()) and bool((a["image"] == b["image"]).all())


def test_training_dataset_without_a_rate_is_the_released_one():
    root, samples = _mvtec_samples("train")
    assert type(training_dataset(root, samples, 84, 0.0, 111)) is AnomalyDataset


def test_a_synthesized_sample_is_augmented_so_never_read_from_the_feature_cache():
    """The feature cache serves a sample only when ``is_augmented`` is False: a synthesized
    image must never get the features of its clean original."""
    root, samples = _mvtec_samples()
    ds = SynthesizingDataset(root, samples, 84, 0.0, 111, 1.0, _Recorder())  # no mosaic, P = 1
    assert all(ds.is_synthesized(i) and not ds.is_mosaic(i) and ds.is_augmented(i)
               for i in range(len(samples)))
    plain = SynthesizingDataset(root, samples, 84, 0.0, 111, 0.0)
    assert not any(plain.is_augmented(i) for i in range(len(samples)))


def test_a_quarter_of_the_samples_are_synthesized_at_p_one_quarter():
    """rng.random() < P: about P of the (epoch, index) draws, not 1 - P."""
    root, samples = _mvtec_samples()
    ds = SynthesizingDataset(root, samples, 84, 0.0, 111, 0.25, _Recorder())
    hits = []
    for epoch in range(40):
        ds.set_epoch(epoch)
        hits += [ds.is_synthesized(i) for i in range(len(samples))]
    assert len(hits) >= 200 and 0.15 < np.mean(hits) < 0.35


@pytest.mark.parametrize("mode, given", [("P", "RGB"), ("CMYK", "RGB"), ("L", "L"), ("RGB", "RGB")])
def test_the_synthesizer_gets_a_mode_it_handles(mode, given):
    """Palette and CMYK images are converted to RGB before the defect is drawn; gray and colour
    ones are passed as they are. The mask is the old one OR the defect's (here: every pixel)."""
    root, samples = _mvtec_samples()
    rec = _Recorder()
    ds = SynthesizingDataset(root, samples, 84, 0.0, 111, 1.0, rec)
    img = Image.new("RGB", (6, 4), (10, 200, 30)).convert(mode)
    real = np.zeros((4, 6), np.uint8)
    real[1, 2] = 255  # a real defect pixel, also covered by the synthesized one
    out, mask = ds._synthesize(img, Image.fromarray(real, mode="L"), 0)
    assert rec.modes == [given] and out.mode == given
    assert mask.mode == "L" and np.asarray(mask).tolist() == [[255] * 6] * 4


# --- engine.plumbing.result_set: locks, failures and commits ---------------------------------------------
def test_a_training_run_that_fails_in_a_new_folder_leaves_no_folder(tmp_path):
    """train.py writes log.txt straight into --save_path: a failure before any checkpoint
    removes it with the folders the run created."""
    save = tmp_path / "new" / "run"
    with pytest.raises(DatasetError):
        with ResultSet(save, {"n": 1}, staged=False):
            (save / "log.txt").write_text("checking 12 images\n")
            raise DatasetError("mask of 003.png does not match its image")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("exc, status, error", [
    (DatasetError("loss is not finite at step 7"), "failed", "loss is not finite at step 7"),
    (KeyboardInterrupt(), "interrupted", "interrupted")])
def test_a_training_run_that_fails_after_a_checkpoint_records_why(tmp_path, exc, status, error):
    """The checkpoints stay (for --resume) and run.json says how the run ended."""
    save = tmp_path / "run"
    with pytest.raises(type(exc)):
        with ResultSet(save, {"epochs": 3}, staged=False):
            (save / "epoch_1.pth").write_bytes(b"weights")
            raise exc
    run = json.loads((save / "run.json").read_text())
    assert (run["status"], run["files"], run["config"]) == (status, [], {"epochs": 3})
    assert error in run["error"]
    assert (save / "epoch_1.pth").read_bytes() == b"weights" and not (save / LOCK).exists()


@pytest.mark.parametrize("lock", ["folder", "empty"])
def test_a_lock_that_cannot_be_read_still_means_the_folder_is_in_use(tmp_path, lock):
    """A ``.lock`` that cannot be read (a folder) or is empty (a run killed between creating
    and writing it) is somebody's lock: a clear RunLockedError, not a traceback; the lock is
    left as it was."""
    save = tmp_path / "res"
    save.mkdir()
    if lock == "folder":
        (save / LOCK).mkdir()
    else:
        (save / LOCK).write_text("")
    before = None if lock == "folder" else (save / LOCK).read_text()
    with pytest.raises(RunLockedError, match=r"is in use by another run \(pid \? on "):
        with ResultSet(save, {"n": 1}):
            pass
    assert (save / LOCK).is_dir() if lock == "folder" else (save / LOCK).read_text() == before


def test_a_training_run_that_commits_stays_complete(tmp_path):
    """train.py (not staged): after commit() and a clean exit run.json says complete."""
    save = tmp_path / "run"
    with ResultSet(save, {"epochs": 1}, staged=False) as rs:
        (save / "epoch_1.pth").write_bytes(b"weights")
        rs.commit({"epochs_done": 1})
    run = json.loads((save / "run.json").read_text())
    assert (run["status"], run["epochs_done"]) == ("complete", 1) and "error" not in run
    assert {p.name for p in save.iterdir()} == {"epoch_1.pth", "run.json"}


@pytest.mark.parametrize("records", [False, True])
def test_a_streaming_run_that_fails_keeps_its_staging_only_with_records(tmp_path, records):
    """predict.py (a fingerprint): with records written, the staging folder stays for --resume;
    before the first record it goes and the folder that was there gets log.failed.txt."""
    save = tmp_path / "res"
    save.mkdir()
    with pytest.raises(DatasetError):
        with ResultSet(save, {"n": 1}, fingerprint={"images": 3}) as rs:
            if records:
                (rs.dir / "records.jsonl").write_text('{"path": "a.png"}\n')
            raise DatasetError("cannot read b.png")
    staging = [p.name for p in save.glob(".staging-*")]
    assert len(staging) == (1 if records else 0)
    assert (save / FAILED_LOG).exists() == (not records)
    if not records:
        assert "error: cannot read b.png" in (save / FAILED_LOG).read_text()


def test_a_training_run_that_fails_in_an_existing_folder_records_why(tmp_path):
    """A folder that was there before the run stays, with a run.json that says it failed."""
    save = tmp_path / "run"
    save.mkdir()
    with pytest.raises(DatasetError):
        with ResultSet(save, {"epochs": 3}, staged=False):
            raise DatasetError("no images in train/good")
    run = json.loads((save / "run.json").read_text())
    assert run["status"] == "failed" and "no images in train/good" in run["error"]
    assert {p.name for p in save.iterdir()} == {"run.json"}
