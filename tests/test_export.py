"""`reflectrl export` refuses what is not a finished run, naming what is wrong, and writes nothing then.

The export of a real finished run (every file, read back by `show` and
`compare`, the refused second export) is checked in test_seeds.py, on the
runs of its seed sweep.
"""

from __future__ import annotations

import json

import pytest

from reflectrl.cli import main
from reflectrl.eval.export import run_note

RUN = {"command": "reflectrl run --config r.yaml", "seed": 3, "commit": "0123456789ab", "cpu": "AMD EPYC",
       "cores": 2, "threads": 1, "jobs": 2, "start": "2026-12-07T03:30:28Z", "end": "2026-12-07T05:57:23Z",
       "wall_s": 8815.0, "peak_rss_gb": 6.2,
       "steps": [{"name": "data", "wall_s": 6.1, "peak_rss_gb": 0.43, "reused": False},
                 {"name": "sft policy", "wall_s": 0.0, "peak_rss_gb": 0.5, "reused": True,
                  "made": {"wall_s": 3492.4, "peak_rss_gb": 4.7, "start": "2026-12-06T10:00:00Z"}}]}


def _finished_run(path, arms=("sft", "reflect_rl")):
    (path / "eval").mkdir(parents=True)
    (path / "config.yaml").write_text("name: r\n")
    (path / "report.md").write_text("# report\n")
    (path / "run.json").write_text(json.dumps(RUN))
    (path / "eval.json").write_text(json.dumps({arm: {"success": 0.5, "episodes": 2} for arm in arms}))
    for arm in arms:
        if "/" not in arm:
            (path / "eval" / arm).mkdir()
            (path / "eval" / arm / "episodes.jsonl").write_text('{"level": "all"}\n')
    return path


def test_the_note_gives_the_commands_the_machine_and_each_step_with_what_a_reused_one_cost():
    note = run_note(RUN, "reflectrl export runs/r results/r")
    assert "    reflectrl run --config r.yaml\n    reflectrl export runs/r results/r\n" in note
    assert "Seed 3 with the code of commit 0123456789ab; AMD EPYC, 2 cores, 1 thread(s) a process, jobs 2." in note
    assert "wall time 147 min; largest step peak RSS 6.2 GB" in note
    assert "| data | 6 s | 0.43 GB |" in note
    assert "| sft policy | reused (made 2026-12-06T10:00:00Z: 3492 s, 4.7 GB) | - |" in note
    # a rerun that found every step done measured no peak
    assert "largest step peak RSS -." in run_note({**RUN, "peak_rss_gb": None}, "reflectrl export runs/r results/r")


@pytest.mark.parametrize("damage, reason", [
    (lambda run: (run / "run.json").unlink(), "has no run.json"),
    (lambda run: (run / "eval" / "sft" / "episodes.jsonl").unlink(), "sft/episodes.jsonl is missing"),
    (lambda run: (run / "run.json").write_text('{"command": "x"'), "is not valid JSON"),
    (lambda run: (run / "run.json").write_text('{"command": "x"}'), "lacks seed, cpu"),
    (lambda run: (run / "eval.json").write_text('{"../../escape": {}}'), "'../../escape' is not an arm's name"),
    (lambda run: (run / "run.json").write_text(json.dumps({**RUN, "steps": [{"name": "data"}]})), "steps must be"),
])
def test_what_is_not_a_finished_run_is_refused_by_name_and_nothing_is_written(tmp_path, capsys, damage, reason):
    run = _finished_run(tmp_path / "run")
    damage(run)
    assert main(["export", str(run), str(tmp_path / "out")]) == 2
    assert reason in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_an_export_into_the_run_itself_or_onto_a_file_is_refused(tmp_path, capsys):
    run = _finished_run(tmp_path / "run")
    assert main(["export", str(run), str(run)]) == 2
    assert "is the run directory itself" in capsys.readouterr().err
    before = sorted(run.rglob("*"))
    assert main(["export", str(run), str(run / "eval")]) == 2
    assert "is inside the run directory" in capsys.readouterr().err and sorted(run.rglob("*")) == before
    (tmp_path / "file").write_text("keep")
    assert main(["export", str(run), str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "file").read_text() == "keep"
    assert main(["export", str(tmp_path / "nosuch"), str(tmp_path / "out")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
