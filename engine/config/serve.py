"""The settings of serve.py: predict.py's model, threshold and heatmap flags (``PredictConfig``,
each default stated there once), plus the service's and the watch folder's.

Flags of predict.py that mean nothing to a service (``--image_dir``, ``--batch_size``,
``--calibration_dir``, ``--resume``, the report and maps flags) are kept as fields with their
defaults but have no command-line flag; ``--max_batch`` sets the batch size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from errors import ConfigError
from utils.cli import opt

from engine.config.flags import ONNX_CARRIES
from engine.config.predict import PredictConfig

S = "service"
W = "watch folder"
API_KEY_ENV = "APRILGAN_API_KEY"


def _base(name: str):
    """predict.py's default of field ``name`` (stated once, in ``PredictConfig``)."""
    return PredictConfig.__dataclass_fields__[name].default


def _hidden(name: str, default=None, **kw):
    """predict.py's field ``name`` without a serve.py flag (its default kept unless given)."""
    return opt(_base(name) if default is None else default, "", cli=False, **kw)


@dataclass
class ServeConfig(PredictConfig):
    """Settings of serve.py (see the module docstring)."""

    image_dir: str | None = _hidden("image_dir")
    batch_size: int = _hidden("batch_size", minimum=1)  # set from --max_batch
    num_workers: int | None = _hidden("num_workers", 0, minimum=0)
    calibration_dir: str | None = _hidden("calibration_dir")
    target_fpr: float = _hidden("target_fpr")
    save_maps: bool = _hidden("save_maps")
    maps_dtype: str = _hidden("maps_dtype")
    no_report: bool = _hidden("no_report", True)
    report_max_images: int = _hidden("report_max_images")
    resume: bool = _hidden("resume")
    restart: bool = _hidden("restart")
    image_score: str = opt(_base("image_score"), "few-shot image score: per_image (0.5 * (text "
                           "+ the map maximum's rise above the references' own level): the "
                           "image alone); released (min-max over a scored folder) is refused",
                           choices=("per_image", "released"))
    object_name: str | None = opt(None, "object word used in the prompts (torch path), e.g. "
                                  "screw; with one --onnx file: checked against its object",
                                  default_text="required without --onnx")
    onnx: list[str] | None = opt(None, "serve these exported models (export.py) instead of "
                                 "torch, one per object; a request names its object_name when "
                                 "there are several", path=True, metavar="FILE")
    save_path: str | None = opt(None, "with --watch: the results folder (scores.csv, heatmaps/, "
                                "masks/, regions.csv, skipped.csv, ledger.jsonl), appended to as "
                                "images arrive; a restart continues it", path=True, group=W)
    recursive: bool = opt(False, "also watch the sub-folders of --watch", group=W)
    no_heatmaps: bool = opt(False, "watch folder: write no heatmaps (a request still gets one "
                            "unless it asks heatmap=none)", group=W)
    host: str = opt("127.0.0.1", "address the HTTP service binds (only this machine by "
                    "default; another address exposes the service: set --api_key)", group=S)
    port: int = opt(8000, "TCP port (0: a free one, named in the log)", minimum=0, maximum=65535,
                    group=S)
    api_key: str | None = opt(None, "require 'Authorization: Bearer KEY' on every request but "
                              "the page itself (401 without it)",
                              default_text=f"${API_KEY_ENV} when set, else none", group=S,
                              metavar="KEY")
    max_upload_mb: float = opt(20.0, "largest image upload in MB (a larger one gets 413)",
                               minimum=0.001, maximum=4096, group=S)
    max_batch: int = opt(8, "the most images in one forward pass (concurrent requests are "
                         "batched); 1 gives predict.py --batch_size 1's scores bit for bit",
                         minimum=1, maximum=1024, group=S)
    max_wait_ms: float = opt(10.0, "how long a batch waits for more images after its first, "
                             "in ms", minimum=0.0, maximum=60000.0, group=S)
    queue_size: int = opt(64, "the most images waiting or being scored per object; beyond it "
                          "a request gets 503 with Retry-After", minimum=1, maximum=100000,
                          group=S)
    work_dir: str | None = opt(None, "the service's own folder (heatmaps it serves); nothing a "
                               "client sends is written elsewhere", default_text="a temporary "
                               "folder removed at exit", path=True, group=S)
    keep_heatmaps: int = opt(256, "heatmaps kept for their URLs (the oldest are deleted)",
                             minimum=1, maximum=1_000_000, group=S)
    no_http: bool = opt(False, "no HTTP service: only the --watch folder", group=S)
    watch: str | None = opt(None, "score every image in this folder and every image that "
                            "appears in it later, each once (needs --save_path)", path=True,
                            group=W, metavar="DIR")
    watch_object: str | None = opt(None, "the object of the --watch folder's images",
                                   default_text="the one object served", group=W)
    settle_s: float = opt(1.0, "a watched file is read once its size and time have not changed "
                          "for this many seconds (and it was closed, where the system says so)",
                          minimum=0.0, maximum=3600.0, group=W)
    poll_s: float = opt(2.0, "seconds between scans of the watched folder (the fallback when "
                        "file events are missed or unavailable)", minimum=0.05, maximum=3600.0,
                        group=W)
    watch_polling: bool = opt(False, "watch by scanning only, without file-system events "
                              "(network shares)", group=W)

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        self.batch_size = self.max_batch  # the references and every batch: --max_batch
        if self.image_score == "released":
            raise ConfigError("--image_score released is min-max normalised over a scored "
                              "folder; a service scores each image alone: use --image_score "
                              "per_image (the default)")
        super().__post_init__()
        several = self.onnx and len(self.onnx) > 1
        if several:
            given = [f for f in ("object_name", "threshold_category", "image_threshold",
                                 "pixel_threshold") if getattr(self, f) is not None]
            if given:
                raise ConfigError(f"--{given[0]} applies to one object; with several --onnx "
                                  "files give each its thresholds in a --thresholds file (one "
                                  "entry per object) or in its export")
            names = [Path(p).name for p in self.onnx]
            if len(set(map(os.path.realpath, self.onnx))) < len(self.onnx):
                raise ConfigError(f"--onnx names a file twice: {' '.join(names)}")
        if self.no_http and not self.watch:
            raise ConfigError("--no_http leaves nothing to do: pass --watch DIR --save_path OUT")
        if self.watch and not self.save_path:
            raise ConfigError("--watch needs --save_path (where its results are written)")
        if self.save_path and not self.watch:
            raise ConfigError("--save_path is the --watch folder's results; pass --watch DIR")
        if self.watch_object and not self.watch:
            raise ConfigError("--watch_object applies to --watch DIR")
        _apart(self.watch, self.save_path)

    def predict_config(self, **over) -> PredictConfig:
        """predict.py's settings for one served model (``over``: e.g. ``onnx=FILE``)."""
        values = {f.name: getattr(self, f.name) for f in fields(PredictConfig)}
        values.update(onnx=None, no_report=True, image_dir=None, save_path="")
        values.update(over)
        return PredictConfig(**values)

    def check_given(self, given: set[str]) -> None:
        """With ``--onnx`` the exports carry their models: model flags are refused."""
        typed = [f"--{n}" for n in ONNX_CARRIES if n in given]
        if self.onnx and typed:
            raise ConfigError(f"--onnx files carry their model (backbone, size, stages, "
                              f"projections, prompts): drop {', '.join(typed)}, or export a "
                              "graph with those settings (export.py)")


def _apart(watch: str | None, save_path: str | None) -> None:
    """ConfigError when --save_path is the --watch folder or holds it (a --save_path inside
    it is fine: its files are never scored)."""
    if not watch or not save_path:
        return
    folder, save = Path(watch).expanduser().resolve(), Path(save_path).expanduser().resolve()
    if folder == save or save in folder.parents:
        raise ConfigError(f"--save_path {save_path} is or holds the --watch folder {watch}: the "
                          "results would be mixed with the images; pass another folder")
