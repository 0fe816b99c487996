"""engine.predict.predict_report, unit by unit: the report.html written from a finished
predict.py run's rows. It shows the ``--report_max_images`` highest-scored images with their
final scores and verdicts at the image threshold (and deletes the other thumbnails), the
references of the memory bank (the flags', or an export's sidecar's), and a header that says
what was scored, with what, and where the thresholds came from."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from conftest import GOLDEN, VIT
from PIL import Image
from report_html import assert_files_exist, parse_page, table_with
from report_synthetic import picture

from engine.predict.predict_report import report_info, write_report
from engine.report import PredictReport
from engine.report.common import FILES_DIR

REFS = GOLDEN / "data" / "mvtec" / "bottle" / "train" / "good"


def _job(out: Path, **cfg) -> SimpleNamespace:
    base = {"report_max_images": 2, "object_name": "bottle", "onnx": None,
            "pretrained": str(VIT.weights), "config_path": str(VIT.config), "model": "tiny-vit",
            "checkpoint_path": "ckpt.pth", "reference_dir": str(REFS)}
    return SimpleNamespace(
        cfg=SimpleNamespace(**{**base, **cfg}), out=out, mode="few_shot", score_name="per_image",
        thresholds={"image": 0.5, "pixel": 1.2, "source": "command line"},
        scorer=SimpleNamespace(normal_level=1.25), scale=None, refs=["000.png", "003.png"])


def _rows(out: Path, n: int, regions: bool = True) -> list[dict]:
    """Rows as predict.py's loop leaves them: thumbnail and heatmap written; image i has i
    regions."""
    thumbs = PredictReport(out, "", {}, fresh=False)
    (out / "heatmaps").mkdir()
    rows = []
    for i in range(n):
        pic = picture(i, 48)
        Image.fromarray(pic).save(out / "heatmaps" / f"img_{i}.png")
        rows.append({"path": f"img_{i}.png", "text_score": 0.0, "map_max": 0.0,
                     "heatmap": f"heatmaps/img_{i}.png",
                     "thumb": thumbs.add(f"img_{i}.png", 0.0, pic, pic[::-1], None, name=f"t{i}")}
                    | ({"regions": [{}] * i} if regions else {}))
    return rows


def test_the_highest_scored_images_are_shown_with_their_scores_and_verdicts(tmp_path):
    rows = _rows(tmp_path, 4)
    score = np.array([0.3, 0.9, 0.6, 0.1])
    skipped = [{"path": "notes.txt", "error": "not an image"}]
    write_report(_job(tmp_path), rows, score, skipped)
    page = parse_page(tmp_path / "report.html")
    assert_files_exist(tmp_path / "report.html", page)
    (table,) = table_with(page, "predict")
    body = [r for r, c in zip(table.body, table.row_classes) if c != "divider"]
    # columns: #, score, verdict, image | overlay, regions, path; 0.9 and 0.6 of four shown
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in body] == [
        ("1", "0.9", "anomalous", "1", "img_1.png"), ("2", "0.6", "anomalous", "2", "img_2.png")]
    kept = sorted(p.name for p in (tmp_path / FILES_DIR).glob("t*.jpg"))
    assert kept == ["t1.jpg", "t2.jpg"]  # the thumbnails of the images not shown are deleted
    (sk,) = table_with(page, "skipped")
    assert sk.body == [["notes.txt", "not an image"]]
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "heatmaps/img_1.png" in text and "heatmaps/img_0.png" not in text
    assert "the 2 highest-scored of 4 (all in scores.csv)" in text
    assert "Reference images (2)" in text and "000.png" in text and "003.png" in text


def test_the_verdict_follows_the_image_threshold_and_none_without_one(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    job = _job(a, report_max_images=10)
    job.thresholds["image"] = 0.6  # at the threshold is anomalous
    write_report(job, _rows(a, 3, regions=False), np.array([0.59999, 0.6, 0.2]), [])
    (table,) = table_with(parse_page(a / "report.html"), "predict")
    body = [r for r, c in zip(table.body, table.row_classes) if c != "divider"]
    verdicts = [(r[5], r[2]) for r in body]
    assert verdicts == [("img_1.png", "anomalous"), ("img_0.png", "normal"), ("img_2.png", "normal")]
    assert {r[4] for r in body} == {"—"}  # rows without regions (no pixel threshold)
    assert "the 3 highest" not in (a / "report.html").read_text(encoding="utf-8")  # all shown

    job = _job(b, report_max_images=10)
    job.thresholds = {"image": None, "pixel": None, "source": None}
    write_report(job, _rows(b, 2), np.array([0.7, 0.2]), [])
    page = parse_page(b / "report.html")
    (table,) = table_with(page, "predict")
    assert {r[2] for r in table.body} == {"—"} and "divider" not in table.row_classes


def test_the_header_says_what_was_scored_and_where_the_thresholds_came_from(tmp_path):
    job = _job(tmp_path)
    job.thresholds["calibration"] = {"n_images": 20, "dir": "/data/normal", "target_fpr": 0.01,
                                     "image_fpr": 0.05, "pixel_fpr": 0.0091234}
    info = report_info(job, [{}] * 5, 2)
    assert info["warning"].startswith("Made with a random test model (tiny-vit-random.pt)")
    assert (info["object"], info["mode"], info["images"], info["model"]) == \
        ("bottle", "few_shot", 5, "tiny-vit")
    assert info["calibration"] == ("20 normal images of /data/normal, target false-alarm rate "
                                   "0.01; reached on them: images 0.05, pixels 0.00912")
    assert (info["image threshold"], info["pixel threshold"], info["normal level μ"]) == (0.5, 1.2, 1.25)
    assert info["thresholds from"] == "command line" and info["checkpoint"] == "ckpt.pth"
    assert info["heatmap scale"] == "per image (--heatmap_scale image)"
    assert info["shown"] == "the 2 highest-scored of 5 (all in scores.csv)"
    assert "0.5 * (" in info["score"]  # the per-image score's formula in words

    job.thresholds = {"image": None, "pixel": None, "source": None}
    job.scale = SimpleNamespace(source="pixel threshold 1.2 at mid-scale")
    job.cfg.pretrained, job.cfg.config_path = "openai", None  # real weights: no warning
    info = report_info(job, [{}] * 2, 2)
    assert info["thresholds from"] == "none given (no verdicts, no masks)"
    assert info["calibration"] is None and info["warning"] is None and "shown" not in info
    assert info["heatmap scale"] == "pixel threshold 1.2 at mid-scale"


def test_an_export_shows_the_references_its_sidecar_names(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    meta = {"model": {"pretrained": "openai", "config_path": None},
            "references": {"dir": str(REFS), "files": ["001.png", "002.png", "004.png"]}}
    job = _job(a, onnx="model.onnx", reference_dir=None, report_max_images=10)
    job.refs, job.scorer = [], SimpleNamespace(normal_level=1.0, onnx=SimpleNamespace(meta=meta))
    write_report(job, _rows(a, 1), np.array([0.4]), [])
    page = parse_page(a / "report.html")
    assert_files_exist(a / "report.html", page)
    text = (a / "report.html").read_text(encoding="utf-8")
    assert "Reference images (3)" in text and all(f in text for f in ("001.png", "002.png", "004.png"))
    assert "model.onnx" in text and "Made with a random test model" not in text

    meta["references"]["dir"] = str(tmp_path / "gone")  # the folder moved: no references shown
    job.out = b
    write_report(job, _rows(b, 1), np.array([0.4]), [])
    assert "Reference images" not in (b / "report.html").read_text(encoding="utf-8")
