"""Files of a run directory: written whole or not at all, read back with errors that name the file.

A kill at any moment must leave a run that resumes: every file or directory a
later step (or a resume) reads is written to a temporary sibling and renamed
into place, which POSIX makes atomic. Append-only logs may lose their last,
torn line to a kill; readers drop it instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from reflectrl.errors import UserError


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


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
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON (truncated or corrupt?): {error}") from None


def read_jsonl_tolerant(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of an append-only log; a torn last line is dropped, a bad line elsewhere is an error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").split("\n")
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


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces ``final`` in one rename.

    A kill while filling leaves only the temporary directory (removed by the next
    attempt); ``final`` is either the old complete directory or the new one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-old-"))
        os.replace(final, old / final.name)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
