"""`reflectrl run` end to end on a tiny budget: every arm, the report, and instant re-runs."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import subprocess
import sys
import threading
from multiprocessing.context import SpawnProcess

import pytest

from reflectrl.agent.reflector import Reflector
from reflectrl.cli import main
from reflectrl.config import RunConfig, from_dict
from reflectrl.data.sft_sets import read_set, task_fold
from reflectrl.errors import UserError
from reflectrl.eval.report import ARM_TITLES
from reflectrl.pipeline import REFLECTION_BATCH, reflector_sft, run_pipeline, share_arms, step_base, step_data

from rl_fixtures import TINY, write_recipe

ARMS = {"random", "oracle", "sft", "sft_reflect", "sft_rl", "reflect_rl", "reflect_rl_no_neg", "rl_only"}
METRICS = {"success", "success_ci", "return", "steps", "invalid_rate", "episodes"}


def tiny_recipe(tmp_path, **extra) -> dict:
    return {
        "name": "tiny-run", "seed": 0, "out_dir": str(tmp_path / "runs"),
        "env": {"name": "taxi", "kwargs": {"max_steps": 20}},
        "model": {"name": "tiny", **TINY},
        "reflection_tokens": 8,
        "data": {"episodes": 12, "random_action_prob": 0.3},
        "sft": {"max_steps": 3, "batch_size": 16, "max_length": 512},
        "curriculum": {"levels": [{"stage": "pickup"}, {"stage": "full"}]},
        "rl": {"iterations": 2, "batch_episodes": 4, "checkpoint_every": 1},
        "eval": {"episodes": 4, "levels": [{"stage": "pickup"}, {"stage": "full"}]},
        **extra,
    }


def episodes_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_writes_every_arm_and_skips_finished_steps(tmp_path):
    """In two processes (``jobs: 2``): the no-reflection arms in the second."""
    recipe = write_recipe(tmp_path / "recipe.yaml", {
        **tiny_recipe(tmp_path, ablations="full", jobs=2, threads=1),
        "eval": {"episodes": 4, "levels": [{"stage": "pickup"}, {"stage": "full"}], "sampled_repeats": 2},
        "rl": {"iterations": 2, "batch_episodes": 4, "checkpoint_every": 1, "eval_every": 1, "eval_episodes": 3},
    })
    command = [sys.executable, "-m", "reflectrl.cli", "run", "--config", str(recipe)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "runs" / "tiny-run"
    results = json.loads((run / "eval.json").read_text())
    assert set(results) == ARMS
    for arm, metrics in results.items():
        assert METRICS <= set(metrics), arm
        assert metrics["episodes"] == 8
        lo, hi = metrics["success_ci"]
        assert 0 <= lo <= metrics["success"] <= hi <= 1
        assert {"stage=pickup", "stage=full"} <= set(metrics["levels"])
        assert metrics["sampled"]["episodes"] == 16  # 4 tasks x 2 repeats x 2 levels
    assert results["oracle"]["success"] == 1.0
    report = (run / "report.md").read_text()
    assert "| Reflect-RL |" in report and "sampled success [95% CI]" in report and "58% (dropoff)" in report
    assert (run / "training_curves.png").stat().st_size > 1000
    assert "| Reflect-RL |" in first.stdout
    # time and memory of every step are on disk beside its output, for run.md's per-step figures
    for arm in results:
        usage = json.loads((run / "eval" / arm / "usage.json").read_text())
        assert usage["seconds"] >= 0 and usage["peak_rss_gb"] > 0
    rl_rows = episodes_of(run / "rl" / "reflect_rl" / "metrics.jsonl")
    # the starting policy's validation (row 0), then every iteration's training row with its validation
    assert [row["iteration"] for row in rl_rows] == [0, 1, 2]
    assert all(row["peak_rss_gb"] > 0 for row in rl_rows[1:])
    assert all(set(row["val_levels"]) == {"stage=pickup", "stage=full"} and 0 <= row["val_success"] <= 1
               for row in rl_rows)
    # every evaluated episode is kept, one JSON line each, greedy and sampled apart
    for arm, metrics in results.items():
        records = episodes_of(run / "eval" / arm / "episodes.jsonl")
        assert len(records) == metrics["episodes"]
        assert sum(r["success"] for r in records) == round(metrics["success"] * metrics["episodes"])
        assert len(episodes_of(run / "eval" / arm / "episodes_sampled.jsonl")) == metrics["sampled"]["episodes"]
        for record in records:
            assert record["steps"] == len(record["transcript"]) >= 1
            assert (record["outcome"] == "success") == record["success"]
    step = episodes_of(run / "eval" / "reflect_rl" / "episodes.jsonl")[0]["transcript"][0]
    assert step["reflection"] is not None and step["actions"][step["action"]] == step["action_text"]
    # evaluation judged every step: the env's good actions, and the action the reflection names (if any)
    assert step["good"] and all(0 <= i < len(step["actions"]) for i in step["good"]) and "named" in step
    unreflected = episodes_of(run / "eval" / "sft" / "episodes.jsonl")[0]["transcript"][0]
    assert unreflected["good"] and "named" not in unreflected
    assert "## Reflector or policy" in report and "| policy takes the named action |" in report
    assert 0 < step["probability"] <= 1 and "Task" in step["observation"] or "map" in step["observation"].lower()
    assert "## How episodes end" in report
    shown = subprocess.run([sys.executable, "-m", "reflectrl.cli", "show", str(run), "--arm", "reflect_rl",
                            "--episode", "2"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "=== episode 2" in shown.stdout and "reflection:" in shown.stdout and ">>> " in shown.stdout
    assert "names: " in shown.stdout
    missing = subprocess.run([sys.executable, "-m", "reflectrl.cli", "show", str(run), "--arm", "nosuch"],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "evaluated arms: " in missing.stderr
    no_level = subprocess.run([sys.executable, "-m", "reflectrl.cli", "show", str(run), "--arm", "sft", "--level",
                               "stage=lunch"], capture_output=True, text=True)
    assert no_level.returncode == 2 and "--level 'stage=lunch': none of the episodes" in no_level.stderr
    assert "they have: stage=" in no_level.stderr
    # Reflect-RL against each arm task by task, in the report and from the CLI, counted from the episodes
    assert "## Reflect-RL against each arm, task by task" in report
    compared = subprocess.run([sys.executable, "-m", "reflectrl.cli", "compare", str(run)],
                              capture_output=True, text=True)
    assert compared.returncode == 0, compared.stderr
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in compared.stdout.splitlines()
            if line.startswith("| ") and "tasks" not in line}
    wins = {arm: {json.dumps([r["level"], r["task"]]) for r in episodes_of(run / "eval" / arm / "episodes.jsonl")
                  if r["success"]} for arm in results}
    assert set(rows) == {ARM_TITLES[arm] for arm in results if arm != "reflect_rl"}
    for arm in results:
        if arm != "reflect_rl":
            _, tasks, both, only_a, only_b, neither, *_ = rows[ARM_TITLES[arm]]
            assert int(tasks) == int(both) + int(only_a) + int(only_b) + int(neither) == 8
            assert (int(both), int(only_a), int(only_b)) == (len(wins["reflect_rl"] & wins[arm]),
                                                           len(wins["reflect_rl"] - wins[arm]),
                                                           len(wins[arm] - wins["reflect_rl"]))

    # each step once, though the second process finds data and base models done and the first its arms
    steps = json.loads((run / "run.json").read_text())["steps"]
    names = [step["name"] for step in steps]
    assert len(names) == len(set(names)) and not any(step["reused"] for step in steps)
    assert {"data", "sft reflector", "rl reflect_rl", "eval sft_rl"} <= set(names)

    made = {path: path.stat().st_mtime_ns for step in ("data", "base", "reflector", "policy", "rl", "eval")
            for path in (run / step).rglob("*") if path.is_file()}
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    # every finished step was skipped: nothing it made was written again
    assert {path: path.stat().st_mtime_ns for path in made} == made
    assert json.loads((run / "eval.json").read_text()) == results


def test_bad_recipe_is_a_clear_error(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", {"rl": {"iterations": "many"}})
    assert main(["run", "--config", str(recipe)]) == 2
    assert "rl.iterations" in capsys.readouterr().err


def test_step_by_step_sft_starts_where_run_does_and_a_changed_recipe_is_not_reused(tmp_path, capsys):
    """`reflectrl sft` honours policy_init like `reflectrl run`; a step made from other values is refused."""
    values = {**tiny_recipe(tmp_path), "policy_init": "reflector",
              "reflector_sft": {"max_steps": 3, "batch_size": 16, "max_length": 512}}
    recipe = write_recipe(tmp_path / "recipe.yaml", values)
    command = [sys.executable, "-m", "reflectrl.cli", "sft", "--config", str(recipe), "--set-name", "policy"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "tiny-run"
    assert json.loads((run / "policy" / "sft_metrics.json").read_text())["init"] == str(run / "reflector")
    # Taxi's teacher reflections run to ~30 tokens: a budget of 8 cuts them, and the user is told
    assert "teacher reflections are longer than reflection_tokens=8" in done.stderr

    # refusals are checked in this process: the same `main`, without a second start of torch
    assert main([*command[3:], "--set", "sft.lr=0.01"]) == 2
    refused = capsys.readouterr().err
    assert "changed: sft.lr" in refused and str(run / "policy") in refused


def test_the_policy_can_learn_from_reflections_of_a_reflector_that_never_trained_on_the_task(tmp_path, capsys):
    """``sft.reflections: reflector``: each training state's reflection is what the reflector trained
    without that state's fold of tasks writes, greedy, as RL and evaluation read; the teacher's stays beside."""
    values = tiny_recipe(tmp_path, jobs=2, threads=1, sft={"max_steps": 3, "batch_size": 16, "max_length": 512,
                                                           "reflections": "reflector"})
    recipe = write_recipe(tmp_path / "recipe.yaml", values)
    cli = [sys.executable, "-m", "reflectrl.cli"]
    done = subprocess.run(cli + ["run", "--config", str(recipe)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "tiny-run"
    assert json.loads((run / "eval.json").read_text())["reflect_rl"]["episodes"] == 8
    teacher_rows = read_set(run / "data", "train", "policy")
    rows = read_set(run / "reflections", "train", "policy")
    assert [row["state"] for row in rows] == [row["state"] for row in teacher_rows]
    assert [row["teacher_reflection"] for row in rows] == [row["reflection"] for row in teacher_rows]
    assert all(row["prompt"].count(row["reflection"]) == 1 for row in rows if row["reflection"])
    assert len(read_set(run / "reflections", "val", "policy")) == len(read_set(run / "data", "val", "policy"))
    for fold in (0, 1):
        in_fold = [row for row in rows if task_fold(row) == fold]
        assert in_fold and len(in_fold) < len(rows)
        trained_on = json.loads((run / f"reflector_fold{fold}" / "sft_metrics.json").read_text())["rows"]
        assert trained_on == sum(task_fold(row) != fold for row in read_set(run / "data", "train", "reflection"))
        writer = Reflector.from_pretrained(run / f"reflector_fold{fold}", max_new_tokens=8, max_length=512)
        batch = in_fold[:REFLECTION_BATCH]
        assert [text or "" for text in writer.reflect([row["state"] for row in batch])] == \
            [row["reflection"] for row in batch]
    fingerprint = json.loads((run / "policy" / "fingerprint.json").read_text())
    assert fingerprint["parts"]["data"] == json.loads((run / "reflections" / "fingerprint.json").read_text())["hash"]

    # the teacher's reflections are another policy: the folder made from the reflector's is not reused
    assert main(["sft", "--config", str(recipe), "--set-name", "policy", "--set", "sft.reflections=teacher"]) == 2
    assert "changed: data" in capsys.readouterr().err
    with pytest.raises(UserError, match="basic arms only"):
        from_dict(RunConfig, {**values, "ablations": "full"})


def test_a_run_that_scores_actions_by_text_and_a_switch_of_scoring_is_not_reused(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_recipe(tmp_path, action_scoring="text"))
    command = [sys.executable, "-m", "reflectrl.cli", "run", "--config", str(recipe)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "runs" / "tiny-run" / "eval.json").read_text())
    assert set(results) == {"random", "oracle", "sft", "sft_reflect", "sft_rl", "reflect_rl"}
    assert results["oracle"]["success"] == 1.0
    assert all(metrics["episodes"] == 8 for metrics in results.values())
    assert main([*command[3:], "--set", "action_scoring=id"]) == 2
    assert "action_scoring" in capsys.readouterr().err


def test_a_refused_rerun_leaves_config_yaml_describing_the_outputs(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_recipe(tmp_path))
    assert main(["data", "--config", str(recipe)]) == 0
    assert main(["run", "--config", str(recipe), "--set", "data.episodes=13"]) == 2
    assert "changed: data.episodes)" in capsys.readouterr().err
    # data/ was made with 12 episodes: no config.yaml may say 13 (`reflectrl data` writes none)
    run = tmp_path / "runs" / "tiny-run"
    assert sorted(p.name for p in run.iterdir()) == ["data", "steps.jsonl"]


def test_two_jobs_make_what_both_processes_read_before_the_second_starts(tmp_path, monkeypatch, one_thread):
    """With ``policy_init: reflector`` the second process's policy SFT starts from the reflector too: made
    in both processes at once into one folder, each deleted the other's temporary output."""
    run = tmp_path / "runs" / "tiny-run"

    class Started(Exception):
        """The moment the second process would start: what is in the run directory then."""

    def start(process: SpawnProcess) -> None:
        raise Started(sorted(path.name for path in run.iterdir() if not path.name.startswith(".")))

    monkeypatch.setattr(SpawnProcess, "start", start)
    config = from_dict(RunConfig, tiny_recipe(tmp_path, jobs=2, threads=1, policy_init="reflector"))
    with pytest.raises(Started) as started:
        run_pipeline(config)
    assert started.value.args[0] == ["base", "config.yaml", "data", "reflector", "steps.jsonl"]
    assert (run / "reflector" / "sft_metrics.json").exists()


def test_two_processes_that_need_one_step_make_it_once(tmp_path, one_thread):
    """``jobs: 2``'s second process makes the reflection policy while the first may reach it too: the
    one that comes second waits for the maker's lock, then reuses its output."""
    config = from_dict(RunConfig, tiny_recipe(tmp_path, threads=1))
    step_base(config, step_data(config))
    makers = [multiprocessing.get_context("spawn").Process(target=reflector_sft, args=(config,)) for _ in range(2)]
    for maker in makers:
        maker.start()
    for maker in makers:
        maker.join(timeout=300)
    assert [maker.exitcode for maker in makers] == [0, 0]
    rows = [row for row in episodes_of(config.run_dir / "steps.jsonl") if row["name"] == "sft reflector"]
    assert sorted(row["reused"] for row in rows) == [False, True]
    assert (config.run_dir / "reflector" / "sft_metrics.json").exists()


def test_an_arm_another_process_is_making_waits_while_another_can_go_on(tmp_path, one_thread):
    """``jobs: 2``: while the other process holds an arm's step, this one plays the next arm, then waits."""
    config = from_dict(RunConfig, tiny_recipe(tmp_path, threads=1))
    step_base(config, step_data(config))
    lock_file = config.run_dir / "eval" / ".random.lock"
    lock_file.parent.mkdir(parents=True)
    with open(lock_file, "a") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)  # a second open file: flock refuses this process too
        release = threading.Timer(3.0, fcntl.flock, (other_process, fcntl.LOCK_UN))
        release.start()
        share_arms(config, ["random", "oracle"])
        release.join()
    made = [row["name"] for row in episodes_of(config.run_dir / "steps.jsonl") if row["name"].startswith("eval")]
    assert made == ["eval oracle", "eval random"]
    assert all((config.run_dir / "eval" / arm / "result.json").exists() for arm in ("random", "oracle"))
