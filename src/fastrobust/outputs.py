"""Output locations: checked before any work starts, and write failures as one line.

Every command that writes (train, eval, visualize, timing) calls :func:`check_output_dir` on
its output folder before loading models or data, so a mistyped or unwritable location costs
nothing; writes go through :func:`writing`, which turns an ``OSError`` into an
:class:`~fastrobust.errors.OutputError` naming what was being written and where, while the
files finished before it stay in place. Files inside an output folder are written without
following symbolic links (:func:`replace_text`, :func:`append_text`, :func:`refuse_symlinks`):
a link planted in a run folder never redirects a write to the file it points at.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastrobust.errors import OutputError

#: bytes written (and synced) by the probe: enough to hit a full disk or quota
PROBE_BYTES = 4096


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a parent folder we may not enter
        return True


def _first_existing(path: Path) -> Path:
    """``path`` itself or the nearest ancestor that exists."""
    current = path
    while not _exists(current) and current != current.parent:
        current = current.parent
    return current


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def probe_writable(folder: Path, *, what: str) -> None:
    """Write, sync and remove a small temporary file in ``folder`` (or raise OutputError)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastrobust-probe-")
    except OSError as exc:
        raise OutputError(f"cannot write {what} in {folder} ({_reason(exc)})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\0" * PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write {what} in {folder} ({_reason(exc)})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_output_dir(
    path: str | Path, *, what: str = "output folder", field: str | None = None, own: bool = False
) -> Path:
    """Raise OutputError unless ``path`` is a writable folder or can be created as one.

    Creates nothing: it checks that no file stands at ``path`` or above it, and probes the
    nearest existing folder with a small synced write (a read-only folder or a full disk
    fails here, before the work). Returns ``path`` with ``~`` expanded. ``field``: the
    setting ``path`` came from (``timing.out``), named by the error as ``what``. ``own``: the
    folder holds only fastrobust's outputs (eval, timing, visualize, a study), so a symbolic
    link to a file anywhere in it is refused (:func:`refuse_file_links`).
    """
    if field is not None:
        try:
            return check_output_dir(path, what=field, own=own)
        except OutputError as exc:
            exc.field = field
            raise
    p = Path(path).expanduser()
    if _exists(p) and not p.is_dir():
        raise OutputError(f"{what} {p} is an existing file, not a folder")
    existing = _first_existing(p)
    if not existing.is_dir():
        raise OutputError(f"{what} {p} cannot be created: {existing} is a file")
    probe_writable(existing, what=what)
    if own and p.is_dir():
        refuse_file_links(p)
    return p


def refuse_file_links(folder: Path) -> None:
    """OutputError if a file in ``folder`` (or below it) is a symbolic link: a command
    rewriting its outputs there would write through it, into the file it points at."""
    for entry in sorted(folder.rglob("*")):
        if entry.is_symlink() and not entry.is_dir():
            raise symlink_error(entry)


@contextmanager
def writing(what: str, where: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` inside the block into one line: what was written, where, why."""
    try:
        yield
    except OSError as exc:
        failed = f": {exc.filename}" if exc.filename else ""
        raise OutputError(
            f"could not write {what} to {where} ({_reason(exc)}{failed}); "
            "files written before it are kept"
        ) from None


def symlink_error(path: Path) -> OutputError:
    """The one-line refusal to write through the symbolic link ``path``."""
    target = os.readlink(path) if path.is_symlink() else "?"
    return OutputError(
        f"{path} is a symbolic link (to {target}); fastrobust does not write through links "
        "in its output folders: remove it"
    )


def refuse_symlinks(folder: Path, names: tuple[str, ...]) -> None:
    """Raise OutputError if any of ``names`` in ``folder`` is a symbolic link (checked before
    work starts, so a resume refuses before it trains)."""
    for name in names:
        if (folder / name).is_symlink():
            raise symlink_error(folder / name)


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a link at ``path`` is
    replaced, never followed, and a failed write keeps the old file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created if missing), refusing a symbolic link there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise symlink_error(path) from None
        raise
    with os.fdopen(fd, "a") as fh:
        fh.write(text)


def open_no_follow(path: Path, flags: int) -> int:
    """``os.open(path, flags)`` that refuses a symbolic link at ``path`` (OutputError)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise symlink_error(path) from None
        raise
