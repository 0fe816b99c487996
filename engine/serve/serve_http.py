"""serve.py's HTTP side: a FastAPI app served by uvicorn.

    GET  /                   the page to try the service (engine/serve_page.html; no login)
    GET  /health             status, runtime, objects, and per object its model, thresholds
                             and their source, its queue
    POST /score              multipart/form-data: ``image`` (the file), ``object_name`` (needed
                             when several objects are served), ``heatmap`` (``url``, the
                             default; ``inline``: base64 PNG in the answer; ``none``), also as a
                             query parameter; answers the score, the verdict, the thresholds,
                             the regions and the heatmap
    GET  /heatmaps/ID.png    a heatmap the service made (random ids; the last --keep_heatmaps)

With ``--api_key`` every route but the page needs ``Authorization: Bearer KEY`` (401 without).
Every refusal is JSON ``{"error": "...", "status": N}``: 401, 404, 413 (an upload over
``--max_upload_mb``), 415 (not an image, or not multipart), 422 (a damaged image, one over the
pixel limit, a missing field, an unknown object), 503 with ``Retry-After`` (the object's queue
is full). Decoding runs on worker threads (at most one per CPU), never on the event loop, so a
bad upload delays no other request. The body is read into memory up to the limit and never
written to disk.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.serve.serve_batch import QueueFull
from engine.serve.serving import Served, Service, UploadError, decode_image

PAGE = Path(__file__).with_name("serve_page.html")
ENVELOPE = 64 * 1024  # bytes of multipart headers and boundaries allowed beyond the image
HEATMAP_MODES = ("url", "inline", "none")
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'")


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The JSON answer of a refused request."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int, why: str) -> bytes:
    """The request body, refused with 413 (``why`` appended) as soon as it passes ``limit``
    bytes, or at once when its Content-Length says it will."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"the request is {int(declared) / 1e6:.2f} MB{why}")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise UploadError(413, f"the request is over {limit / 1e6:.2f} MB{why}")
    return bytes(buf)


def parse_form(content_type: str, body: bytes) -> dict[str, tuple[bytes, str | None]]:
    """{field: (bytes, filename)} of a multipart/form-data body (in memory)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(415, "send the image as multipart/form-data, field 'image' (e.g. curl "
                               "-F image=@part.png); got Content-Type "
                               f"{content_type[:80] or 'none'!r}")
    parts: dict[str, tuple[bytes, str | None]] = {}
    cur: dict = {}

    def on_part_begin() -> None:
        cur.clear()
        cur.update(headers={}, name=b"", value=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        cur["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        cur["value"] += data[start:end]

    def on_header_end() -> None:
        cur["headers"][cur["name"].lower()] = cur["value"]
        cur["name"], cur["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        cur["data"] += data[start:end]

    def on_part_end() -> None:
        _, disp = parse_options_header(cur["headers"].get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        if name and name not in parts:
            parts[name] = (bytes(cur["data"]),
                           filename.decode("utf-8", "replace")[:120] if filename else None)

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_part_data": on_part_data, "on_part_end": on_part_end}
    try:
        parser = MultipartParser(options[b"boundary"], callbacks)
        parser.write(body)
        parser.finalize()
    except Exception as e:  # noqa: BLE001 - the parser's own error types
        raise UploadError(422, f"the multipart body is malformed: {e}") from None
    return parts


def _prepare(served: Served, data: bytes, filename: str | None):
    """(decoded image, preprocessed tensor) of an upload (on a worker thread)."""
    name = f"the upload {filename!r}" if filename else "the upload"
    img = decode_image(data, name)
    try:
        return img, served.transform(img)
    except (OSError, ValueError) as e:
        raise UploadError(422, f"{name} cannot be prepared for the model: {e}") from None


def create_app(service: Service) -> FastAPI:
    """The FastAPI app of ``service`` (the routes of the module docstring)."""
    cfg, log = service.cfg, service.log
    app = FastAPI(title="APRIL-GAN scoring service", docs_url=None, redoc_url=None,
                  openapi_url=None)
    limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))
    page = PAGE.read_text(encoding="utf-8")
    key = cfg.api_key.encode() if cfg.api_key else None
    limit = int(cfg.max_upload_mb * 1e6)
    over = f"; this service takes images up to {cfg.max_upload_mb:g} MB (--max_upload_mb)"

    def denied(request: Request) -> JSONResponse | None:
        if key is None:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key):
            return None
        return error(401, "this service needs 'Authorization: Bearer KEY' (serve.py --api_key)",
                     {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def fault(request: Request, exc: Exception) -> JSONResponse:
        log.error(f"error: {request.method} {request.url.path}: {type(exc).__name__}: {exc}")
        return error(500, f"the service failed on this request: {type(exc).__name__}: {exc}")

    @app.get("/")
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP,
                                           "Cache-Control": "no-store"})

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        return denied(request) or JSONResponse(service.health())

    @app.get("/heatmaps/{name}")
    async def heatmap(name: str, request: Request):
        if (refused := denied(request)) is not None:
            return refused
        path = service.heatmaps.path(name.removesuffix(".png")) if name.endswith(".png") else None
        if path is None or not path.is_file():
            return error(404, "no such heatmap (the service keeps the last "
                              f"{cfg.keep_heatmaps})")
        return FileResponse(path, media_type="image/png")

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        if (refused := denied(request)) is not None:
            return refused
        try:
            body = await read_body(request, limit + ENVELOPE, over)
            form = parse_form(request.headers.get("content-type", ""), body)
            if "image" not in form:
                raise UploadError(422, "no 'image' field in the form (multipart/form-data, "
                                       f"fields: {', '.join(sorted(form)) or 'none'})")
            data, filename = form["image"]
            if len(data) > limit:
                raise UploadError(413, f"the image is {len(data) / 1e6:.2f} MB{over}")
            mode = (request.query_params.get("heatmap")
                    or form.get("heatmap", (b"url",))[0].decode("utf-8", "replace"))
            if mode not in HEATMAP_MODES:
                raise UploadError(422, f"heatmap {mode[:40]!r}: use one of "
                                       f"{', '.join(HEATMAP_MODES)}")
            name = form.get("object_name", (b"",))[0].decode("utf-8", "replace").strip() or \
                request.query_params.get("object_name")
            served = service.model(name)
        except UploadError as e:
            return error(e.status, e.message)
        try:
            served.batcher.reserve()
        except QueueFull as e:
            return error(503, str(e), {"Retry-After": str(e.retry_after)})
        try:
            img, tensor = await anyio.to_thread.run_sync(_prepare, served, data, filename,
                                                         limiter=limiter)
        except BaseException as e:
            served.batcher.release()
            if isinstance(e, UploadError):
                return error(e.status, e.message)
            raise
        r = await asyncio.wrap_future(served.batcher.submit(tensor))
        out = await anyio.to_thread.run_sync(service.result, served, img, r, mode,
                                             limiter=limiter)
        return JSONResponse(out)

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def run_http(service: Service, log: logging.Logger) -> None:
    """Serve until SIGINT or SIGTERM (uvicorn, one event loop; the models run on their
    batchers' threads)."""
    import uvicorn

    cfg = service.cfg
    sock = bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    uv = logging.getLogger("uvicorn.error")
    uv.handlers, uv.propagate, uv.level = list(log.handlers), False, logging.WARNING
    config = uvicorn.Config(create_app(service), log_config=None, access_log=False,
                            lifespan="off", timeout_graceful_shutdown=5)
    if not cfg.api_key and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning(f"warning: serving on {host} without --api_key: anyone who reaches this "
                    "machine can use the service")
    log.info(f"serving {', '.join(sorted(service.models))} on http://{shown}:{port}/ "
             f"(max batch {cfg.max_batch}, max wait {cfg.max_wait_ms:g} ms, queue "
             f"{cfg.queue_size}{', API key required' if cfg.api_key else ''}); Ctrl-C stops")
    uvicorn.Server(config).run(sockets=[sock])
