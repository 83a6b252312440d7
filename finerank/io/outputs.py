"""The output policy of every command, and the atomic writers that follow it.

Writers are atomic: a temp file in the same folder renamed over the target, so a half-written output never replaces
a good one. :func:`check_outputs` runs before any work; :func:`written_together` lands a command's files together.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable

from ..core.errors import OutputError
from ..core.records import Pair

# The output policy of every command, checked by check_outputs before any work and again by atomic_write:
# - an output is a regular file or a new path; a folder, a device, a FIFO or a socket is refused (a writer replaces
#   the file through a temp file renamed over it, which would turn a device into a file);
# - a symlink is written through: its target is replaced, the link stays (and the target is what is compared);
# - an output is never an input, nor a file an input folder is read from, nor another output of the same command;
# - the nearest existing folder above it must be a folder where a file can be created (missing folders are made);
# - every error names the path the user gave (OutputError, exit 2), never a temp file.
_STAGED: contextvars.ContextVar[list | None] = contextvars.ContextVar("finerank_staged_writes", default=None)
_PROTECTED_MAX = 20_000  # files of one input folder compared with the outputs


def _real(path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _not_regular(p: Path) -> str | None:
    """What is at ``p`` (following links) when it is not a regular file; None for a regular file or nothing."""
    try:
        mode = os.stat(p).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a path under a file is caught later)
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _creatable_in(user, folder: Path) -> None:
    """The nearest existing folder at or above ``folder`` accepts a new file (tried, not guessed from the mode bits:
    root passes every permission check, and /proc refuses all the same)."""
    p = folder
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise OutputError(user, f"cannot be written: {p} is a file, not a folder",
                          hint="give a path in a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".finerank-probe.", dir=p)
    except OSError as e:
        raise OutputError(user, f"cannot create a file in {p} ({e.strerror or e})",
                          hint="give a path in a folder you can write to") from None
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(probe)


def check_output_file(path) -> Path:
    """``path`` as a writable output file: refused when it is a folder, a device or a FIFO, or when no file can be
    created where it goes. Returns the real path it writes to (a symlink's target)."""
    target = _real(path)
    kind = _not_regular(target)
    if kind is not None:
        hint = "give a file path, e.g. DIR/name.jsonl" if kind == "a folder" else (
            "finerank writes regular files only (through a temp file renamed into place): give a file path")
        raise OutputError(path, f"is {kind}, not a regular file", hint=hint)
    _creatable_in(path, target.parent)
    return target


def check_output_folder(path) -> Path:
    """``path`` as an output folder: a folder or a new path where a folder can be made. Returns its real path."""
    target = _real(path)
    kind = _not_regular(target)
    if os.path.exists(target) and kind != "a folder":
        raise OutputError(path, f"is {kind or 'a file'}, not a folder", hint="give a folder (new or existing)")
    _creatable_in(path, target)
    return target


def _protected(path) -> dict[Path, str]:
    """The real paths an input stands for (itself and, for a folder, the files in it), each with the user's name."""
    if path is None:
        return {}
    p = Path(os.path.expanduser(str(path)))
    if not os.path.exists(p):
        return {}  # a hub id or an embedded collection's name: nothing on disk to overwrite
    real = _real(p)
    out = {real: str(path)}
    if real.is_dir():
        for n, f in enumerate(real.rglob("*")):
            if n >= _PROTECTED_MAX:
                break
            if not f.is_dir():
                out[_real(f)] = str(Path(str(path)) / f.relative_to(real))
    return out


def check_outputs(outputs: Iterable, inputs: Iterable = (), *, folders: Iterable = ()) -> list[Path]:
    """Check every output of a command before it does any work (see the policy above); None entries are skipped.

    ``outputs`` are files, ``folders`` output folders (their own files are checked as outputs by the caller);
    ``inputs`` are what the command reads: files, or folders whose every file is protected. Raises OutputError when
    an output is an input, when two outputs are the same file, or when an output cannot be written. Returns the
    real paths of the output files."""
    protected: dict[Path, str] = {}
    for i in inputs:
        protected.update(_protected(i))
    for d in folders:
        if d is None:
            continue
        real = check_output_folder(d)
        if real in protected:
            raise OutputError(d, f"is an input ({protected[real]}): writing into it could destroy it",
                              hint="write the outputs to another folder")
    seen: dict[Path, str] = {}
    reals = []
    for o in outputs:
        if o is None:
            continue
        real = check_output_file(o)
        if real in protected:
            named = "" if protected[real] == str(o) else f" ({protected[real]})"
            raise OutputError(o, f"is an input{named}: writing it would destroy the input",
                              hint="give the output another path")
        if real in seen:
            raise OutputError(o, f"is also the output {seen[real]}: one output would overwrite the other",
                              hint="give each output its own path")
        seen[real] = str(o)
        reals.append(real)
    return reals


@contextlib.contextmanager
def written_together():
    """Files written by :func:`atomic_write` inside the block land together: each is written and synced to its temp
    file, and only when the whole block succeeds are they renamed into place; when it fails, none is. Yields the
    list of (temp file, target, path given) still pending; :func:`pending_file` finds one."""
    outer = _STAGED.get()
    if outer is not None:  # nested: the outermost block lands them
        yield outer
        return
    pending: list[tuple[str, Path, str]] = []
    token = _STAGED.set(pending)
    try:
        yield pending
    except BaseException:
        for tmp, _, _ in pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        _STAGED.reset(token)
    for k, (tmp, target, user) in enumerate(pending):
        try:
            os.replace(tmp, target)
        except OSError as e:
            for rest, _, _ in pending[k:]:
                with contextlib.suppress(OSError):
                    os.unlink(rest)
            raise OutputError(user, f"could not be written ({e.strerror or e})") from None


def pending_file(path) -> Path:
    """Inside :func:`written_together`, the temp file that holds what ``path`` will receive; else ``path``."""
    real = _real(path)
    for tmp, target, _ in _STAGED.get() or ():
        if target == real:
            return Path(tmp)
    return Path(path)


def _mode_for(target: Path) -> int:
    """The permission bits of the file at ``target`` (it is replaced, not rewritten), or a new file's (0666 less the
    umask)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_failed(e: OSError, tmp: str, target: Path) -> bool:
    """Whether an OSError raised inside a write block came from writing the output (a full disk, an I/O error), not
    from something the block itself read."""
    return e.filename in (None, tmp, str(target))


# ----------------------------------------------------------------------------------------------- writers
@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temp file beside ``path`` and rename it over ``path`` only when the block succeeds (inside
    :func:`written_together`, when the whole group does). The output policy above applies: a folder, device or FIFO
    is refused, a symlink is written through, and errors name ``path``."""
    user = path
    target = check_output_file(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.chmod(tmp, _mode_for(target))  # mkstemp's file is private; the output keeps the mode a file would have
    except OSError as e:
        raise OutputError(user, f"could not be written ({e.strerror or e})") from None
    staged = _STAGED.get()
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if staged is not None:
            staged.append((tmp, target, str(user)))
        else:
            os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and _write_failed(e, tmp, target):
            hint = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else None
            raise OutputError(user, f"could not be written ({e.strerror or e})", hint=hint) from None
        raise


def write_jsonl(path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_pairs(path, pairs: Iterable[Pair]) -> int:
    return write_jsonl(path, (p.to_dict() for p in pairs))


def finite(obj):
    """``obj`` with every NaN or infinite float replaced by None: JSON that any reader parses (strict JSON has no
    NaN; a browser's JSON.parse refuses it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path, obj) -> None:
    """Strict JSON (a non-finite number is written as null), atomically."""
    with atomic_write(path) as f:
        json.dump(finite(obj), f, indent=2, ensure_ascii=False, default=str, allow_nan=False)
        f.write("\n")

