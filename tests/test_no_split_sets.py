"""Sets without an official split (KolektorSDD, ELPV, BrainMRI, Br35H, HeadCT): every image is a
test image. Zero-shot tests them all; each few-shot run draws its references from the normal
images under its seed and leaves them out of its own test set, and its metrics, predictions,
report and the summary agree on that set. An index written under the old rule (normal images
held back) is refused with the command that rebuilds it.

Expected values are worked out by hand from the replicas of tools/synthetic/raw_sets; the
reference draw from the rule references.py documents (``torch.randint(0, n, (k,))`` under a
generator seeded with ``seed * 1_000_003 + crc32(category)``, over the normal images in index
order).
"""
from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import VIT, run_test_main
from sklearn.metrics import average_precision_score, roc_auc_score
from tolerances import assert_metrics_close

from datasets.sets import SETS
from datasets.sets.indexing import prepare
from tools.synthetic.raw_sets import RAW_SETS

# BrainMRI replica: brain_tumor_dataset/no/"1 no.jpg" ... "5 no.jpg", yes/Y1.jpg ... Y3.jpg
NO = [f"brain_tumor_dataset/no/{k} no.jpg" for k in range(1, 6)]
YES = [f"brain_tumor_dataset/yes/Y{k}.jpg" for k in range(1, 4)]

# every test image of each replica whose split rule changed, with its label (hand-read from
# tools/synthetic/raw_sets.py); before, 1 in 5 or 4 in 5 of the normal ones were held back
EVERY_IMAGE = {
    "ksdd": {f"kos{f + 1:02d}/Part{p}.jpg": int((f, p) in ((0, 1), (2, 3)))
             for f in range(3) for p in range(4)},
    "elpv": {f"images/cell{k:04d}.png": int(k in (3, 4, 7)) for k in range(1, 11)},
    "brainmri": {**{p: 0 for p in NO}, **{p: 1 for p in YES}},
    "br35h": {**{f"no/{k} no.jpg": 0 for k in range(1, 6)},
              **{f"yes/Y{k}.jpg": 1 for k in range(1, 4)}},
    "headct": {f"head_ct/head_ct/{k:03d}.png": int(k >= 4) for k in range(6)},
}


def _args(data: Path, out: Path, mode: str, *extra: str, report: bool = False) -> list[str]:
    args = VIT.args("mvtec", out, mode, "--no_mvtec_aupro", *extra, report=report)
    args[args.index("--dataset") + 1] = "brainmri"
    args[args.index("--data_path") + 1] = str(data)
    return args


def _draw(k: int, seed: int, category: str = "brain") -> list[str]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(category.encode()))
    return [NO[i] for i in torch.randint(0, len(NO), (k,), generator=g).tolist()]


@pytest.fixture
def brainmri(tmp_path) -> Path:
    RAW_SETS["brainmri"](tmp_path / "data")
    prepare("brainmri", tmp_path / "data")
    return tmp_path / "data"


@pytest.mark.parametrize("name", sorted(EVERY_IMAGE))
def test_a_set_without_a_split_tests_every_image(tmp_path, name):
    RAW_SETS[name](tmp_path)
    prepare(name, tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    (cat,) = meta["test"]
    assert {r["img_path"]: r["anomaly"] for r in meta["test"][cat]} == EVERY_IMAGE[name]
    assert meta["train"] == {cat: []}
    assert (meta["index_version"], meta["official_split"], meta["test_images"]) == \
        (2, False, "every image")
    assert not SETS[name].official_split


@pytest.mark.parametrize("name, official, test_images", [
    ("btad", True, "the release's test split"), ("isic", True, "the release's test split"),
    ("kvasir", False, "every image"),  # the replica is Kvasir-SEG/{images,masks}: the release
    ("colondb", False, "PraNet's test split")])
def test_an_index_records_which_images_it_tests(tmp_path, name, official, test_images):
    RAW_SETS[name](tmp_path)
    prepare(name, tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert (meta["official_split"], meta["test_images"]) == (official, test_images)


def test_zero_shot_tests_every_image(brainmri, tmp_path):
    assert run_test_main(_args(brainmri, tmp_path / "zs", "zero_shot", "--save_predictions")) == 0
    z = np.load(tmp_path / "zs" / "predictions.npz")
    assert z["img_paths"].tolist() == NO + YES and z["gt_sp"].tolist() == [0] * 5 + [1] * 3
    m = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert (m["mode"], m["test_images"]) == ("zero_shot", "every image")
    assert "references_left_out" not in m


def test_few_shot_runs_leave_their_own_references_out(brainmri, tmp_path):
    """k = 2, seeds 1 and 2 in one evaluation (one backbone pass): each run's references are
    the documented draw from the 5 normal scans, left out of that run only; its metrics are
    those of its predictions, its report lists only what it tested, and each run equals the
    same run made alone."""
    out = tmp_path / "fs"
    assert run_test_main(_args(brainmri, out, "few_shot", "--k_shot", "2", "--seed", "1", "2",
                               "--save_predictions", report=True)) == 0
    tested = {}
    for seed in (1, 2):
        run = out / f"k2_seed{seed}"
        refs = json.loads((run / "references.json").read_text())["brain"]
        assert refs == _draw(2, seed)
        left = set(refs)
        z = np.load(run / "predictions.npz")
        paths = z["img_paths"].tolist()
        assert paths == [p for p in NO if p not in left] + YES  # never its own references
        tested[seed] = paths
        m = json.loads((run / "metrics.json").read_text())
        assert m["references_left_out"] == len(left) == 8 - len(paths)
        assert m["test_images"] == "every image but the run's references"
        per = m["per_category"]["brain"]
        assert per["auroc_sp"] == pytest.approx(roc_auc_score(z["gt_sp"], z["pr_sp"]), abs=1e-9)
        assert per["ap_sp"] == pytest.approx(average_precision_score(z["gt_sp"], z["pr_sp"]),
                                             abs=1e-9)
        (scores_csv,) = (run / "report_files").glob("*/scores.csv")
        reported = [r for r in csv.DictReader(open(scores_csv))]
        assert len(reported) == len(paths)
        assert not any(p in str(r) for r in reported for p in left)
        # the same run alone (its test images filtered before the pass) gives the same files
        alone = tmp_path / f"alone{seed}"
        assert run_test_main(_args(brainmri, alone, "few_shot", "--k_shot", "2", "--seed",
                                   str(seed), "--save_predictions")) == 0
        a = np.load(alone / "predictions.npz")
        assert a["img_paths"].tolist() == paths
        # alone, its images and references go through the backbone in other batches than in
        # the shared pass: float32 rounding apart on some CPUs (3.3e-6 on the maps measured
        # with MKL's Intel AVX2 kernels)
        np.testing.assert_allclose(a["anomaly_maps"], z["anomaly_maps"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(a["pr_sp"], z["pr_sp"], rtol=0, atol=1e-6)
        assert_metrics_close(json.loads((alone / "metrics.json").read_text())["per_category"],
                             m["per_category"])
    assert _draw(2, 1) != _draw(2, 2) and tested[1] != tested[2]  # seeds differ
    summary = json.loads((out / "summary.json").read_text())["k2"]
    ap = [json.loads((out / f"k2_seed{s}" / "metrics.json").read_text())["per_category"]
          ["brain"]["ap_sp"] for s in (1, 2)]
    assert summary["seeds"] == [1, 2]
    assert summary["metrics"]["brain"]["ap_sp"]["mean"] == pytest.approx(sum(ap) / 2, abs=1e-12)


def test_a_reference_list_leaves_its_normal_test_images_out(brainmri, tmp_path, capsys):
    listed = tmp_path / "refs.json"
    listed.write_text(json.dumps({"brain": [NO[1], NO[1], NO[3]]}))
    out = tmp_path / "listed"
    assert run_test_main(_args(brainmri, out, "few_shot", "--reference_list", str(listed),
                               "--save_predictions")) == 0
    z = np.load(out / "predictions.npz")
    assert z["img_paths"].tolist() == [NO[0], NO[2], NO[4]] + YES
    assert json.loads((out / "metrics.json").read_text())["references_left_out"] == 2
    listed.write_text(json.dumps({"brain": [NO[0], YES[0]]}))
    capsys.readouterr()
    assert run_test_main(_args(brainmri, tmp_path / "bad", "few_shot", "--reference_list",
                               str(listed))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Y1.jpg" in err[0] and "an anomalous test image" in err[0]


def test_a_draw_of_every_normal_image_is_refused(tmp_path, capsys):
    """One normal scan left: its k = 1 reference would leave no normal image to test."""
    RAW_SETS["brainmri"](tmp_path / "data")
    for p in NO[1:]:
        (tmp_path / "data" / p).unlink()
    prepare("brainmri", tmp_path / "data")
    capsys.readouterr()
    assert run_test_main(_args(tmp_path / "data", tmp_path / "out", "few_shot", "--k_shot",
                               "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "draws all 1 normal images of 'brain'" in err[0]
    assert "none would be left to test" in err[0]


def _old_rule(meta_path: Path) -> None:
    """Rewrite an index as the version before 2 wrote it: no version fields, 1 in 5 of the
    normal images (the first) in train."""
    meta = json.loads(meta_path.read_text())
    for key in ("index_version", "official_split", "test_images"):
        meta.pop(key)
    (cat,) = meta["test"]
    meta["train"][cat] = [meta["test"][cat].pop(0)]
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("elsewhere", [False, True])
def test_an_index_written_under_the_old_rule_is_refused_naming_the_rebuild(tmp_path, capsys,
                                                                           elsewhere):
    from test_benchmarks import load_script
    raw = tmp_path / "brainmri"
    RAW_SETS["brainmri"](raw)
    home = tmp_path / "index" / "brainmri" if elsewhere else raw
    prepare("brainmri", raw, out=home if elsewhere else None)
    _old_rule(home / "meta.json")
    command = ("python -m datasets.prepare brainmri DATASET_ROOT --out " if elsewhere else
               "python -m datasets.prepare brainmri ") + str(home)
    capsys.readouterr()
    for mode in ("zero_shot", "few_shot"):
        assert run_test_main(_args(home, tmp_path / mode, mode)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and command in err[0], err
        assert "written by an older version" in err[0] and not (tmp_path / mode).exists()
    from datasets.anomaly_dataset import make_samples  # what train.py reads its images with
    from errors import DatasetError

    with pytest.raises(DatasetError, match="written by an older version") as e:
        make_samples(home, "test", kind="brainmri")
    assert command in str(e.value)
    sets_table = load_script("sets_table")
    assert sets_table.main(["list", str(home.parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and command in err[0]
    prepare("brainmri", raw, out=home if elsewhere else None)  # the rebuild the line names
    assert run_test_main(_args(home, tmp_path / "again", "zero_shot")) == 0
    assert sets_table.main(["list", str(home.parent)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"brainmri {home} 1"


def test_an_older_index_of_a_set_with_a_split_is_still_read(tmp_path):
    """BTAD's split did not change: its index from before version 2 is used as it is, its
    runs record the release's test split."""
    RAW_SETS["btad"](tmp_path / "data")
    prepare("btad", tmp_path / "data")
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    for key in ("index_version", "official_split", "test_images"):
        meta.pop(key)
    (tmp_path / "data" / "meta.json").write_text(json.dumps(meta))
    args = _args(tmp_path / "data", tmp_path / "out", "zero_shot")
    args[args.index("--dataset") + 1] = "btad"
    assert run_test_main(args) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["test_images"] == "the release's test split"


def test_a_prompt_study_does_not_score_its_references(brainmri, tmp_path):
    """prompt_study.py runs one few-shot setting: its test images are the run's (the 5 - 2
    normal scans left and the 3 tumours), each through the backbone once, plus the 2
    references: 8 images, not the 10 it would take scoring the references too."""
    import prompt_study

    args = _args(brainmri, tmp_path / "study", "few_shot", "--k_shot", "2", "--seed", "1")
    assert len(set(_draw(2, 1))) == 2
    assert prompt_study.main(args) == 0
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert study["settings"]["backbone_images"] == 3 + 3 + 2
