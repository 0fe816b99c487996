"""Get MVTec AD and VisA ready for the reproduction scripts: verify, extract, index (meta.json).

    python scripts/prepare_data.py --archives ~/Downloads            # archives or folders there
    python scripts/prepare_data.py --download                        # fetch the public archives
    python scripts/prepare_data.py --archives dl --datasets visa --sha256 VisA_20220922.tar=<hash>
    python scripts/prepare_data.py --set elpv ELPV_DATA --out data   # index in data/elpv/

For each dataset the source is, in this order: an already prepared ``OUT/<name>`` folder; the
archive in ``--archives`` (``mvtec_anomaly_detection.tar.xz``, ``VisA_20220922.tar``), checked
against its sha256 and extracted; an extracted folder in ``--archives`` (``mvtec``,
``mvtec_anomaly_detection``, ``visa``, ``VisA_20220922``, or ``--archives`` itself), linked as
``OUT/<name>``; with ``--download``, the public URL. Then ``meta.json`` is written in the released
format (``datasets.prepare``; VisA from the ``split_csv/1cls.csv`` that ships in its tar).

Exit status: 0 ok, 2 for a missing, corrupt or mismatching input (one ``error:`` line).
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import lzma
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.sets import MVTEC_CATEGORIES, VISA_CATEGORIES


class PrepareError(Exception):
    """A user-fixable problem; the message is one line naming the file and the fix."""


@dataclass(frozen=True)
class Source:
    name: str  # output folder name and datasets.prepare kind
    title: str
    archive: str
    url: str
    sha256: str | None  # None: unverified (we print the hash we computed)
    size: int | None  # bytes of the known archive
    licence: str
    categories: tuple[str, ...]
    test_images: int
    folders: tuple[str, ...]  # names an extracted copy may have inside --archives


# Checksums: the ones anomalib's downloader checks (DownloadInfo.hashsum), matching independent
# records of the same downloads (MVTec 5,264,982,680 bytes, VisA 1,929,840,640 bytes).
SOURCES = {
    "mvtec": Source(
        "mvtec", "MVTec AD", "mvtec_anomaly_detection.tar.xz",
        "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
        "420938113-1629952094/mvtec_anomaly_detection.tar.xz",
        "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d", 5_264_982_680,
        "CC BY-NC-SA 4.0 (non-commercial)", MVTEC_CATEGORIES, 1725,
        ("mvtec", "mvtec_anomaly_detection", "mvtec_ad")),
    "visa": Source(
        "visa", "VisA", "VisA_20220922.tar",
        "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362", 1_929_840_640,
        "CC BY 4.0", VISA_CATEGORIES, 2162, ("visa", "VisA_20220922", "VisA")),
}


def say(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- checksums
def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
            done += len(block)
            if total > 1 << 28 and done % (1 << 28) < chunk:
                print(f"\r  sha256 {path.name}: {100 * done // total}%", end="", flush=True)
    if total > 1 << 28:
        print()
    return h.hexdigest()


def verify(path: Path, src: Source, overrides: dict[str, str], skip: bool) -> None:
    """Check ``path`` against the known or ``--sha256`` checksum; raise PrepareError on mismatch."""
    if skip:
        say(f"  {path.name}: checksum not checked (--skip_checksum)")
        return
    expected = overrides.get(path.name, src.sha256)
    got = sha256_of(path)
    if expected is None:
        say(f"  {path.name}: sha256 {got} (unverified: no known checksum; pass "
            f"--sha256 {path.name}=HASH to check it)")
        return
    if got != expected.lower():
        size = path.stat().st_size
        hint = (f" (size {size:,} bytes, expected {src.size:,}: incomplete download?)"
                if src.size and path.name not in overrides and size != src.size else "")
        raise PrepareError(
            f"checksum mismatch for {path}: sha256 {got}, expected {expected}{hint}. The file is "
            f"corrupt or incomplete (delete it and download again from {src.url}), or another "
            f"release (accept it with --sha256 {path.name}={got})")
    say(f"  {path.name}: sha256 ok")


# --------------------------------------------------------------------------- download
def download(src: Source, dest_dir: Path) -> Path:
    """Fetch ``src.url`` into ``dest_dir/src.archive`` (via a .part file)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest, part = dest_dir / src.archive, dest_dir / (src.archive + ".part")
    say(f"downloading {src.title} ({src.licence}) from {src.url}")
    req = urllib.request.Request(src.url, headers={"User-Agent": "april-gan-prepare/1.0"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            done = 0
            while block := r.read(1 << 20):
                f.write(block)
                done += len(block)
                if total:
                    print(f"\r  {done / 2**20:,.0f} / {total / 2**20:,.0f} MiB", end="", flush=True)
        print()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise PrepareError(
            f"cannot download {src.url}: {reason}. Offline? Download {src.archive} on a connected "
            f"machine and pass its folder with --archives DIR") from e
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- extraction
def extract(archive: Path, dest: Path) -> None:
    """Extract a tar / tar.xz safely (no absolute paths, links out of ``dest``, devices)."""
    dest.mkdir(parents=True, exist_ok=True)
    say(f"  extracting {archive.name} into {dest} ...")
    check_tar_end(archive)
    n = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, dest, filter="data")
                else:  # Python without extraction filters: refuse unsafe names ourselves
                    target = (dest / member.name).resolve()
                    if dest.resolve() not in target.parents and target != dest.resolve():
                        raise tarfile.TarError(f"unsafe member path {member.name!r}")
                    if not (member.isdir() or member.isfile()):
                        continue
                    tar.extract(member, dest)
                n += 1
                if n % 2000 == 0:
                    print(f"\r  {n} files", end="", flush=True)
            while tar.fileobj.read(1 << 20):  # to the end: a cut .xz stream raises EOFError
                pass
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise PrepareError(f"no space left on device while extracting {archive} into {dest}") from e
        raise PrepareError(f"cannot extract {archive}: {e}. The archive is corrupt or incomplete: "
                           "delete it and download it again") from e
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, ValueError) as e:
        raise PrepareError(
            f"cannot extract {archive}: {type(e).__name__}: {e}. The archive is corrupt or "
            "incomplete: delete it and download it again") from e
    if n >= 2000:
        print()
    if n == 0:
        raise PrepareError(f"{archive} is empty: delete it and download it again")


def check_tar_end(archive: Path) -> None:
    """An uncompressed tar ends in zero blocks; a cut one usually does not (tarfile stops quietly)."""
    with open(archive, "rb") as f:
        head = f.read(6)
        if head.startswith((b"\xfd7zXZ", b"\x1f\x8b", b"BZh")):
            return  # compressed: the decompressor detects a cut stream
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - 1024, 0))
        tail = f.read()
    if size < 1024 or size % 512 or tail.strip(b"\0"):
        raise PrepareError(f"{archive} is cut short or not a tar archive ({size:,} bytes): delete it "
                           "and download it again")


def has_mvtec_layout(d: Path) -> bool:
    return d.is_dir() and any((c / "train").is_dir() and (c / "test").is_dir()
                              for c in d.iterdir() if c.is_dir())


def has_visa_layout(d: Path) -> bool:
    return d.is_dir() and ((d / "split_csv").is_dir() or
                           any((c / "Data" / "Images").is_dir() for c in d.iterdir() if c.is_dir()))


def find_root(top: Path, kind: str) -> Path | None:
    """The dataset root at ``top`` or one or two folder levels below it."""
    test = has_mvtec_layout if kind == "mvtec" else has_visa_layout
    levels = [[top]]
    for _ in range(2):
        levels.append([c for d in levels[-1] if d.is_dir() for c in sorted(d.iterdir())
                       if c.is_dir() and not c.name.startswith(".")])
    for level in levels:
        for d in level:
            if test(d):
                return d
    return None


# --------------------------------------------------------------------------- per dataset
def locate(src: Source, out: Path, archives: Path | None, online: bool, force: bool):
    """Returns ('ready' | 'archive' | 'folder', path)."""
    target = out / src.name
    if target.exists() and not force and find_root(target, src.name) == target:
        return "ready", target
    if archives is not None:
        a = archives / src.archive
        if a.is_file():
            return "archive", a
        for name in src.folders:
            d = archives / name
            root = find_root(d, src.name) if d.is_dir() else None
            if root is not None and root.resolve() != target.resolve():
                return "folder", root
        if find_root(archives, src.name) == archives and archives.resolve() != target.resolve():
            return "folder", archives
    if online:
        return "archive", download(src, archives or (out / "archives"))
    where = f"in {archives}" if archives else "(no --archives given)"
    raise PrepareError(
        f"{src.title}: no {src.archive} and no extracted {'/'.join(src.folders[:2])} folder "
        f"{where}. Download {src.url} ({src.licence}) and pass its folder with --archives DIR, "
        f"or run with --download when online")


def prepare_one(src: Source, out: Path, archives: Path | None, online: bool, force: bool,
                sha: dict[str, str], skip_checksum: bool) -> Path:
    say(f"== {src.title}")
    kind, path = locate(src, out, archives, online, force)
    target = out / src.name
    if kind == "ready":
        say(f"  {target} already extracted (--force to redo)")
    elif kind == "folder":
        say(f"  using the extracted folder {path}")
        if target.is_symlink() or target.exists():
            if not force:
                raise PrepareError(f"{target} exists but is not a {src.title} folder: move it away "
                                   "or pass --force")
            _remove(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve(), target_is_directory=True)
        say(f"  linked {target} -> {path.resolve()}")
    else:
        verify(path, src, sha, skip_checksum)
        partial = out / f".{src.name}.partial"
        _remove(partial)
        try:
            extract(path, partial)
            root = find_root(partial, src.name)
            if root is None:
                raise PrepareError(f"{path} does not hold a {src.title} folder layout "
                                   f"(expected {_layout(src.name)})")
            if target.exists() or target.is_symlink():
                _remove(target)
            os.replace(root, target)
        finally:
            _remove(partial)
        say(f"  extracted to {target}")
    if src.name == "visa" and not (target / "split_csv" / "1cls.csv").is_file():
        raise PrepareError(
            f"VisA split file missing: {target / 'split_csv' / '1cls.csv'}. It ships in "
            f"{src.archive}; otherwise get split_csv/1cls.csv from "
            "https://github.com/amazon-science/spot-diff")
    check_categories(src, target)
    index(src, target)
    return target


def _layout(kind: str) -> str:
    return ("<category>/{train/good, test/<type>, ground_truth/<type>}" if kind == "mvtec"
            else "<category>/Data/{Images,Masks} and split_csv/1cls.csv")


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p)


def check_categories(src: Source, root: Path) -> list[str]:
    if src.name == "mvtec":
        found = [c for c in src.categories if (root / c / "test").is_dir()]
    else:
        found = [c for c in src.categories if (root / c / "Data").is_dir()]
    missing = [c for c in src.categories if c not in found]
    if missing:
        warn(f"{src.title}: {len(missing)} of {len(src.categories)} categories missing in {root}: "
             f"{', '.join(missing)}. Their rows stay empty and the mean is not the paper's mean; "
             f"re-extract {src.archive} if this is unexpected")
    return missing


def index(src: Source, root: Path) -> None:
    from datasets.sets.indexing import prepare
    from errors import DatasetError
    try:
        path = prepare(src.name, root)
    except DatasetError as e:
        raise PrepareError(str(e)) from e
    meta = json.loads(path.read_text())
    n_test = sum(len(v) for v in meta["test"].values())
    n_train = sum(len(v) for v in meta["train"].values())
    say(f"  wrote {path}: {len(meta['test'])} categories, {n_train} train, {n_test} test images")
    if len(meta["test"]) == len(src.categories) and n_test != src.test_images:
        warn(f"{src.title}: {n_test} test images, the paper's split has {src.test_images}")


def parse_sha(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        value = value.strip().lower()
        if not sep or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise PrepareError(f"--sha256 {item!r}: expected FILE=HASH with a 64-hex-digit sha256")
        out[Path(name).name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=os.environ.get("APRILGAN_PROG", "python scripts/prepare_data.py"), description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archives", type=Path, default=None,
                   help="folder holding the downloaded archives or extracted folders")
    p.add_argument("--download", action="store_true",
                   help="download missing archives from the public URLs into --archives "
                        "(default OUT/archives)")
    p.add_argument("--out", type=Path, default=None,
                   help="where OUT/mvtec and OUT/visa go (default: <repo>/data); with --set, "
                        "the index of set NAME goes to OUT/NAME (default: ROOT/meta.json, "
                        "beside its data)")
    p.add_argument("--datasets", nargs="+", choices=sorted(SOURCES), default=["mvtec", "visa"],
                   help="which datasets (default: both)")
    p.add_argument("--sha256", nargs="+", default=[], metavar="FILE=HASH",
                   help="expected sha256 of an archive, overriding the built-in table")
    p.add_argument("--skip_checksum", "--skip-checksum", action="store_true",
                   help="do not hash the archives (not recommended)")
    p.add_argument("--force", action="store_true",
                   help="redo extraction / linking even when OUT/<dataset> exists")
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("NAME", "ROOT"),
                   help="index an unpacked benchmark set (btad, mpdd, isic, ...; the README "
                        "lists them) at ROOT with its builder; repeatable; then nothing else "
                        "is prepared")
    args = p.parse_args(argv)
    if args.set:
        from datasets.prepare import main as index_main
        for name, root in args.set:
            code = index_main([name, root] + (["--out", str(args.out / name)] if args.out else []))
            if code:
                return code
        return 0
    args.out = args.out or Path(__file__).resolve().parents[1] / "data"
    try:
        sha = parse_sha(args.sha256)
        if args.archives is not None and not args.archives.is_dir():
            if not args.download:
                raise PrepareError(f"--archives folder not found: {args.archives}")
            args.archives.mkdir(parents=True)
        done = [prepare_one(SOURCES[d], args.out, args.archives, args.download, args.force, sha,
                            args.skip_checksum) for d in args.datasets]
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    say("ready: " + ", ".join(str(d) for d in done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
