"""engine.serve.serve_http, unit by unit: the FastAPI app's routes through starlette's TestClient
(no server, no model) around a small stand-in service with a real ``MicroBatcher`` and a real
``HeatmapStore``. An upload is decoded as predict.py reads a file, transformed, queued and
answered with the service's result; the API key guards every route but the page; each refusal is
JSON naming the problem, and gives back its place in the queue; a full queue is 503 with
Retry-After; only the store's own heatmap ids are served."""
from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from engine.serve.serve_batch import MicroBatcher
from engine.serve.serve_http import create_app, parse_form
from engine.serve.serving import HeatmapStore, UploadError

KEY = "s3cret-key"


class FakeService:
    """What create_app uses of a Service: cfg, log, model(), health(), result(), heatmaps."""

    def __init__(self, tmp_path, api_key=None, max_upload_mb=0.05, capacity=4):
        self.cfg = SimpleNamespace(api_key=api_key, max_upload_mb=max_upload_mb, keep_heatmaps=3)
        self.log = logging.getLogger("aprilgan.test_serve_http")
        self.heatmaps = HeatmapStore(tmp_path / "heatmaps", 3)
        self.asked: list = []
        self.fail = False
        # the "model": the sum of the transformed image's values
        self.batcher = MicroBatcher(lambda items: [{"sum": float(t.sum())} for t in items],
                                    max_batch=4, max_wait=0.0, capacity=capacity)
        self.served = SimpleNamespace(
            name="bottle", batcher=self.batcher,
            transform=lambda img: torch.from_numpy(np.asarray(img, dtype=np.float64)))

    def model(self, name):
        self.asked.append(name)
        if name not in (None, "bottle"):
            raise UploadError(422, f"object_name {name!r} is not served (served: bottle)")
        return self.served

    def health(self) -> dict:
        return {"status": "ok", "objects": ["bottle"]}

    def result(self, served, img, r, heatmap) -> dict:
        if self.fail:
            raise RuntimeError("scoring broke")
        return {"object_name": served.name, "size": list(img.size), "mode": img.mode,
                "sum": r["sum"], "heatmap": heatmap}


@pytest.fixture
def serve(tmp_path):
    """(service, client) factory; every batcher and client is closed at the end."""
    made = []

    def make(**kw):
        service = FakeService(tmp_path / f"s{len(made)}", **kw)
        client = TestClient(create_app(service), raise_server_exceptions=False)
        made.append((service, client))
        return service, client

    yield make
    for service, client in made:
        client.close()
        service.batcher.close()


def _png(seed: int = 0, size=(30, 20)) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels


def test_the_page_is_open_and_every_other_route_needs_the_key(serve):
    service, c = serve(api_key=KEY)
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    png, _ = _png()
    for auth in (None, "Bearer wrong", f"Basic {KEY}", KEY):
        headers = {"Authorization": auth} if auth else {}
        for r in (c.get("/health", headers=headers), c.get("/heatmaps/" + "0" * 32 + ".png", headers=headers),
                  c.post("/score", files={"image": ("a.png", png)}, headers=headers)):
            assert r.status_code == 401 and r.json()["status"] == 401, (auth, r.url)
            assert "Bearer" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    assert service.asked == [] and service.batcher.stats()["pending"] == 0  # nothing reached it
    for auth in (f"Bearer {KEY}", f"bearer {KEY}"):  # the scheme in any case
        r = c.get("/health", headers={"Authorization": auth})
        assert r.status_code == 200 and r.json() == {"status": "ok", "objects": ["bottle"]}
    _, open_client = serve()  # no --api_key: no key asked
    assert open_client.get("/health").status_code == 200


def test_an_upload_is_decoded_transformed_scored_and_answered(serve):
    service, c = serve()
    png, pixels = _png(1)
    r = c.post("/score", files={"image": ("part.png", png, "image/png")}, data={"object_name": "bottle"})
    assert r.status_code == 200, r.text
    # the transform's values are the decoded pixels: their sum, worked out here from the array
    assert r.json() == {"object_name": "bottle", "size": [30, 20], "mode": "RGB",
                        "sum": float(pixels.astype(np.int64).sum()), "heatmap": "url"}
    assert service.asked == ["bottle"]
    r = c.post("/score?heatmap=none&object_name=bottle", files={"image": ("p.png", png)},
               data={"heatmap": "inline"})  # the query parameter wins over the form field
    assert r.json()["heatmap"] == "none" and service.asked[-1] == "bottle"
    r = c.post("/score", files={"image": ("p.png", png)}, data={"heatmap": "inline"})
    assert r.json()["heatmap"] == "inline" and service.asked[-1] is None  # the only object
    gray = io.BytesIO()
    Image.fromarray(np.full((5, 7), 40000, np.uint16)).save(gray, format="PNG")
    r = c.post("/score", files={"image": ("g.png", gray.getvalue())}).json()
    assert (r["size"], r["mode"]) == ([7, 5], "L")  # 16-bit gray read as 8 bits, as predict.py
    assert service.batcher.stats()["pending"] == 0


def test_refusals_are_json_naming_the_problem_and_free_their_place(serve):
    service, c = serve(max_upload_mb=0.05, capacity=1)  # 50,000 bytes, one place in the queue
    png, _ = _png(2)

    def refused(r, status: int, words: str) -> None:
        assert r.status_code == status and r.json() == {"error": r.json()["error"], "status": status}
        assert words in r.json()["error"], r.json()["error"]

    refused(c.post("/score", content=png, headers={"content-type": "image/png"}),
            415, "send the image as multipart/form-data")
    refused(c.post("/score", files={"picture": ("a.png", png)}), 422, "no 'image' field in the form")
    refused(c.post("/score", files={"image": ("a.png", png)}, data={"heatmap": "svg"}),
            422, "use one of url, inline, none")
    big = bytes(50_000 + 64 * 1024 + 1)  # over the image limit and the multipart envelope
    refused(c.post("/score", content=big, headers={"content-type": "multipart/form-data; boundary=b"}),
            413, "the request is 0.12 MB; this service takes images up to 0.05 MB (--max_upload_mb)")
    refused(c.post("/score", files={"image": ("a.png", bytes(60_000))}), 413, "the image is 0.06 MB")
    refused(c.post("/score", files={"image": ("notes.txt", b"plain words")}), 415, "'notes.txt'")
    refused(c.post("/score", files={"image": ("cut.png", png[:200])}), 422, "cannot be decoded")
    refused(c.post("/score", files={"image": ("a.png", png)}, data={"object_name": "nut"}),
            422, "'nut' is not served")
    refused(c.post("/score", content=b"--b\r\nnot a part", headers={"content-type": "multipart/form-data; boundary=b"}),
            422, "the multipart body is malformed")
    assert c.get("/nothing").json() == {"error": "Not Found", "status": 404}
    # the single place was given back by each refused upload: a good one still gets through
    assert service.batcher.stats()["pending"] == 0
    assert c.post("/score", files={"image": ("a.png", png)}).status_code == 200


def test_a_full_queue_is_503_with_retry_after(serve):
    service, c = serve(capacity=1)
    png, _ = _png(3)
    service.batcher.reserve()  # another request holds the only place
    r = c.post("/score", files={"image": ("a.png", png)})
    assert r.status_code == 503 and "the queue holds 1" in r.json()["error"]
    assert int(r.headers["retry-after"]) >= 1
    service.batcher.release()
    assert c.post("/score", files={"image": ("a.png", png)}).status_code == 200


def test_only_the_stores_own_heatmap_ids_are_served(serve):
    service, c = serve()
    png, _ = _png(4)
    first = service.heatmaps.add(png)
    r = c.get(f"/heatmaps/{first}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == png
    planted = "ab" * 16  # a name of the right form that the store never made
    (service.heatmaps.folder / f"{planted}.png").write_bytes(png)
    for name in (first, f"{first}.jpg", f"{planted}.png", "X" * 32 + ".png"):
        r = c.get(f"/heatmaps/{name}")
        assert r.status_code == 404 and "keeps the last 3" in r.json()["error"], name
    r = c.get(f"/heatmaps/..%2Fheatmaps%2F{first}.png")  # no way out of the store's names
    assert r.status_code == 404 and r.json()["status"] == 404
    for _ in range(3):  # --keep_heatmaps 3: the first one is dropped
        service.heatmaps.add(png)
    assert c.get(f"/heatmaps/{first}.png").status_code == 404


def test_a_fault_is_a_json_500_and_a_form_keeps_its_first_fields(serve, caplog):
    service, c = serve()
    png, _ = _png(5)
    service.fail = True
    # the handler on the logger itself: an earlier test's setup_logging() may have stopped
    # the project's logger from propagating to the root, where caplog listens
    service.log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.ERROR, logger=service.log.name):
            r = c.post("/score", files={"image": ("a.png", png)})
    finally:
        service.log.removeHandler(caplog.handler)
    assert r.status_code == 500 and r.json() == {
        "error": "the service failed on this request: RuntimeError: scoring broke", "status": 500}
    assert "POST /score: RuntimeError: scoring broke" in caplog.text

    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"" + b"n" * 200
            + b".png\"\r\n\r\nPIXELS\r\n--xyz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n"
            b"SECOND\r\n--xyz\r\nContent-Disposition: form-data; name=\"heatmap\"\r\n\r\nnone\r\n--xyz--\r\n")
    form = parse_form("multipart/form-data; boundary=xyz", body)
    assert form == {"image": (b"PIXELS", "n" * 120), "heatmap": (b"none", None)}
