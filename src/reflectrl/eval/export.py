"""A finished run's files as ``results/<recipe>/`` keeps them: what a README table quotes, and how it was made.

A run directory holds gigabytes (data, weights, checkpoints); a result to
commit needs only the recipe, the metrics, the report, the curves, ``run.json``
and the episodes (gzipped), plus a ``run.md`` that gives the command and each
step's time and memory. ``export_run`` copies exactly those, so every exported
result is complete in the same way and ``reflectrl show``/``compare`` read it.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any

from reflectrl.errors import UserError
from reflectrl.eval.episodes import EPISODES_FILE, SAMPLED_EPISODES_FILE
from reflectrl.run_files import atomic_file, read_json_object, write_text_atomic

#: copied as they are; the curves only where the recipe ran RL
RUN_FILES = ("config.yaml", "eval.json", "report.md", "run.json")
OPTIONAL_FILES = ("training_curves.png",)
RUN_NOTE = "run.md"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.0f} min"


def _gigabytes(value: float | None) -> str:
    """A peak RSS; none where every step was found done (nothing ran, nothing was measured)."""
    return "-" if value is None else f"{value} GB"


def run_note(run: dict[str, Any], export_command: str) -> str:
    """``run.md``: the commands that made the result and each step's wall time and peak RSS (``run.json``).

    Why a run took what it took (a shared CPU, a resumed run) is for a person to
    add below; a reused step says so, with what making it cost.
    """
    code = f" with the code of commit {run['commit']}" if run.get("commit") else ""
    lines = ["# How this result was made", "", f"    {run['command']}", f"    {export_command}", "",
             f"Seed {run['seed']}{code}; {run['cpu']}, {run['cores']} cores, {run['threads']} thread(s) a process, "
             f"jobs {run['jobs']}. Started {run['start']}, ended {run['end']}: wall time {_minutes(run['wall_s'])}; "
             f"largest step peak RSS {_gigabytes(run['peak_rss_gb'])}.", "",
             "Each step's wall time and its own peak RSS (`run.json`):", "",
             "| step | wall time | peak RSS |", "|---|---|---|"]
    for step in run["steps"]:
        if step["reused"]:
            made = step.get("made")
            cost = f" (made {made['start']}: {made['wall_s']:.0f} s, {_gigabytes(made['peak_rss_gb'])})" if made else ""
            lines.append(f"| {step['name']} | reused{cost} | - |")
        else:
            lines.append(f"| {step['name']} | {step['wall_s']:.0f} s | {_gigabytes(step['peak_rss_gb'])} |")
    return "\n".join(lines) + "\n"


def _episode_files(run_dir: Path, arms: list[str]) -> dict[Path, Path]:
    """Each evaluated arm's transcripts (greedy, and sampled where played), by the name they get in ``out``."""
    found = {}
    for arm in arms:
        if arm in (".", "..") or Path(arm).name != arm:
            raise UserError(f"{run_dir / 'eval.json'}: {arm!r} is not an arm's name; export a run that "
                            f"`reflectrl run` wrote")
        for name in (EPISODES_FILE, SAMPLED_EPISODES_FILE):
            source = run_dir / "eval" / arm / name
            if source.is_file():
                found[Path("eval", arm, f"{name}.gz")] = source
            elif name == EPISODES_FILE:
                raise UserError(f"{source} is missing: every arm in {run_dir / 'eval.json'} keeps its episodes "
                                f"there; the run is not a finished `reflectrl run` (or it was cut)")
    return found


def _write_gzip(source: Path, target: Path) -> None:
    """Gzip without a time stamp or name, so that one transcript always exports to the same bytes."""
    with atomic_file(target, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
            open(source, "rb") as plain:
        shutil.copyfileobj(plain, packed)


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, export_command: str,
               overwrite: bool = False) -> list[Path]:
    """Copy a finished run's committable files into ``out`` and write its ``run.md``; the paths written.

    Everything is checked before the first write: a run that is not finished,
    or an ``out`` that already holds one of these files (a hand-written
    ``run.md`` among them) without ``overwrite``, leaves ``out`` as it was.
    """
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run directory")
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise UserError(f"{run_dir} has no {', '.join(missing)}: export a run that `reflectrl run` finished")
    if run_dir.resolve() == out.resolve():
        raise UserError(f"{out} is the run directory itself; name another folder (results/<recipe>)")
    if run_dir.resolve() in out.resolve().parents:
        raise UserError(f"{out} is inside the run directory {run_dir}, where the copies would mix with the "
                        f"run's own files; name a folder outside it (results/<recipe>)")
    run = read_json_object(run_dir / "run.json")
    needed = ("command", "seed", "cpu", "cores", "threads", "jobs", "start", "end", "wall_s", "peak_rss_gb", "steps")
    absent = [key for key in needed if key not in run]
    if absent:
        raise UserError(f"{run_dir / 'run.json'} lacks {', '.join(absent)}: it is not what `reflectrl run` writes")
    step_keys = {"name", "wall_s", "peak_rss_gb", "reused"}
    if not isinstance(run["steps"], list) or not all(isinstance(s, dict) and step_keys <= set(s) for s in run["steps"]):
        raise UserError(f"{run_dir / 'run.json'}: steps must be a list of {{{', '.join(sorted(step_keys))}}}, as "
                        f"`reflectrl run` writes them")
    copies = {Path(name): run_dir / name for name in (*RUN_FILES, *OPTIONAL_FILES) if (run_dir / name).is_file()}
    packed = _episode_files(run_dir, sorted(read_json_object(run_dir / "eval.json")))
    targets = [*copies, *packed, Path(RUN_NOTE)]
    there = [str(out / name) for name in targets if (out / name).exists()]
    if there and not overwrite:
        raise UserError(f"{out} already holds {', '.join(there)}; export into an empty folder, or pass --overwrite "
                        f"to replace them (a run.md written by hand is lost then)")
    note = run_note(run, export_command)
    written = []
    for name, source in copies.items():
        with atomic_file(out / name, "wb") as copy, open(source, "rb") as original:
            shutil.copyfileobj(original, copy)
        written.append(out / name)
    for name, source in packed.items():
        _write_gzip(source, out / name)
        written.append(out / name)
    written.append(write_text_atomic(out / RUN_NOTE, note))
    return written
