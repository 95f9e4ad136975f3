"""Run files a user can trust: a replace that a kill cannot lose, changed keys named right, RL checkpoints
that are resumed only when whole and made from the same policy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reflectrl.agent.models import ModelSpec, load_model, save_model
from reflectrl.cli import main
from reflectrl.config import RunConfig, from_dict
from reflectrl.pipeline import StaleOutputError, data_fingerprint, is_done
from reflectrl.errors import UserError
from reflectrl.run_files import atomic_directory, read_json_object, write_json_atomic

from rl_fixtures import TINY, save_tiny, taxi_texts, write_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_a_kill_between_the_two_renames_of_a_replace_keeps_the_old_directory(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "a.txt").write_text("old")
    # a real SIGKILL at the one moment a replace has moved the old directory aside and not yet put the new one
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from reflectrl.run_files import atomic_directory

        rename = os.replace
        def rename_or_die(source, target):
            if Path(source).name.startswith(".tmp-out-"):  # the new directory, about to take the old one's place
                os.kill(os.getpid(), signal.SIGKILL)
            rename(source, target)
        os.replace = rename_or_die
        with atomic_directory({str(final)!r}) as tmp:
            (tmp / "a.txt").write_text("new")
    """)
    killed = subprocess.run([sys.executable, "-c", script], env={"PYTHONPATH": str(ROOT / "src")})
    assert killed.returncode == -signal.SIGKILL
    assert not final.exists()

    with pytest.raises(RuntimeError), atomic_directory(final):
        raise RuntimeError("the next attempt fails too")
    assert (final / "a.txt").read_text() == "old"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (final / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_give_what_open_and_mkdir_would_under_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "eval.json", {"success": 1.0})
        with atomic_directory(tmp_path / "policy") as folder:
            (folder / "weights").write_text("w")
        (tmp_path / "plain").write_text("p")
        (tmp_path / "plain_dir").mkdir()
    finally:
        os.umask(old)
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("eval.json") == mode("plain") == 0o666 & ~umask
    assert mode("policy") == mode("plain_dir") == 0o777 & ~umask


def test_a_json_file_that_is_not_one_object_is_named(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "torn.json").write_text('{"a": ')
    (tmp_path / "folder.json").mkdir()
    assert read_json_object(write_json_atomic(tmp_path / "ok.json", {"a": 1})) == {"a": 1}
    for name, message in [("list.json", "expected a JSON object, got list"), ("torn.json", "is not valid JSON"),
                          ("folder.json", "cannot be read: Is a directory"), ("absent.json", "does not exist")]:
        with pytest.raises(UserError, match=f"{name}.*{message}|{message}.*{name}"):
            read_json_object(tmp_path / name)


def test_the_changed_keys_are_only_those_that_changed(tmp_path):
    """The data step's levels are (level, weight) pairs: read back from disk they must still compare equal."""
    values = {"curriculum": {"levels": [{"stage": "pickup"}, {"stage": "full"}]}, "data": {"episodes": 12}}
    write_json_atomic(tmp_path / "fingerprint.json", data_fingerprint(from_dict(RunConfig, values)))
    (tmp_path / "done.json").write_text("{}")
    changed = from_dict(RunConfig, {**values, "data": {"episodes": 13}})
    with pytest.raises(StaleOutputError, match=r"\(changed: data\.episodes\)"):
        is_done(tmp_path, "done.json", data_fingerprint(changed))


# ----------------------------------------------------------------------------- `reflectrl rl` and its checkpoints
@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> tuple[Path, Path]:
    """Two policies with other weights (the tiny model's weights follow its spec's seed)."""
    where = tmp_path_factory.mktemp("policies")
    model, tokenizer = load_model(ModelSpec(name="tiny", seed=1, **TINY), texts=taxi_texts())
    return save_tiny(where / "first"), save_model(model, tokenizer, where / "other")


def _rl(tmp_path: Path, policy: Path, *extra: str) -> list[str]:
    recipe = write_recipe(tmp_path / "rl.yaml", {
        "seed": 1, "out_dir": str(tmp_path),
        "env": {"name": "rl_fixtures:OnPassengerTaxi", "kwargs": {"stage": "pickup", "max_steps": 4}},
        "model": {"name": "tiny", **TINY}, "sft": {"max_length": 512},
        "rl": {"iterations": 2, "batch_episodes": 4, "checkpoint_every": 1},
    })
    return ["rl", "--config", str(recipe), "--policy", str(policy), "--out", str(tmp_path / "rl"), *extra]


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("checkpoint-*"))


def test_a_copy_beside_the_checkpoints_is_not_taken_for_one(tmp_path, policies):
    assert main(_rl(tmp_path, policies[0])) == 0
    shutil.copytree(tmp_path / "rl" / "checkpoint-2", tmp_path / "rl" / "checkpoint-2.bak")
    assert main(_rl(tmp_path, policies[0])) == 0
    assert _checkpoints(tmp_path / "rl") == ["checkpoint-1", "checkpoint-2", "checkpoint-2.bak"]


def test_a_damaged_checkpoint_is_named_in_one_line(capsys, tmp_path, policies):
    assert main(_rl(tmp_path, policies[0])) == 0
    capsys.readouterr()
    state = tmp_path / "rl" / "checkpoint-2" / "trainer_state.pt"
    state.write_bytes(b"")
    assert f"{state} has 0 bytes where" in _error(capsys, _rl(tmp_path, policies[0]))
    # a checkpoint without the record of its files (an older reflectrl) is named by the loader's failure
    (state.parent / "files.json").unlink()
    assert f"{state} cannot be read" in _error(capsys, _rl(tmp_path, policies[0]))


def test_rl_resumes_only_from_checkpoints_of_its_policy_and_restart_clears_them(capsys, tmp_path, policies):
    first, other = policies
    out = tmp_path / "rl"
    assert main(_rl(tmp_path, first, "--set", "rl.iterations=4")) == 0
    assert _checkpoints(out) == ["checkpoint-3", "checkpoint-4"]
    capsys.readouterr()

    line = _error(capsys, _rl(tmp_path, other, "--set", "rl.iterations=4"))
    assert f"{out / 'checkpoint-4'} was made from {first}, not {other}" in line and "--restart" in line

    # a restart deletes only what RL wrote: a folder of the user's where it would delete is refused, and kept
    (out / "logs" / "notes.txt").write_text("mine")
    line = _error(capsys, _rl(tmp_path, other, "--restart"))
    assert f"a restart would delete {out / 'logs'} in {out}, which this RL did not write" in line
    assert (out / "logs" / "notes.txt").read_text() == "mine" and _checkpoints(out) == ["checkpoint-3", "checkpoint-4"]
    (out / "logs" / "notes.txt").unlink()
    assert main(_rl(tmp_path, other, "--restart")) == 0
    assert _checkpoints(out) == ["checkpoint-1", "checkpoint-2"]
    state = json.loads((out / "checkpoint-2" / "state.json").read_text())
    assert state["made_from"]["policy"]["path"] == str(other)
    # the same policy resumes where its own checkpoints stopped
    assert main(_rl(tmp_path, other, "--set", "rl.iterations=4")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2, 3, 4]
