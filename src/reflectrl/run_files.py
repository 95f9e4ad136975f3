"""Files of a run directory: written whole or not at all, read back with errors that name the file.

A kill at any moment must leave a run that resumes: every file or directory a
later step (or a resume) reads is written to a temporary sibling and renamed
into place, which POSIX makes atomic. Append-only logs may lose their last,
torn line to a kill; readers drop it instead of failing.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from reflectrl.errors import UserError

#: the size and sha256 of every file of a step's output, as the step wrote it
FILES_RECORD = "files.json"


def unwritable_reason(path: str | os.PathLike, kind: str) -> str | None:
    """Why ``path``, a ``"file"`` or ``"folder"`` to be written, could not be: checked before any work, so
    that an output nobody can write is named before the hours that would produce it. None if it can."""
    path = Path(path)
    if path.exists():
        if kind == "file" and path.is_dir():
            return f"{path} is a folder; name the file to write"
        if kind == "folder" and not path.is_dir():
            return f"{path} is a file; name a folder"
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if existing != path and not existing.is_dir():
        return f"{existing} is a file, so {path} cannot be made under it"
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable, so {path} cannot be written"
    return None


_UMASK_LOCK = threading.Lock()


def default_mode(directory: bool = False) -> int:
    """What ``open()`` or ``mkdir`` would give a new file or folder under the process's umask: the
    temporary files and folders that atomic writes rename into place are made owner-only (0600, 0700),
    which would leave a run unreadable to the others who share its machine or group folder."""
    with _UMASK_LOCK:  # the umask can only be read by setting it
        umask = os.umask(0o022)
        os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = None) -> Iterator[IO]:
    """A handle on a temporary file beside ``path``, renamed onto it when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory, then rename it into place."""
    with atomic_file(path) as handle:
        handle.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=2) + "\n")


def write_jsonl_atomic(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    return write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def append_jsonl(row: dict[str, Any], path: str | os.PathLike) -> None:
    """Append one line; a kill can tear only this last line, which ``read_jsonl_tolerant`` drops."""
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, or a UserError naming the file when it is missing, truncated or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except OSError as error:
        raise UserError(f"{path} cannot be read: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON (truncated or corrupt?): {error}") from None


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """``read_json`` of a file that must hold one JSON object (a list or a number there is refused, named)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in chunks: model weights need not fit in memory."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def record_files(directory: str | os.PathLike) -> Path:
    """Write ``FILES_RECORD`` in ``directory``: the size and sha256 of every file under it, for ``check_files``.

    A file cut or changed after its step finished would otherwise be read as if
    it were the step's output (half a training set trains on half the data).
    """
    directory = Path(directory)
    files = {path.relative_to(directory).as_posix(): {"bytes": path.stat().st_size, "sha256": file_digest(path)}
             for path in sorted(directory.rglob("*")) if path.is_file() and path.name != FILES_RECORD}
    return write_json_atomic(directory / FILES_RECORD, files)


def check_files(directory: str | os.PathLike, remedy: str, names: Iterable[str] | None = None) -> None:
    """Compare files under ``directory`` (those in ``names``, else every one) with its ``FILES_RECORD``.

    Raises a UserError naming the first file that is missing or differs, followed by
    ``remedy``. A directory without a record (written before records were kept) passes.
    """
    directory = Path(directory)
    if not (directory / FILES_RECORD).exists():
        return
    recorded = read_json(directory / FILES_RECORD)
    for name in recorded if names is None else names:
        path, expected = directory / name, recorded.get(name)
        if expected is None:
            continue
        if not path.is_file():
            problem = "is missing"
        elif path.stat().st_size != expected["bytes"]:
            problem = f"has {path.stat().st_size} bytes where {expected['bytes']} were written"
        elif file_digest(path) != expected["sha256"]:
            problem = "differs from what was written (sha256)"
        else:
            continue
        raise UserError(f"{path} {problem}: it was damaged or changed after it was made; {remedy}")


def read_jsonl_tolerant(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of an append-only log; a torn last line is dropped, a bad line elsewhere is an error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    return parse_jsonl_tolerant(path.read_text(errors="replace"), path)


def parse_jsonl_tolerant(text: str, path: str | os.PathLike) -> list[dict[str, Any]]:
    """``read_jsonl_tolerant`` of text already read (``path`` names it in errors)."""
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number >= len(lines) - 1:  # the last line, torn by a kill while it was written
                break
            raise UserError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return rows


class StepBusy(Exception):
    """Another process is making this step (raised instead of waiting, inside ``busy_steps_raise``)."""


_WAIT_FOR_STEPS = contextvars.ContextVar("wait_for_steps", default=True)


@contextlib.contextmanager
def busy_steps_raise() -> Iterator[None]:
    """Inside, a step another process holds raises ``StepBusy`` at once, so the caller can do other work."""
    token = _WAIT_FOR_STEPS.set(False)
    try:
        yield
    finally:
        _WAIT_FOR_STEPS.reset(token)


@contextlib.contextmanager
def step_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on one output for as long as it is checked and made.

    Two processes of one run (``jobs: 2``, or a second ``reflectrl run`` on the
    same directory) that need the same step: the second waits (or, inside
    ``busy_steps_raise``, raises ``StepBusy``), then finds it done, instead of
    making it again and removing the first one's temporary directory under it.
    The lock is the kernel's (``flock``): a killed holder releases it.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if _WAIT_FOR_STEPS.get() else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StepBusy(str(out)) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it takes the place of ``final``.

    A kill while filling leaves only the temporary directory (removed by the next
    attempt). POSIX cannot swap two directories in one rename, so an existing
    ``final`` is first moved into a ``.old-`` holder beside it; a kill before the
    new one is renamed in leaves it there, and the next attempt puts it back
    before anything else. ``final`` is the old complete directory or the new one,
    never lost.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for holder in final.parent.glob(f".old-{final.name}-*"):
        if (holder / final.name).exists() and not final.exists():
            os.replace(holder / final.name, final)
        shutil.rmtree(holder, ignore_errors=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        tmp.chmod(default_mode(directory=True))
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        holder = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".old-{final.name}-"))
        os.replace(final, holder / final.name)
        os.replace(tmp, final)
        shutil.rmtree(holder, ignore_errors=True)
    else:
        os.replace(tmp, final)
