"""Where finerank's inputs are and how their lines are read: paths (an embedded collection by name), the format a path
holds, ids (stable ids, and :func:`check_id` for the ids every reader takes), finite scores, file hashes, the file
names of a run folder, and the UTF-8 line reader every reader uses (a line that is not UTF-8 is a DataError naming
file, line and, where it can tell, the field)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterator

from ..core.errors import DataError, FinerankError
from ..core.records import Skipped

FORMATS = ("jsonl", "csv", "tsv", "beir", "trec")
DEFAULT_MAX_LABEL = 4.0
MAX_TEXT_CHARS = 100_000  # characters a query, document or title may hold in a data file (rerank's --max-chars too)
EMBEDDED = {"cranfield": Path(__file__).parents[1] / "datasets" / "cranfield"}
# the files of a run folder (finerank train --out DIR)
RUN_RECORD = "finerank-run.json"       # what the run did: data hashes, versions, timings, metrics
RUN_CONFIG = "finerank-config.yaml"    # the effective configuration, reusable with --config
COMPLETE = ".finerank-complete"        # written into a checkpoint once the Trainer has finished saving it


# ----------------------------------------------------------------------------------------------------- paths
def resolve_path(path: str | os.PathLike) -> Path:
    """A path, or the name of an embedded collection (``cranfield``)."""
    p = Path(path)
    if not p.exists() and str(path) in EMBEDDED:
        return EMBEDDED[str(path)]
    if not p.exists():
        names = ", ".join(EMBEDDED)
        raise FinerankError(f"{path}: no such file or folder", hint=f"give a path, or an embedded collection: {names}")
    return p


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "beir"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline().lower()
        return "trec" if "query-id" in header or "corpus-id" in header else "tsv"
    if suffix in (".qrels", ".trec", ".txt", ".run"):
        return "trec"
    raise FinerankError(
        f"{path}: cannot tell the format from the extension '{suffix}'",
        hint=f"pass --format with one of: {', '.join(FORMATS)}",
    )


def stable_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


ID_EXPECTED = "an id without whitespace or control characters (a TREC run's columns are separated by whitespace)"


def check_id(value: str, path, line: int | None, field: str) -> str:
    """``value`` if it can be written as an id wherever finerank writes one (a TREC run: whitespace-separated
    columns; JSONL): no space, tab, newline or other whitespace or control character. Every reader of ids calls it,
    so that no output can be corrupted by one; a DataError naming the file, line and field otherwise."""
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in value):
        raise DataError(path, line, field, value, ID_EXPECTED,
                        hint="give ids without spaces (e.g. replace them by '_'), or leave the id out")
    return value


def finite_score(value, path, line: int | None, field: str = "score",
                 what: str | None = "the first-stage retriever's score") -> float:
    """``value`` as a finite float (not NaN, not infinite, whether a number or a string such as "inf"); a DataError
    naming the file, line and field otherwise."""
    about = f" ({what})" if what else ""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise DataError(path, line, field, value, f"a number{about}") from None
    if isinstance(value, bool) or not math.isfinite(score):
        raise DataError(path, line, field, value, f"a finite number{about}, not NaN or infinity")
    return score


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def check_length(text: str, max_chars: int | None, path, line, field: str) -> str:
    """``text`` when it holds at most ``max_chars`` characters (None: no cap); else a DataError naming the file,
    line and field: a 50 MB document would take minutes and gigabytes in windows and embeddings."""
    if max_chars is not None and len(text) > max_chars:
        raise DataError(path, line, field, text[:40], f"a text of at most {max_chars} characters, found {len(text)}",
                        hint="split the document into passages (finerank reads at most "
                             f"{MAX_TEXT_CHARS:,} characters a text; rerank --max-chars raises its own cap)")
    return text


# ----------------------------------------------------------------------------------------------- line reader
_SURROGATE = re.compile("[\udc80-\udcff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # after a strict UTF-8 decode, only a JSON escape makes one
UTF8_EXPECTED = "UTF-8 text (undecodable bytes)"


def undecodable(path, n: int, raw: bytes, e: UnicodeDecodeError, locate=None) -> DataError:
    """The DataError for a line that is not UTF-8, naming the field that holds the bad bytes when ``locate``
    (a function of the line decoded with surrogateescape) can tell."""
    field = None
    if locate is not None:
        with contextlib.suppress(Exception):
            field = locate(raw.decode("utf-8", errors="surrogateescape").lstrip("\ufeff"))
    bad = raw[max(0, e.start - 10) : e.end + 10]
    return DataError(path, n, field, bad, UTF8_EXPECTED,
                     hint=f"byte {e.start + 1} of the line is not UTF-8: re-encode the file as UTF-8, "
                          "e.g. iconv -f latin1 -t utf-8")


def bad_key(row) -> str | None:
    """The first key of a parsed row whose value holds undecodable bytes (as surrogateescape characters)."""
    if isinstance(row, dict):
        for k, v in row.items():
            if isinstance(v, str) and _SURROGATE.search(v):
                return str(k)
    return None


def _locate_json(text: str) -> str | None:
    return bad_key(json.loads(text))


def lines(path: Path, locate=None, digest=None) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) without reading the file into memory; bad UTF-8 is a DataError.
    ``digest`` (a hashlib object) is updated with every byte read, as it is read: the hash of what was loaded."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if digest is not None:
                digest.update(raw)
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise undecodable(path, n, raw, e, locate) from None
            yield n, text


def _json_error(path, n: int, text: str, e: json.JSONDecodeError, what: str) -> DataError:
    """Malformed JSON: the text around the error and its column."""
    shown = text if len(text) <= 80 else text[max(0, e.pos - 40) : e.pos + 30]
    return DataError(path, n, None, shown, f"a JSON {what} ({e.msg} at column {e.colno})")


class Skipper:
    """Raises, or records the bad row when skipping."""

    def __init__(self, skip_invalid: bool, skipped: list[Skipped] | None):
        self.skip = skip_invalid
        self.skipped = skipped if skipped is not None else []

    @contextlib.contextmanager
    def row(self):
        try:
            yield
        except DataError as e:
            if not self.skip:
                raise
            self.skipped.append(Skipped(e.path, e.line or 0, e.field or "row", e.reason))


def lines_skipping(path: Path, sk: Skipper, locate=None, digest=None) -> Iterator[tuple[int, str]]:
    """Like lines, but a line with undecodable bytes is skipped (and recorded) when skipping."""
    if not sk.skip:
        yield from lines(path, locate, digest)
        return
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if digest is not None:
                digest.update(raw)
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                err = undecodable(path, n, raw, e, locate)
                sk.skipped.append(Skipped(err.path, n, err.field or "row", err.reason))
                continue
            yield n, text


def json_objects(path: Path, sk: Skipper, what: str = "", expected: str | None = None,
                 required: tuple[str, ...] = (), digest=None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file of ``what`` (document, query; "" for pairs):
    malformed JSON, a value that is not an object (``expected`` says what it should be) or a missing ``required``
    key is a DataError (recorded when skipping)."""
    kind = f"{what} object" if what else "object"
    for n, text in lines_skipping(path, sk, _locate_json, digest):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        with sk.row():
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise _json_error(path, n, text, e, kind) from None
            if not isinstance(row, dict):
                raise DataError(path, n, None, row, expected or f"a JSON {kind}")
            for k, v in row.items():
                for x, field in ((k, "row"), (v, str(k))):
                    if isinstance(x, str) and (m := _LONE_SURROGATE.search(x)):
                        raise DataError(path, n, None if field == "row" else field, x[max(0, m.start() - 20):
                                        m.start() + 20], f"Unicode text: a lone surrogate U+{ord(m.group()):04X} "
                                        f"(a \\u escape) at character {m.start() + 1} has no character",
                                        hint="escape a character outside the BMP as a surrogate pair, or write "
                                             "it as UTF-8")
            for k in required:
                if k not in row:
                    raise DataError(path, n, k, None, f"a '{k}' field in every {what}")
            yield n, row
