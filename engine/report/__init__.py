"""Self-contained ``report.html`` pages for evaluation runs, prediction runs and the protocol
(issue 17).

* :class:`EvalReport` - one evaluation run: the metric table (sortable, mean pinned), per
  category ROC / precision-recall curves with the F1-max point, the image-score histogram, the
  galleries of :func:`select_gallery` (worst false positives, worst false negatives, best
  detections) and the few-shot references.
* :func:`write_runs_index` - several (k, seed) runs: mean ± std tables per k, links to each run.
* :class:`PredictReport` - ``predict.py``: images by score with heatmaps, the threshold line,
  the files that could not be read.
* :func:`write_protocol_index` - ``scripts/reproduce_all.sh``: links to every run's report and
  the paper comparison (``comparison.csv``), differences coloured.

Pages open from disk with no network: inline CSS and script, pictures as small files in
``report_files/`` beside the page. Only numpy, PIL, matplotlib (an Agg canvas, no pyplot) and
Jinja2, and from the project ``utils`` and ``metrics`` (``METRIC_KEYS``); nothing imports torch.
"""
from .evaluation import GALLERY_KINDS, EvalReport, GalleryItem, select_gallery
from .indexes import discover_reports, read_comparison, write_protocol_index, write_runs_index
from .prediction import PredictReport

__all__ = ["EvalReport", "GALLERY_KINDS", "GalleryItem", "PredictReport", "discover_reports",
           "read_comparison", "select_gallery", "write_protocol_index", "write_runs_index"]
