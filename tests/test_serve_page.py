"""serve.py's page in headless Chromium, against a real server of two exports with an API
key: the page asks for the key, lists both objects, scores an uploaded file (the score and
verdict of predict.py, the heatmap, the thresholds and their source), the threshold slider
flips the verdict, a dropped image is scored, a refused file shows the service's reason; no
script error, nothing fetched from outside the service."""
from __future__ import annotations

import json
import time

import pytest
from report_browser import Chromium, find_chromium
from test_serve import KEY, exports, two  # noqa: F401 - the fixtures


def wait_for(page, expression: str, timeout: float = 60.0):
    """Poll ``expression`` in the page until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"the page never showed: {expression}")


def open_url(browser: Chromium, url: str):
    """A new tab at ``url`` after that document's load event (``report_browser``'s Page)."""
    page = browser.new_page(1280, 900, ("Page", "Runtime", "Log", "DOM", "Network"))
    browser.navigate(page, url)
    return page


def upload(page, path) -> None:
    """Choose ``path`` in the page's file input as a user does (DevTools' file chooser)."""
    root = page.call("DOM.getDocument")["root"]["nodeId"]
    node = page.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    page.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)


def test_the_page_scores_an_upload_and_the_slider_moves_the_verdict(two, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    server, folder, want = two
    name = "broken_large_000.png"
    rec = want["bottle"][name]
    with Chromium(binary, timeout=60) as browser:
        page = open_url(browser, server.url + "/")
        wait_for(page, "document.getElementById('key-row').style.display === 'block'")
        assert "API key" in page.evaluate("document.getElementById('status').textContent")
        page.evaluate("document.getElementById('key').focus()")
        page.call("Input.insertText", text=KEY)  # typed
        page.evaluate("document.getElementById('key-save').click()")
        options = wait_for(page, "(o => o.length == 2 && [...o].map(x => x.value))"
                                 "(document.getElementById('object').options)")
        assert options == ["bottle", "screw"]
        page.evaluate("document.getElementById('object').value = 'bottle'")

        upload(page, folder / name)
        wait_for(page, f"document.getElementById('status').textContent.includes('scored {name}')")
        shown = page.evaluate("""(() => { const t = id => document.getElementById(id).textContent;
            const h = document.getElementById('heatmap');
            return {score: t('score'), verdict: t('verdict'), source: t('source'),
                    pixel: t('pixel-threshold'), threshold: t('threshold-value'),
                    slider: Number(document.getElementById('threshold').value),
                    heatmap: h.complete ? h.naturalWidth : -1, regions: t('regions-note')}; })()""")
        assert shown["score"] == f"{rec['score']:.6f}"
        assert shown["verdict"] == ("anomalous" if rec["anomalous"] else "normal")
        assert shown["source"].endswith("bottle.onnx (sidecar)") and shown["pixel"] == "2.0000"
        assert shown["threshold"] == "0.999200 (the service's)" and shown["slider"] == 0.9992
        assert wait_for(page, "document.getElementById('heatmap').naturalWidth") == 256
        assert shown["regions"].endswith("at or above the pixel threshold")

        def slide(value: float) -> str:  # what the range input does as it is dragged
            page.evaluate(f"(s => {{ s.value = {value!r}; s.dispatchEvent(new Event('input', "
                          "{bubbles: true})); })(document.getElementById('threshold'))")
            return page.evaluate("document.getElementById('verdict').textContent")

        assert slide(min(1.0, rec["score"] + 1e-4)) == "normal"
        assert "(moved)" in page.evaluate("document.getElementById('threshold-value').textContent")
        assert slide(max(0.0, rec["score"] - 1e-4)) == "anomalous"
        page.evaluate("document.getElementById('reset-threshold').click()")
        assert page.evaluate("document.getElementById('verdict').textContent") == \
            ("anomalous" if rec["anomalous"] else "normal")
        page.shoot()
        (tmp_path / "page.png").write_bytes(page.screenshot)  # to look at

        # a picture dropped on the zone (made by the page's own canvas)
        page.evaluate("""(() => { const c = document.createElement('canvas');
            c.width = 64; c.height = 48; const g = c.getContext('2d');
            g.fillStyle = '#3a6'; g.fillRect(0, 0, 64, 48); g.fillStyle = '#c22'; g.fillRect(20, 10, 9, 9);
            c.toBlob(b => { const dt = new DataTransfer();
              dt.items.add(new File([b], 'dropped.png', {type: 'image/png'}));
              document.getElementById('drop').dispatchEvent(new DragEvent('drop',
                {dataTransfer: dt, bubbles: true, cancelable: true})); }, 'image/png'); })()""")
        wait_for(page, "document.getElementById('status').textContent.includes('scored dropped.png')")
        assert page.evaluate("document.getElementById('file-name').textContent") == "dropped.png"

        # a file that is not an image: the service's reason, shown
        bad = tmp_path / "notes.txt"
        bad.write_text("not an image")
        upload(page, bad)
        error = wait_for(page, "document.getElementById('error').textContent")
        assert error.startswith("415:") and "not an image format" in error

        errors = [e for e in browser.collect_errors(page) if "status of 401" not in e
                  and "status of 415" not in e]
        assert not errors, errors
        urls = {e["params"]["request"]["url"] for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"}
        outside = [u for u in urls if not u.startswith((server.url, "data:", "blob:"))]
        assert not outside, outside
        assert json.loads(json.dumps(shown))  # what the page showed, for the log on failure
