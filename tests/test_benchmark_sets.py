"""The benchmark-set builders on small replicas of each raw release (tools/synthetic/raw_sets):
the index each must write (splits, labels, masks paired by name), the layouts' quirks (LOCO's
merged masks, KSDD2's black masks of normal images, BTAD's mixed extensions, unlabelled
folders), a missing mask named, and test.py on an image-level and an all-anomalous set (the
undefined metrics null, with the reason)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import VIT, run_test_main
from PIL import Image

from datasets.prepare import main as prepare_main
from datasets.sets import DATASETS, SETS
from datasets.sets.indexing import prepare
from errors import DatasetError
from tools.synthetic.raw_sets import RAW_SETS


def test_every_builder_has_a_replica_and_a_dataset_name():
    assert set(RAW_SETS) == set(SETS)
    assert set(SETS) <= set(DATASETS)


@pytest.mark.parametrize("name", sorted(RAW_SETS))
def test_builder_indexes_its_raw_layout(tmp_path, name):
    want = RAW_SETS[name](tmp_path)
    assert prepare_main([name, str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "meta.json").read_text())
    info = SETS[name]
    assert (meta.get("labels") == "image") == (info.labels == "image")
    assert {c: len(v) for c, v in meta["train"].items()} == want["train"]
    for c, (normal, anomalous) in want["test"].items():
        rows = meta["test"][c]
        assert sum(r["anomaly"] == 0 for r in rows) == normal, c
        assert sum(r["anomaly"] == 1 for r in rows) == anomalous, c
    for split in ("train", "test"):
        for c, rows in meta[split].items():
            for r in rows:
                img = tmp_path / r["img_path"]
                assert img.is_file() and r["cls_name"] == c
                if split == "train":
                    assert r["anomaly"] == 0 and not r["mask_path"]  # references: normal only
                if r["anomaly"] and info.labels == "pixel":
                    with Image.open(img) as im, Image.open(tmp_path / r["mask_path"]) as m:
                        marked = np.asarray(m.convert("L")) > 0
                        # the replica's defect is the bright square its mask marks
                        assert marked.any() and np.asarray(im.convert("L"))[marked].min() > 200
                else:
                    assert not r["mask_path"]
    names = {Path(r["img_path"]).parts[0] for v in meta["test"].values() for r in v}
    assert not any("pred" in n or "private" in n for n in names)


def test_loco_merges_every_mask_of_an_image(tmp_path):
    RAW_SETS["mvtec_loco"](tmp_path)
    prepare("mvtec_loco", tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    logical = next(r for r in meta["test"]["juice_bottle"] if r["specie_name"] ==
                   "logical_anomalies")
    merged = np.asarray(Image.open(tmp_path / logical["mask_path"]))
    want = np.zeros_like(merged, dtype=bool)
    want[2:8, 2:8] = want[30:36, 30:36] = True  # the two defect files, values 1 and 2
    np.testing.assert_array_equal(merged > 0, want)
    assert set(np.unique(merged)) == {0, 255}


def test_ksdd2_black_masks_of_normal_images_are_not_defects(tmp_path):
    RAW_SETS["ksdd2"](tmp_path)
    prepare("ksdd2", tmp_path)
    test = json.loads((tmp_path / "meta.json").read_text())["test"]["surface"]
    assert {Path(r["img_path"]).name: r["anomaly"] for r in test} == {
        "20000.png": 1, "20001.png": 0, "20002.png": 1, "20003.png": 0}


@pytest.mark.parametrize("name, remove", [("btad", "BTech_Dataset_transformed/02/ground_truth/"
                                                    "ko/0021.png"),
                                          ("isic", "ISBI2016_ISIC_Part1_Test_GroundTruth/"
                                                   "ISIC_0000001_Segmentation.png"),
                                          ("mvtec_ad2", "vial/test_public/ground_truth/bad/"
                                                        "001_regular_mask.png")])
def test_a_missing_mask_is_named(tmp_path, name, remove):
    RAW_SETS[name](tmp_path)
    (tmp_path / remove).unlink()
    with pytest.raises(DatasetError, match="has no mask in") as err:
        prepare(name, tmp_path)
    assert Path(remove).stem.replace("_mask", "").replace("_Segmentation", "") in str(err.value)


@pytest.mark.parametrize("name, nulls, reason", [
    ("brainmri", ("auroc_px", "f1_px", "ap_px", "pro"), "image-level labels only"),
    ("kvasir", ("auroc_sp", "f1_sp", "ap_sp"), "only one class")])
def test_undefined_metrics_are_null_with_the_reason(tmp_path, name, nulls, reason):
    RAW_SETS[name](tmp_path / "data")
    prepare(name, tmp_path / "data")
    args = VIT.args("mvtec", tmp_path / "out", "zero_shot", "--no_mvtec_aupro")
    args[args.index("--dataset") + 1] = name
    args[args.index("--data_path") + 1] = str(tmp_path / "data")
    assert run_test_main(args) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    (cat,) = m["per_category"]
    for k, v in m["per_category"][cat].items():
        assert (v is None) == (k in nulls), (k, v)
        if k in nulls:
            assert reason in m["undefined"][cat][k]


def test_one_command_evaluates_every_prepared_set(tmp_path, warm_python):
    """scripts/test_benchmarks.sh over an image-level and an all-anomalous set (medical):
    the runs, one table (– for undefined metrics, means saying over which sets) and an index."""
    import csv
    import subprocess

    from test_predict import MODELS
    data = tmp_path / "data"
    for name in ("brainmri", "kvasir"):
        RAW_SETS[name](data / name)
        prepare(name, data / name)
    (data / "notes").mkdir()  # a folder that is not a prepared set is passed over
    model = ["--model", "tiny-vit", "--config_path", str(MODELS / "tiny-vit.json"),
             "--pretrained", str(MODELS / "tiny-vit-random.pt"), "--image_size", "84",
             "--features_list", "2", "4", "6", "8", "--device", "cpu"]
    r = subprocess.run(["bash", str(Path(__file__).parents[1] / "scripts" / "test_benchmarks.sh"),
                        "--data_root", str(data), "--checkpoint", str(MODELS / "linear-random.pth"),
                        "--results", str(tmp_path / "res"), "--k_shot", "1", *model, "--",
                        "--no_mvtec_aupro"], capture_output=True, text=True, timeout=600,
                       env=warm_python.env())
    assert r.returncode == 0, r.stderr[-3000:]
    res = tmp_path / "res"
    runs = sorted(p.name for p in res.iterdir() if p.is_dir())
    assert runs == ["brainmri_few_shot", "brainmri_zero_shot",
                    "kvasir_zero_shot"]  # kvasir has no normal images: zero-shot only
    rows = {(row["set"], row["setting"]): row for row in csv.DictReader(open(res / "benchmarks.csv"))}
    assert rows[("brainmri", "zero_shot")]["auroc_px"] == "–"
    assert rows[("kvasir", "zero_shot")]["auroc_sp"] == "–"
    med = rows[("mean, medical", "zero_shot")]
    br = json.loads((res / "brainmri_zero_shot" / "metrics.json").read_text())["mean"]
    kv = json.loads((res / "kvasir_zero_shot" / "metrics.json").read_text())["mean"]
    assert med["auroc_px"] == f"{100 * kv['auroc_px']:.1f}"  # the only medical set with masks
    assert med["auroc_sp"] == f"{100 * br['auroc_sp']:.1f}"
    md = (res / "benchmarks.md").read_text()
    assert "auroc_px over kvasir;" in md and "auroc_sp over brainmri;" in md
    # AnomalyCLIP Table 2 reports APRIL-GAN on both (BrainMRI image AUROC 89.3, Kvasir PRO
    # 36.2); the fixture checkpoint records no training set, so nothing is comparable
    pub = {(r["source"], r["set"], r["metric"]): r
           for r in csv.DictReader(open(res / "published.csv"))}
    assert pub[("anomalyclip", "brainmri", "auroc_sp")]["published"] == "89.3"
    assert pub[("anomalyclip", "brainmri", "auroc_sp")]["ours"] == f"{100 * br['auroc_sp']:.1f}"
    assert pub[("anomalyclip", "kvasir", "pro")]["published"] == "36.2"
    assert {r["comparable"] for r in pub.values()} == {"no"}
    index = (res / "index.html").read_text()
    assert "brainmri_zero_shot/report.html" in index and "kvasir_zero_shot/report.html" in index


def test_the_readme_lists_every_set():
    """A row per set saying which images zero-shot tests, where few-shot draws its references
    from and which images it tests."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "| `--dataset` | set | zero-shot tests | few-shot references (k per seed) from | " \
           "few-shot tests |" in readme
    for name, info in SETS.items():
        (row,) = [ln for ln in readme.splitlines() if ln.startswith(f"| `{name}` |")]
        assert f" | {info.test} | {info.train} | {info.few_shot} | " in row, name
        assert info.objects in row and info.licence in row, name
    assert SETS["brainmri"].few_shot == "every image but the run's k references"
    assert SETS["btad"].few_shot == "the zero-shot test images"
    assert SETS["kvasir"].few_shot == "none (no normal images: zero-shot only)"


def test_every_published_set_says_what_its_source_tested():
    """sets_<source>_tested.csv: a row per published set; "ours" empty or one of the
    ``test_images`` our indexes record."""
    import csv

    from datasets.sets.index_format import EVERY_IMAGE, PRANET, TEST_SPLIT
    tables = Path(__file__).parents[1] / "scripts" / "paper_tables"
    for source in ("anomalyclip", "adaclip"):
        published = [r["set"] for r in csv.DictReader(open(tables / f"sets_{source}.csv"))]
        tested = list(csv.DictReader(open(tables / f"sets_{source}_tested.csv")))
        assert [r["set"] for r in tested] == published, source
        assert {r["ours"] for r in tested} <= {"", TEST_SPLIT, EVERY_IMAGE, PRANET}, source
        assert all(r["tested"].strip() for r in tested), source


def _fake_run(results: Path, name: str, mean: dict, folder: str = "zero_shot", **run) -> None:
    """A run folder as test.py writes it for the table: metrics.json with the mean row, the
    mode and (by default, a zero-shot run on a current index) the test images it recorded."""
    out = results / f"{name}_{folder}"
    out.mkdir(parents=True)
    run = {"mode": "zero_shot", "test_images": {"btad": "the release's test split"}.get(
        name, "every image"), **run}
    (out / "metrics.json").write_text(json.dumps({"mean": mean, **run}))


FULL = {k: 0.5 for k in ("auroc_px", "f1_px", "ap_px", "pro", "auroc_sp", "f1_sp", "ap_sp")}
# the source's protocol as train.py records it: MVTec AD's labelled test split, the released
# model and size (which we assume AnomalyCLIP ran: it does not say)
PAPER = {"dataset": "mvtec", "train_split": "test", "train_image_dir": None,
         "model": "ViT-L-14-336", "image_size": 518}


def _table(tmp_path, runs: dict, config: dict | None, *flags: str) -> dict:
    """Run ``sets_table table`` over fake runs ({set: metrics.json fields}) with a checkpoint
    recording ``config``; returns {(source, set): (comparable, why)} of published.csv."""
    import csv

    import torch
    from test_benchmarks import load_script
    res = tmp_path / "res"
    shutil.rmtree(res, ignore_errors=True)
    for name, run in runs.items():
        _fake_run(res, name, FULL, **run)
    ck = tmp_path / "epoch_3.pth"
    torch.save({"trainable_linearlayer": {}, **({"config": config} if config else {})}, ck)
    assert load_script("sets_table").main(["table", str(res), "--checkpoint", str(ck),
                                          *flags]) == 0
    rows = list(csv.DictReader(open(res / "published.csv", encoding="utf-8")))
    return {(r["source"], r["set"]): (r["comparable"], r["why"]) for r in rows}


def test_published_figures_beside_ours(tmp_path):
    """benchmarks.md and published.csv put our zero-shot means beside the papers' APRIL-GAN
    figures (AnomalyCLIP Table 1: BTAD image AUROC 73.6, pixel PRO 25.0, Table 2: HeadCT image
    AP 89.4; AdaCLIP Table 1: BTAD image AUROC 85.2), with the difference; a set nobody
    published (KSDD2) has no row; a rerun without published sets leaves no stale file."""
    import csv

    import torch
    from test_benchmarks import load_script
    sets_table = load_script("sets_table")
    res = tmp_path / "res"
    _fake_run(res, "btad", {"auroc_px": 0.9, "f1_px": 0.4, "ap_px": 0.3, "pro": 0.5,
                            "auroc_sp": 0.75, "f1_sp": 0.7, "ap_sp": 0.8})
    _fake_run(res, "headct", {"auroc_px": None, "f1_px": None, "ap_px": None, "pro": None,
                              "auroc_sp": 0.9, "f1_sp": 0.85, "ap_sp": 0.88})
    _fake_run(res, "ksdd2", FULL)  # nobody published
    ck = tmp_path / "epoch_3.pth"
    torch.save({"trainable_linearlayer": {}, "config": PAPER}, ck)
    sets_table.table(res, ck)
    rows = list(csv.DictReader(open(res / "published.csv", encoding="utf-8")))
    got = {(r["source"], r["set"], r["metric"]): r for r in rows}
    a = got[("anomalyclip", "btad", "auroc_sp")]
    assert (a["ours"], a["published"], a["diff"], a["comparable"]) == ("75.0", "73.6", "1.4", "yes")
    assert got[("anomalyclip", "btad", "pro")]["diff"] == "25.0"  # 50.0 - 25.0
    assert got[("anomalyclip", "headct", "ap_sp")]["diff"] == "-1.4"  # 88.0 - 89.4
    assert ("anomalyclip", "btad", "f1_sp") not in got  # AnomalyCLIP reports AP, not max-F1
    ada = got[("adaclip", "btad", "auroc_sp")]
    assert (ada["published"], ada["diff"], ada["comparable"]) == ("85.2", "-10.2", "no")
    assert not any(r["set"] == "ksdd2" for r in rows)
    md = (res / "benchmarks.md").read_text(encoding="utf-8")
    assert "| btad | 90.0 / 60.8 (+29.2) |" in md  # AnomalyCLIP: auroc_px first
    assert "| btad | 90.0 / 60.8 (+29.2) | 50.0 / 25.0 (+25.0) | 75.0 / 73.6 (+1.4) | " \
           "80.0 / 68.6 (+11.4) | yes: projections trained on mvtec's test split" in md
    for name in ("btad", "headct"):
        shutil.rmtree(res / f"{name}_zero_shot")
    sets_table.table(res, ck)
    assert not (res / "published.csv").exists()


def test_the_sources_are_described_as_they_describe_themselves(tmp_path):
    """AdaCLIP's training as its paper says it and as its README's Corrections amend it; the
    model and size named as our assumption, read from engine/config/'s defaults."""
    _table(tmp_path, {"btad": {}}, PAPER)
    md = (tmp_path / "res" / "benchmarks.md").read_text(encoding="utf-8")
    assert "the paper's text names MVTec AD with ClinicDB" in md
    assert "'Corrections' section of the AdaCLIP README (caoyunkang/AdaCLIP) amends it: by " \
           "default MVTec AD with ColonDB, and VisA with ClinicDB for the evaluations on " \
           "MVTec AD and ColonDB" in md
    assert "Model and size: ViT-L-14-336 at 518 px is our assumption (the released setting, " \
           "engine/config/'s defaults): neither source states" in md


T, I, M = "training", "test images", "mode"  # the condition a case breaks


@pytest.mark.parametrize("runs, config, flags, key, comparable, why, broken", [
    # all three hold: trained as AnomalyCLIP trained, its test images, zero-shot
    ({"btad": {}}, PAPER, (), ("anomalyclip", "btad"), "yes", "the source's test images "
     "(the release's test split)", None),
    ({"brainmri": {}}, PAPER, (), ("anomalyclip", "brainmri"), "yes", "(every image)", None),
    # training
    ({"btad": {}}, {**PAPER, "dataset": "visa"}, (), ("anomalyclip", "btad"), "no",
     "trained on visa, the source on mvtec", T),
    ({"btad": {}}, {**PAPER, "train_split": "train"}, (), ("anomalyclip", "btad"), "no",
     "--train_split train", T),
    ({"btad": {}}, {**PAPER, "train_image_dir": "/parts"}, (), ("anomalyclip", "btad"), "no",
     "--train_image_dir", T),
    ({"btad": {}}, {**PAPER, "model": "ViT-B-16"}, (), ("anomalyclip", "btad"), "no",
     "model ViT-B-16, not ViT-L-14-336 (the released setting, which we assume the source ran)",
     T),
    ({"btad": {}}, {**PAPER, "image_size": 336}, (), ("anomalyclip", "btad"), "no",
     "image size 336, not 518", T),
    ({"btad": {}}, None, (), ("anomalyclip", "btad"), "no",
     "training set is unknown (pass --trained_on)", T),
    ({"btad": {}}, None, ("--trained_on", "mvtec"), ("anomalyclip", "btad"), "yes",
     "projections trained on mvtec (--trained_on)", None),
    ({"btad": {}}, None, ("--trained_on", "visa"), ("anomalyclip", "btad"), "no",
     "these projections on visa (--trained_on)", T),
    ({"btad": {}}, {**PAPER, "dataset": "visa"}, ("--trained_on", "mvtec"),
     ("anomalyclip", "btad"), "no", "trained on visa", T),  # the recorded one wins
    ({"btad": {}}, PAPER, (), ("adaclip", "btad"), "no",
     "the source trained on two sets together, this project on one", T),
    # test images: the source's split is not published (AnomalyCLIP's converted SDD, HeadCT)
    ({"ksdd": {}}, PAPER, (), ("anomalyclip", "ksdd"), "no",
     "SDD.py); how it was split is not published: not the images of our index", I),
    ({"headct": {}}, PAPER, (), ("anomalyclip", "headct"), "no",
     "head_ct.py); how it was made is not published", I),
    # ... or other images than ours (AdaCLIP cut KSDD into thirds; its training fails too)
    ({"ksdd": {}}, PAPER, (), ("adaclip", "ksdd"), "no", "not whole images", None),
    # ... the run tested other images than the source, or does not say which
    ({"brainmri": {"test_images": "the release's test split"}}, PAPER, (),
     ("anomalyclip", "brainmri"), "no", "the run tested the release's test split, the source "
     "every scan of brain_tumor_dataset/yes and no", I),
    ({"brainmri": {"test_images": None}}, PAPER, (), ("anomalyclip", "brainmri"), "no",
     "the run records no test images", I),
    # mode: only a zero-shot run beside zero-shot figures
    ({"btad": {"mode": "few_shot"}}, PAPER, (), ("anomalyclip", "btad"), "no",
     "the run is few_shot; the published figures are zero-shot", M),
])
def test_comparable_only_when_training_test_images_and_mode_hold(tmp_path, runs, config, flags,
                                                                 key, comparable, why, broken):
    """Each reason on its own: one condition broken, the row says "no" and why, and names no
    other condition."""
    got = _table(tmp_path, runs, config, *flags)
    assert got[key][0] == comparable and why in got[key][1], got[key]
    said = {T: "trained" in got[key][1] or "released setting" in got[key][1],
            I: "tested" in got[key][1] or "test images" in got[key][1],
            M: "zero-shot" in got[key][1]}
    if comparable == "no" and broken:
        assert [c for c, named in said.items() if named] == [broken], got[key]
