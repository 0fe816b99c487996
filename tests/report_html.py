"""Test helpers for the HTML reports: a strict HTML5 well-formedness checker (html.parser),
table and gallery extraction, and the local files a page references."""
from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@dataclass
class Table:
    classes: list[str]
    head: list[list[str]] = field(default_factory=list)
    body: list[list[str]] = field(default_factory=list)
    foot: list[list[str]] = field(default_factory=list)
    body_classes: list[list[str]] = field(default_factory=list)  # per body row: each cell's class
    row_classes: list[str] = field(default_factory=list)  # per body row: the <tr> class


class PageParser(HTMLParser):
    """Collects errors (unbalanced or misnested tags, duplicate ids), references, tables and
    the <code> texts of each gallery (``div.gallery[data-kind]``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.doctype = False
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.refs: list[tuple[str, str]] = []  # (tag, url)
        self.ids: list[str] = []
        self.tables: list[Table] = []
        self.galleries: dict[tuple[str, str], list[str]] = {}
        self.scripts: list[dict] = []
        self._table: Table | None = None
        self._section = "body"
        self._row: list[str] | None = None
        self._row_cls: list[str] = []
        self._cell: list[str] | None = None
        self._gallery: tuple[str, str] | None = None
        self._gallery_depth = 0
        self._code: list[str] | None = None

    def handle_decl(self, decl: str) -> None:
        if decl.strip().lower() == "doctype html":
            self.doctype = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "id" in a:
            if a["id"] in self.ids:
                self.errors.append(f"duplicate id {a['id']!r}")
            self.ids.append(a["id"])
        for key in ("src", "href"):
            if a.get(key) is not None:
                self.refs.append((tag, a[key]))
        if tag == "link":
            self.errors.append(f"<link> to {a.get('href')!r}: pages must inline their CSS")
        if tag == "script":
            self.scripts.append(a)
        if tag == "table":
            self._table = Table(classes=(a.get("class") or "").split())
            self.tables.append(self._table)
        elif tag in ("thead", "tbody", "tfoot"):
            self._section = tag[1:] if tag != "tbody" else "body"
        elif tag == "tr":
            self._row, self._row_cls = [], []
            if self._table is not None and self._section == "body":
                self._table.row_classes.append(a.get("class") or "")
        elif tag in ("td", "th"):
            self._cell = []
            self._row_cls.append(a.get("class") or "")
        elif tag == "div" and "gallery" in (a.get("class") or "").split():
            self._gallery = (a.get("data-category") or "", a.get("data-kind") or "")
            self.galleries[self._gallery] = []
            self._gallery_depth = len(self.stack)
        elif tag == "code" and self._gallery is not None:
            self._code = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:  # <div/> is not a closed div in HTML5
            self.errors.append(f"self-closing non-void <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"end tag of void element </{tag}>")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> does not close the open <{self.stack[-1] if self.stack else None}>"
                               f" (line {self.getpos()[0]})")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            getattr(self._table, self._section).append(self._row)
            if self._section == "body":
                self._table.body_classes.append(self._row_cls)
            self._row = None
        elif tag in ("thead", "tbody", "tfoot"):
            self._section = "body"
        elif tag == "table":
            self._table = None
        elif tag == "code" and self._code is not None and self._gallery is not None:
            self.galleries[self._gallery].append("".join(self._code))
            self._code = None
        elif tag == "div" and self._gallery is not None and len(self.stack) == self._gallery_depth:
            self._gallery = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._code is not None:
            self._code.append(data)


def parse_page(path: Path) -> PageParser:
    """Parse ``path``; assert the page is well-formed HTML5 (doctype, balanced tags, unique ids,
    html/head/title/body present, no external resources) and return the parser."""
    text = Path(path).read_text(encoding="utf-8")
    p = PageParser()
    p.feed(text)
    p.close()
    assert p.doctype, f"{path}: no <!DOCTYPE html>"
    assert not p.stack, f"{path}: unclosed tags {p.stack}"
    assert not p.errors, f"{path}: {p.errors[:10]}"
    assert '<meta charset="utf-8">' in text, f"{path}: no charset"
    for tag in ("<html", "<head>", "<title>", "<body>"):
        assert tag in text, f"{path}: no {tag}"
    for s in p.scripts:
        assert "src" not in s, f"{path}: external script {s}"
    for _, url in p.refs:
        assert not urlsplit(url).scheme and not url.startswith("//"), \
            f"{path}: reference to {url!r} would need the network (or leave the folder)"
    for _, url in p.refs:
        if url.startswith("#"):
            assert url[1:] in p.ids, f"{path}: link to missing anchor {url}"
    return p


def local_files(path: Path, parser: PageParser) -> list[Path]:
    """The local files the page's src/href attributes name (fragments dropped)."""
    out = []
    for _, url in parser.refs:
        part = urlsplit(url).path
        if part:
            out.append((Path(path).parent / unquote(part)).resolve())
    return out


def assert_files_exist(path: Path, parser: PageParser) -> list[Path]:
    """Assert every local file the page references exists; return them."""
    files = local_files(path, parser)
    missing = [str(f) for f in files if not f.is_file()]
    assert not missing, f"{path} references missing files: {missing[:10]}"
    return files


def table_with(parser: PageParser, cls: str) -> list[Table]:
    """The page's tables that have class ``cls``."""
    return [t for t in parser.tables if cls in t.classes]
