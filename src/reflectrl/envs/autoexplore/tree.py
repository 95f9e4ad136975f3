"""A read-only, in-memory snapshot of a directory tree for AutoExplore.

The original AutoExplore copied the repository into a sandbox for every
episode and ran real shell commands in it. Here the tree is scanned ONCE per
process (``load_tree`` caches it by root and options), every episode reads the
same immutable snapshot, and nothing is ever written or copied. Paths are
relative POSIX strings (``""`` is the root); no lookup can leave the root.

What the snapshot holds:

* files whose suffix is in ``SUFFIX_KIND`` (code ``.py``; data ``.csv``,
  ``.tsv``; text ``.md``, ``.txt``, ``.rst``, ``.json``, ``.yaml``, ``.yml``,
  ``.toml``, ``.cfg``, ``.ini``), up to ``max_file_bytes``, that decode as
  UTF-8 and contain no NUL byte (binary and undecodable files are left out);
* directories that contain at least one such file somewhere below them.

Always skipped: hidden entries (name starting with ``.``), ``__pycache__``,
anything that is not a regular file or directory, and EVERY symbolic link
(followed or not, a link can point outside the root, so none is listed).

Each file keeps only its display preview (the first ``preview_lines`` lines /
``preview_chars`` characters, then ``... [truncated: N more lines]``), so the
snapshot stays small; ``read_text`` re-reads a file's full text (read-only)
for the task generator.
"""

from __future__ import annotations

import functools
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

CODE_SUFFIXES: tuple[str, ...] = (".py",)
DATA_SUFFIXES: tuple[str, ...] = (".csv", ".tsv")
TEXT_SUFFIXES: tuple[str, ...] = (".md", ".txt", ".rst", ".json", ".yaml", ".yml", ".toml", ".cfg", ".ini")
#: suffix -> file kind ("code", "data" or "text"); files with other suffixes are not in a tree
SUFFIX_KIND: dict[str, str] = {
    **{suffix: "code" for suffix in CODE_SUFFIXES},
    **{suffix: "data" for suffix in DATA_SUFFIXES},
    **{suffix: "text" for suffix in TEXT_SUFFIXES},
}
SKIPPED_DIR_NAMES: frozenset[str] = frozenset({"__pycache__"})
DEFAULT_MAX_FILE_BYTES = 2_000_000
DEFAULT_PREVIEW_LINES = 30
DEFAULT_PREVIEW_CHARS = 1500


class PathOutsideRootError(ValueError):
    """A path that is absolute or climbs above the tree's root."""


@dataclass(frozen=True)
class DirListing:
    """The entries of one directory, sorted by name: subdirectory names and file names."""

    dirs: tuple[str, ...]
    files: tuple[str, ...]


@dataclass(frozen=True)
class FileEntry:
    """One file of the snapshot: its kind, size in bytes, line count and display preview."""

    kind: str
    size: int
    lines: int
    preview: str


def preview_text(text: str, max_lines: int = DEFAULT_PREVIEW_LINES, max_chars: int = DEFAULT_PREVIEW_CHARS) -> str:
    """The first lines of ``text`` that fit both limits, with a marker saying how many lines were left out.

    A first line longer than ``max_chars`` is cut; it then counts as not shown.
    """
    if not text:
        return "(empty file)"
    lines = text.splitlines()
    kept: list[str] = []
    used = 0
    cut_line = ""
    for line in lines[:max_lines]:
        if used + len(line) > max_chars:
            if not kept:
                cut_line = line[:max_chars]
            break
        kept.append(line)
        used += len(line) + 1
    remaining = len(lines) - len(kept)
    shown = "\n".join(kept + ([cut_line] if cut_line else []))
    if remaining:
        noun = "line" if remaining == 1 else "lines"
        shown += f"\n... [truncated: {remaining} more {noun}]"
    return shown


def normalize_relative(path: str) -> str:
    """``path`` as a normalized relative POSIX path (``""`` for the root); raises if it leaves the root."""
    if not isinstance(path, str):
        raise TypeError(f"a tree path is a str, got {type(path).__name__}")
    if "\\" in path or "\0" in path:
        raise PathOutsideRootError(f"path {path!r} contains a backslash or NUL; use relative POSIX paths")
    if path.startswith("/"):
        raise PathOutsideRootError(f"path {path!r} is absolute; tree paths are relative to the root")
    normalized = posixpath.normpath(path) if path else "."
    if normalized == ".":
        return ""
    if normalized == ".." or normalized.startswith("../"):
        raise PathOutsideRootError(f"path {path!r} leaves the root")
    return normalized


def _depth_of_dir(path: str) -> int:
    return 0 if not path else path.count("/") + 1


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class DirectoryTree:
    """An immutable snapshot of the eligible files under ``root`` (see the module docstring).

    ``include``: relative paths (dirs or files); when given, only those and what
    lies under them are kept (plus the directories leading to them), which is
    how a huge package is restricted to a few subtrees. ``exclude``: relative
    paths left out with everything under them. ``max_depth``: files deeper than
    this many directories below the root are left out (``None``: no limit).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        max_depth: int | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        preview_lines: int = DEFAULT_PREVIEW_LINES,
        preview_chars: int = DEFAULT_PREVIEW_CHARS,
    ) -> None:
        resolved = Path(root).expanduser().resolve()
        if not resolved.is_dir():
            raise NotADirectoryError(f"tree root {str(root)!r} is not a directory")
        if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0):
            raise ValueError(f"max_depth must be None or an int >= 0, got {max_depth!r}")
        self.root = resolved
        self.name = resolved.name or str(resolved)
        self.include = tuple(sorted({normalize_relative(p) for p in include}))
        self.exclude = tuple(sorted({normalize_relative(p) for p in exclude}))
        if "" in self.include:
            self.include = ()
        for entry in self.include:
            parts = entry.split("/")
            prefixes = [resolved.joinpath(*parts[: i + 1]) for i in range(len(parts))]
            if any(p.is_symlink() for p in prefixes) or not (prefixes[-1].is_dir() or prefixes[-1].is_file()):
                raise FileNotFoundError(f"include path {entry!r} is not a file or directory under {resolved} "
                                        "(symbolic links are never followed)")
        self.max_depth = max_depth
        self.max_file_bytes = max_file_bytes
        self.preview_lines = preview_lines
        self.preview_chars = preview_chars
        self._dirs: dict[str, DirListing] = {}
        self._files: dict[str, FileEntry] = {}
        self._scan("")

    def _wanted(self, path: str, is_dir: bool) -> bool:
        if any(_under(path, prefix) for prefix in self.exclude):
            return False
        if not self.include:
            return True
        if any(_under(path, prefix) for prefix in self.include):
            return True
        return is_dir and any(prefix.startswith(path + "/") for prefix in self.include)

    def _scan(self, path: str) -> bool:
        """Record the directory at ``path`` if anything eligible lies below it; return whether it did."""
        directory = self.root / path if path else self.root
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            return False
        dirs: list[str] = []
        files: list[str] = []
        depth = _depth_of_dir(path)
        for entry in entries:
            name = entry.name
            if name.startswith(".") or entry.is_symlink():
                continue
            child = f"{path}/{name}" if path else name
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                if name in SKIPPED_DIR_NAMES or not self._wanted(child, True):
                    continue
                if self.max_depth is not None and depth + 1 > self.max_depth:
                    continue
                if self._scan(child):
                    dirs.append(name)
            elif stat.S_ISREG(mode) and self._wanted(child, False):
                file_entry = self._load_file(child, entry)
                if file_entry is not None:
                    self._files[child] = file_entry
                    files.append(name)
        if not dirs and not files and path:
            return False
        self._dirs[path] = DirListing(tuple(dirs), tuple(files))
        return True

    def _load_file(self, path: str, entry: os.DirEntry[str]) -> FileEntry | None:
        kind = SUFFIX_KIND.get(posixpath.splitext(entry.name)[1].lower())
        if kind is None:
            return None
        try:
            size = entry.stat(follow_symlinks=False).st_size
            if size > self.max_file_bytes:
                return None
            text = self._decode(Path(entry.path).read_bytes())
        except OSError:
            return None
        if text is None:
            return None
        return FileEntry(kind, size, len(text.splitlines()), preview_text(text, self.preview_lines, self.preview_chars))

    @staticmethod
    def _decode(data: bytes) -> str | None:
        if b"\0" in data:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def resolve(self, path: str, cwd: str = "") -> str:
        """The normalized path of an existing entry, ``path`` taken relative to ``cwd``.

        Raises ``PathOutsideRootError`` for absolute paths or ones climbing above
        the root, ``FileNotFoundError`` for paths not in the snapshot.
        """
        base = normalize_relative(cwd)
        if not isinstance(path, str):
            raise TypeError(f"a tree path is a str, got {type(path).__name__}")
        if path.startswith("/"):
            raise PathOutsideRootError(f"path {path!r} is absolute; tree paths are relative to the root")
        joined = normalize_relative(f"{base}/{path}" if base else path)
        if joined not in self._dirs and joined not in self._files:
            raise FileNotFoundError(f"{path!r} (from {base or '/'!r}) is not in the tree of {self.root}")
        return joined

    def is_dir(self, path: str) -> bool:
        return path in self._dirs

    def is_file(self, path: str) -> bool:
        return path in self._files

    def __contains__(self, path: object) -> bool:
        return path in self._dirs or path in self._files

    def list_dir(self, path: str) -> DirListing:
        """Subdirectories and files of the directory ``path``."""
        try:
            return self._dirs[path]
        except KeyError:
            raise NotADirectoryError(f"{path!r} is not a directory of the tree of {self.root}") from None

    def file(self, path: str) -> FileEntry:
        try:
            return self._files[path]
        except KeyError:
            raise FileNotFoundError(f"{path!r} is not a file of the tree of {self.root}") from None

    def preview(self, path: str) -> str:
        """What ``cat`` shows: the file's truncated display text."""
        return self.file(path).preview

    def read_text(self, path: str) -> str:
        """The file's full text, re-read from disk read-only (for the task generator, not per step)."""
        self.file(path)
        text = self._decode((self.root / path).read_bytes())
        if text is None:
            raise ValueError(f"{path!r} under {self.root} no longer decodes as UTF-8 text")
        return text

    @staticmethod
    def parent(path: str) -> str:
        """The parent directory of ``path``; the root has none."""
        if not path:
            raise PathOutsideRootError("the root has no parent inside the tree")
        return posixpath.dirname(path)

    @staticmethod
    def depth(path: str) -> int:
        """Directories between the root and a file: a file at the root has depth 0."""
        return path.count("/")

    def files(self) -> Iterator[str]:
        """Every file path of the snapshot, sorted."""
        return iter(sorted(self._files))

    def dirs(self) -> Iterator[str]:
        """Every directory path of the snapshot (the root is ``""``), sorted."""
        return iter(sorted(self._dirs))

    @property
    def n_files(self) -> int:
        return len(self._files)

    @property
    def n_dirs(self) -> int:
        return len(self._dirs)

    def __repr__(self) -> str:
        return f"DirectoryTree({str(self.root)!r}, files={self.n_files}, dirs={self.n_dirs})"


@functools.lru_cache(maxsize=None)
def _cached_tree(root: str, include: tuple[str, ...], exclude: tuple[str, ...], max_depth: int | None) -> DirectoryTree:
    return DirectoryTree(root, include=include, exclude=exclude, max_depth=max_depth)


def load_tree(
    root: str | os.PathLike[str],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_depth: int | None = None,
) -> DirectoryTree:
    """The process-wide shared snapshot of ``root`` with these options (built on first use)."""
    resolved = str(Path(root).expanduser().resolve())
    return _cached_tree(resolved, tuple(sorted(include)), tuple(sorted(exclude)), max_depth)
