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

Also skipped, each recorded in ``DirectoryTree.skipped`` (shown path ->
reason) and reported in one warning per snapshot:

* names that could not be one unambiguous line of the observation and the
  action list (``name_problem``): a control, separator, format or undecodable
  character (newline, tab, U+2028, bytes that are not UTF-8), or leading,
  trailing or repeated spaces. Every other character, a backslash included, is
  an ordinary name character shown as it is;
* directories more than ``MAX_WALK_DEPTH`` levels below the root (the walk
  keeps one open directory per level), with everything under them;
* entries that cannot be opened or that changed while the scan read them.

Why it is a real snapshot: the walk opens every directory and file relative to
its parent's descriptor, never following a link (``O_NOFOLLOW``), checks that
what it opened is the entry it listed (device and inode), and reads each file
once, at most ``max_file_bytes + 1`` bytes. Each file keeps only its display
preview (the first ``preview_lines`` lines / ``preview_chars`` characters,
then ``... [truncated: N more lines]``), a Python file also its outline
when the snapshot is taken with ``outlines=True`` (``outline.code_outline``),
and a digest, so the snapshot stays
small and episodes never touch the disk. ``read_text`` (the task generator's
full text) re-opens the file the same way and returns it only if device,
inode, size and digest are the snapshot's; a tree changed afterwards (a file
swapped for a link, a directory moved) raises ``SnapshotChangedError`` and
nothing outside the snapshot is read. Hard links are ordinary files: one whose
other name lies outside the tree is read like any file of the tree.
Needs a POSIX system (``dir_fd``, ``O_NOFOLLOW``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from reflectrl.envs.autoexplore.outline import code_outline

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
#: files up to this size are parsed: a Python file's outline here, questions in ``tasks`` (larger ones show their first lines)
MAX_PARSE_BYTES = 400_000
#: what ``cat`` shows of a file: its first lines, or a Python file's outline of definitions
CAT_VIEWS: tuple[str, ...] = ("head", "outline")
#: directories deeper than this below the root are skipped: the walk holds one open descriptor per level
MAX_WALK_DEPTH = 100

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: opening a FIFO swapped in after the listing must not hang (it is then refused as not a file)
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_SHOWN_SKIPS = 5


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be shown as one unambiguous line of an action list, or None when it can.

    A line break would forge lines of the observation and of the action list, and
    the action parser collapses whitespace, so ``a  b`` would read as ``a b``.
    """
    if not name.isprintable():
        return "name has a control, separator, format or undecodable character"
    if name != name.strip(" ") or "  " in name:
        return "name has leading, trailing or repeated spaces"
    return None


def display_name(name: str) -> str:
    """``name`` printable on one line: as it is when it can be, else with backslash escapes (``\\n``, ``\\\\``)."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in name)


class PathOutsideRootError(ValueError):
    """A path that is absolute or climbs above the tree's root."""


class SnapshotChangedError(ValueError):
    """A file of the snapshot that is no longer, on disk, the file the snapshot read."""


@dataclass(frozen=True)
class DirListing:
    """The entries of one directory, sorted by name: subdirectory names and file names."""

    dirs: tuple[str, ...]
    files: tuple[str, ...]


@dataclass(frozen=True)
class FileEntry:
    """One file of the snapshot: kind, size in bytes, line count, display preview, and what identifies it on disk."""

    kind: str
    size: int
    lines: int
    preview: str
    device: int
    inode: int
    digest: bytes
    #: a Python file's outline (``outline.code_outline``) within the preview's budget; None for other files
    outline: str | None = None


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
    """``path`` as a normalized relative POSIX path (``""`` for the root); raises if it leaves the root.

    A backslash is an ordinary name character (POSIX names may hold one); only ``/`` separates.
    """
    if not isinstance(path, str):
        raise TypeError(f"a tree path is a str, got {type(path).__name__}")
    if "\0" in path:
        raise PathOutsideRootError(f"path {path!r} contains a NUL character")
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


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_bounded(fd: int, limit: int, expected_size: int) -> bytes:
    """At most ``limit`` bytes of the open file ``fd``, in as few reads as its expected size allows."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(fd, min(limit - total, max(expected_size - total + 1, 1 << 16)))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class _OpenDir:
    """A directory being walked: its descriptor, its sorted entry names and what was kept of them so far."""

    path: str
    fd: int
    names: list[str]
    dirs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    position: int = 0


class DirectoryTree:
    """An immutable snapshot of the eligible files under ``root`` (see the module docstring).

    ``include``: relative paths (dirs or files); when given, only those and what
    lies under them are kept (plus the directories leading to them), which is
    how a huge package is restricted to a few subtrees. ``exclude``: relative
    paths left out with everything under them. ``max_depth``: files deeper than
    this many directories below the root are left out (``None``: no limit).
    ``outlines``: also keep each Python file's outline (``preview(path, "outline")``);
    parsing every file costs seconds on a large corpus, so only snapshots for that view do.
    ``skipped``: entries left out for a reason worth knowing (shown path -> reason).
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
        outlines: bool = False,
    ) -> None:
        resolved = Path(root).expanduser().resolve()
        if not resolved.is_dir():
            raise NotADirectoryError(f"tree root {str(root)!r} is not a directory")
        if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0):
            raise ValueError(f"max_depth must be None or an int >= 0, got {max_depth!r}")
        self.root = resolved
        self.name = display_name(resolved.name or str(resolved))
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
        self.outlines = outlines
        self.skipped: dict[str, str] = {}
        self._dirs: dict[str, DirListing] = {}
        self._files: dict[str, FileEntry] = {}
        self._root_stat = self._scan()
        if self.skipped:
            warnings.warn(self._skipped_summary(), stacklevel=2)

    def _skipped_summary(self) -> str:
        """One line naming the first skipped entries and why (names are shown escaped)."""
        shown = "; ".join(f"{path} ({reason})" for path, reason in list(self.skipped.items())[:_SHOWN_SKIPS])
        more = f"; and {len(self.skipped) - _SHOWN_SKIPS} more" if len(self.skipped) > _SHOWN_SKIPS else ""
        noun = "entry" if len(self.skipped) == 1 else "entries"
        return (f"snapshot of {display_name(str(self.root))}: skipped {len(self.skipped)} {noun} "
                f"(DirectoryTree.skipped): {shown}{more}")

    def _wanted(self, path: str, is_dir: bool) -> bool:
        if any(_under(path, prefix) for prefix in self.exclude):
            return False
        if not self.include:
            return True
        if any(_under(path, prefix) for prefix in self.include):
            return True
        return is_dir and any(prefix.startswith(path + "/") for prefix in self.include)

    def _skip(self, path: str, reason: str) -> None:
        self.skipped[display_name(path)] = reason

    def _scan(self) -> os.stat_result:
        """Walk the tree depth-first without recursion, one open descriptor per level; return the root's stat."""
        root_fd = os.open(self.root, _OPEN_DIR)
        root_stat = os.fstat(root_fd)
        stack = [_OpenDir("", root_fd, [])]
        try:
            stack[0].names = sorted(os.listdir(root_fd))
            while stack:
                current = stack[-1]
                if current.position < len(current.names):
                    name = current.names[current.position]
                    current.position += 1
                    opened = self._visit(current, name)
                    if opened is not None:
                        stack.append(opened)
                    continue
                stack.pop()
                os.close(current.fd)
                if current.dirs or current.files or not current.path:
                    self._dirs[current.path] = DirListing(tuple(current.dirs), tuple(current.files))
                    if stack:
                        stack[-1].dirs.append(posixpath.basename(current.path))
        finally:
            for still_open in stack:
                os.close(still_open.fd)
        return root_stat

    def _visit(self, parent: _OpenDir, name: str) -> _OpenDir | None:
        """Record the file ``name`` of ``parent``, or open the directory ``name`` to walk next (returned)."""
        if name.startswith("."):
            return None
        path = _join(parent.path, name)
        try:
            info = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
        except OSError as error:
            self._skip(path, f"cannot be read: {error.strerror}")
            return None
        if stat.S_ISDIR(info.st_mode):
            return self._open_dir(parent, name, path, info)
        if stat.S_ISREG(info.st_mode) and self._wanted(path, False):
            kind = SUFFIX_KIND.get(posixpath.splitext(name)[1].lower())
            if kind is None or info.st_size > self.max_file_bytes:
                return None
            problem = name_problem(name)
            if problem:
                self._skip(path, problem)
                return None
            entry = self._load_file(parent.fd, name, path, kind, info)
            if entry is not None:
                self._files[path] = entry
                parent.files.append(name)
        return None

    def _open_dir(self, parent: _OpenDir, name: str, path: str, info: os.stat_result) -> _OpenDir | None:
        if name in SKIPPED_DIR_NAMES or not self._wanted(path, True):
            return None
        depth = _depth_of_dir(path)
        if self.max_depth is not None and depth > self.max_depth:
            return None
        problem = name_problem(name)
        if depth > MAX_WALK_DEPTH:
            problem = (f"deeper than {MAX_WALK_DEPTH} directories below the root (the walk's limit); "
                       "nothing under it is listed")
        if problem:
            self._skip(path, problem)
            return None
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=parent.fd)
        except OSError as error:
            self._skip(path, f"cannot be opened: {error.strerror}")
            return None
        try:
            if not _same_inode(os.fstat(fd), info):
                self._skip(path, "changed while the snapshot was taken")
                os.close(fd)
                return None
            return _OpenDir(path, fd, sorted(os.listdir(fd)))
        except OSError as error:
            os.close(fd)
            self._skip(path, f"cannot be listed: {error.strerror}")
            return None

    def _load_file(self, dir_fd: int, name: str, path: str, kind: str, info: os.stat_result) -> FileEntry | None:
        """Read the listed file once, through no link, and keep its preview; None if it is not eligible text."""
        try:
            fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
        except OSError as error:
            self._skip(path, f"cannot be opened: {error.strerror}")
            return None
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or not _same_inode(opened, info):
                self._skip(path, "changed while the snapshot was taken")
                return None
            data = _read_bounded(fd, self.max_file_bytes + 1, opened.st_size)
        except OSError as error:
            self._skip(path, f"cannot be read: {error.strerror}")
            return None
        finally:
            os.close(fd)
        text = self._decode(data) if len(data) <= self.max_file_bytes else None
        if text is None:
            return None
        wants_outline = self.outlines and kind == "code" and len(data) <= MAX_PARSE_BYTES
        outline = code_outline(text, self.preview_chars) if wants_outline else None
        return FileEntry(kind, len(data), len(text.splitlines()),
                         preview_text(text, self.preview_lines, self.preview_chars),
                         opened.st_dev, opened.st_ino, _digest(data), outline)

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

    def preview(self, path: str, view: str = "head") -> str:
        """What ``cat`` shows: the file's first lines, or with ``view="outline"`` a Python file's outline.

        A file with no outline (not Python, not parseable, defining nothing) shows its first lines in either view.
        """
        if view not in CAT_VIEWS:
            raise ValueError(f"unknown cat view {view!r}; choose one of {', '.join(CAT_VIEWS)}")
        if view == "outline" and not self.outlines:
            raise ValueError(f"the snapshot of {self.root} keeps no outlines; take it with outlines=True")
        entry = self.file(path)
        return entry.outline if view == "outline" and entry.outline is not None else entry.preview

    def read_text(self, path: str) -> str:
        """The file's full text as the snapshot read it (for the task generator, not per step).

        Re-opened from the root through no link; raises ``SnapshotChangedError`` unless it is
        still the same file (device, inode) with the same content (size, digest).
        """
        entry = self.file(path)
        *dirs, name = path.split("/")
        try:
            fd = os.open(self.root, _OPEN_DIR)
            try:
                if not _same_inode(os.fstat(fd), self._root_stat):
                    raise SnapshotChangedError(f"{path!r} under {self.root} changed since the snapshot: "
                                               "the root is another directory now")
                for part in dirs:
                    child = os.open(part, _OPEN_DIR, dir_fd=fd)
                    os.close(fd)
                    fd = child
                child = os.open(name, _OPEN_FILE, dir_fd=fd)
                os.close(fd)
                fd = child
                opened = os.fstat(fd)
                same = stat.S_ISREG(opened.st_mode) and (opened.st_dev, opened.st_ino) == (entry.device, entry.inode)
                data = _read_bounded(fd, entry.size + 1, entry.size) if same else b""
            finally:
                os.close(fd)
        except OSError as error:
            raise SnapshotChangedError(f"{path!r} under {self.root} changed since the snapshot: "
                                       f"{error.strerror} (links are never followed)") from None
        if not same:
            raise SnapshotChangedError(f"{path!r} under {self.root} changed since the snapshot: it is another file now")
        if len(data) != entry.size or _digest(data) != entry.digest:
            raise SnapshotChangedError(f"{path!r} under {self.root} changed since the snapshot: its content differs")
        return data.decode("utf-8")

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
def _cached_tree(root: str, include: tuple[str, ...], exclude: tuple[str, ...], max_depth: int | None,
                 outlines: bool) -> DirectoryTree:
    return DirectoryTree(root, include=include, exclude=exclude, max_depth=max_depth, outlines=outlines)


def load_tree(
    root: str | os.PathLike[str],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_depth: int | None = None,
    outlines: bool = False,
) -> DirectoryTree:
    """The process-wide shared snapshot of ``root`` with these options (built on first use)."""
    resolved = str(Path(root).expanduser().resolve())
    return _cached_tree(resolved, tuple(sorted(include)), tuple(sorted(exclude)), max_depth, outlines)
