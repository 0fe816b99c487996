"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
commands on fd 3, replies on fd 4, JSON messages ending in NUL), for the report tests.

    with Chromium(binary) as browser:
        page = browser.open(Path("report.html"), width=1280, height=900)
        page.errors, page.screenshot (PNG bytes), page.evaluate("document.title")

Errors collected: uncaught exceptions, ``console.error``/``console.assert`` and the browser's
own error log (a picture that fails to load, a blocked request).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def find_chromium() -> str | None:
    """The Chromium binary: ``/usr/bin/chromium`` or ``chromium``/``chromium-browser`` on PATH."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One opened page: its target session, errors and (after :meth:`shoot`) screenshot."""

    def __init__(self, browser: "Chromium", session: str) -> None:
        self.browser, self.session = browser, session
        self.errors: list[str] = []
        self.screenshot: bytes = b""
        self.loader: str | None = None  # the loaderId of the document shown

    def call(self, method: str, **params: Any) -> dict:
        return self.browser.call(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (an exception fails the call)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def broken_images(self, timeout_ms: int = 15000) -> int:
        """How many pictures of the page do not show once each had its chance to load. The
        predict report loads its pictures lazily: a picture loads when it nears the viewport,
        which may be after the load event. So each picture not yet loaded is scrolled into view,
        as a reader scrolling down would, and waited for (its ``load`` or ``error``, at most
        ``timeout_ms`` in all); then the page goes back to its top."""
        return self.evaluate(f"""(async () => {{
            const end = Date.now() + {int(timeout_ms)};
            for (const i of Array.from(document.images)) {{
                if (i.complete) continue;
                const done = new Promise(r => {{
                    i.addEventListener('load', r, {{once: true}});
                    i.addEventListener('error', r, {{once: true}});
                    setTimeout(r, Math.max(0, end - Date.now()));
                }});
                i.scrollIntoView({{block: 'center'}});
                if (!i.complete) await done;
            }}
            window.scrollTo(0, 0);
            return Array.from(document.images)
                .filter(i => !(i.complete && i.naturalWidth > 0)).length;
        }})()""")

    def shoot(self) -> bytes:
        self.screenshot = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return self.screenshot


class Chromium:
    """A headless Chromium process with a fresh profile, closed on exit."""

    def __init__(self, binary: str, timeout: float = 20.0) -> None:
        self.binary, self.timeout = binary, timeout
        self._id = 0
        self._buf = b""
        self.events: list[dict] = []

    def __enter__(self) -> "Chromium":
        self.profile = tempfile.mkdtemp(prefix="report-chromium-")
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()
        # park the child's ends above 10 so that dup2 onto 3 and 4 cannot clobber them
        a = fcntl.fcntl(to_child, fcntl.F_DUPFD_CLOEXEC, 10)
        b = fcntl.fcntl(from_child, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child)
        os.close(from_child)

        def child_fds() -> None:
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
             "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, pass_fds=(3, 4), preexec_fn=child_fds)
        os.close(a)
        os.close(b)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._send("Browser.close", {}, None)
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.proc.stderr:
                self.proc.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def _send(self, method: str, params: dict, session: str | None) -> int:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self._id

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")[-2000:] \
                        if self.proc.poll() is not None else ""
                    raise RuntimeError(f"Chromium closed the pipe (exit {self.proc.poll()}): {err}")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its reply (events meanwhile go to ``events``)."""
        want = self._send(method, params or {}, session)
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_load(self, page: Page, loader: str | None = None) -> None:
        """Wait for the ``load`` lifecycle event of a document of ``page``: the one that
        ``loader`` (a loaderId) fetches, or with ``loader=None`` any one but the page's current
        document. ``Page.loadEventFired`` names no document: a late load event of the tab's blank
        page would pass for the report's (and turning lifecycle events on replays the blank
        page's own ``load``, which its loaderId tells apart)."""
        deadline = time.monotonic() + self.timeout

        def ours(e: dict) -> bool:
            p = e.get("params", {})
            return (e.get("method") == "Page.lifecycleEvent" and e.get("sessionId") == page.session
                    and p.get("name") == "load"
                    and (p.get("loaderId") == loader if loader else p.get("loaderId") != page.loader))
        for i, e in enumerate(self.events):
            if ours(e):
                page.loader = self.events.pop(i)["params"]["loaderId"]
                return
        while True:
            msg = self._read(deadline)
            if ours(msg):
                page.loader = msg["params"]["loaderId"]
                return
            self.events.append(msg)

    def navigate(self, page: Page, url: str) -> None:
        """Load ``url`` in ``page`` and return after that very document's load event."""
        loader = page.call("Page.navigate", url=url).get("loaderId")
        if not loader:
            raise RuntimeError(f"Chromium did not start a navigation to {url}")
        self.wait_load(page, loader)

    def new_page(self, width: int = 1280, height: int = 900,
                 domains: tuple[str, ...] = ("Page", "Runtime", "Log")) -> Page:
        """A new blank tab of ``width`` x ``height`` CSS px with ``domains`` enabled and the
        page's lifecycle events on."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in domains:
            page.call(f"{domain}.enable")
        page.call("Page.setLifecycleEventsEnabled", enabled=True)
        page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        return page

    def open(self, path: Path, width: int = 1280, height: int = 900) -> Page:
        """Open ``path`` (file://) in a new tab of ``width`` x ``height`` CSS px; return the page
        after its load event and a short settle, with its errors so far collected."""
        page = self.new_page(width, height)
        self.navigate(page, Path(path).resolve().as_uri())
        page.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)))")
        self.collect_errors(page)
        return page

    def follow(self, page: Page, selector: str, index: int) -> dict:
        """Click the ``index``-th element matching ``selector`` on ``page`` as a user would and
        wait for the page it leads to; returns that page's ``{"url", "type", "width",
        "height"}`` (``width``/``height``: the size of the picture shown, 0 for a non-image)."""
        # lifecycle events still queued belong to documents before the current one
        self.events = [e for e in self.events if not (e.get("method") == "Page.lifecycleEvent"
                                                      and e.get("sessionId") == page.session)]
        page.evaluate(f"document.querySelectorAll({json.dumps(selector)})[{index}].click()")
        self.wait_load(page)
        return page.evaluate(
            "({url: location.href, type: document.contentType,"
            " width: document.images.length ? document.images[0].naturalWidth : 0,"
            " height: document.images.length ? document.images[0].naturalHeight : 0})")

    def collect_errors(self, page: Page) -> list[str]:
        """Move the page's error events from ``events`` into ``page.errors``."""
        keep = []
        for e in self.events:
            if e.get("sessionId") != page.session:
                keep.append(e)
                continue
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                page.errors.append(f"exception: {p['exceptionDetails'].get('text')} "
                                   f"{p['exceptionDetails'].get('exception', {}).get('description', '')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                page.errors.append(f"console.{p['type']}: "
                                   + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                page.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        self.events = keep
        return page.errors
