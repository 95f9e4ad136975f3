"""The run seed drives both players' initial weights; a sweep over seeds summarises the spread."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys

import pytest
import torch
import yaml
from rl_fixtures import TINY, cli_in_a_fresh_interpreter, write_recipe

from reflectrl.agent.models import ModelSpec, load_model
from reflectrl.cli import main
from reflectrl.config import RunConfig, from_dict
from reflectrl.pipeline import initial_spec, step_base, step_data
from reflectrl.seeds import summarize_seeds, summary_table


def _recipe(tmp_path, run_seed: int, name: str, **model) -> RunConfig:
    return from_dict(RunConfig, {
        "name": name, "seed": run_seed, "out_dir": str(tmp_path / "runs"),
        "env": {"name": "taxi", "kwargs": {"max_steps": 20}}, "model": {"name": "tiny", **TINY, **model},
        "data": {"episodes": 6}, "sft": {"max_length": 512}, "curriculum": {"levels": [{"stage": "pickup"}]},
    })


def _weights(path) -> dict[str, torch.Tensor]:
    model, _ = load_model(ModelSpec(name=str(path)))
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], part: str = "") -> bool:
    keys = [k for k in a if part in k]
    assert keys
    return all(torch.equal(a[k], b[k]) for k in keys)


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}], ids=["full", "lora"])
def test_the_seed_changes_both_players_initial_weights_and_the_same_seed_gives_them_back(tmp_path, lora):
    extra = {"lora": lora} if lora else {}
    bases = {}
    for seed, name in ((0, "a"), (0, "again"), (1, "b")):
        config = _recipe(tmp_path, seed, name, **extra)
        bases[name] = [_weights(path) for path in step_base(config, step_data(config))]
    part = "lora_A" if lora else "attn"  # LoRA: the adapters are what the seed initialises
    (policy_a, reflector_a), (policy_again, reflector_again), (policy_b, reflector_b) = bases.values()
    assert _same(policy_a, policy_again, part) and _same(reflector_a, reflector_again, part)
    assert not _same(policy_a, policy_b, part) and not _same(reflector_a, reflector_b, part)
    assert not _same(policy_a, reflector_a, part), "the two players must not start from the same weights"


def test_a_model_seed_in_the_recipe_is_used_as_given_whatever_the_run_seed(tmp_path):
    for run_seed in (0, 3):
        pinned = _recipe(tmp_path, run_seed, "pinned", seed=11)
        assert initial_spec(pinned, "policy").seed == initial_spec(pinned, "reflector").seed == 11
    derived = [initial_spec(_recipe(tmp_path, run_seed, "derived"), player).seed
               for run_seed in (0, 3) for player in ("policy", "reflector")]
    assert len(set(derived)) == 4


def test_summary_has_mean_std_and_per_seed_values_of_every_arm_and_level():
    def result(success: float, pickup: float) -> dict:
        return {"success": success, "episodes": 10, "levels": {"stage=pickup": {"success": pickup}}}
    summary = summarize_seeds({2: {"reflect_rl": result(0.5, 0.2)}, 0: {"reflect_rl": result(0.7, 0.4)},
                               1: {"reflect_rl": result(0.6, 0.3)}})
    assert summary["seeds"] == [0, 1, 2]
    arm = summary["arms"]["reflect_rl"]
    assert arm["success"] == {"mean": 0.6, "std": 0.1, "per_seed": [0.7, 0.6, 0.5]}
    assert arm["levels"]["stage=pickup"]["per_seed"] == [0.4, 0.3, 0.2]
    assert arm["pooled"]["successes"] == 18 and arm["pooled"]["episodes"] == 30
    low, high = arm["pooled"]["success_ci"]
    assert low < 0.6 < high and high - low < 0.4  # 30 episodes: narrower than any one seed's 10
    table = summary_table(summary)
    assert f"| Reflect-RL | 60% ± 10 | 70%, 60%, 50% | 18/30 [{100 * low:.0f}%, {100 * high:.0f}%] | 30% ± 10 |" in table


def _evaluated_run(path, recipe: dict, arms: dict[str, list[bool]]) -> None:
    """A run directory as `reflectrl run` leaves it: its recipe, eval.json and each arm's transcripts."""
    (path / "eval").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(recipe))
    (path / "eval.json").write_text(json.dumps({arm: {"success": sum(wins) / len(wins), "episodes": len(wins),
                                                      "levels": {}} for arm, wins in arms.items()}))
    for arm, wins in arms.items():
        (path / "eval" / arm).mkdir()
        (path / "eval" / arm / "episodes.jsonl").write_text("".join(
            json.dumps({"level": "all", "task": task, "seed": task, "success": won, "return": float(won), "steps": 1,
                        "outcome": "success" if won else "horizon", "transcript": [],
                        "final": {"observation": "end"}}) + "\n"
            for task, won in enumerate(wins)))


def test_summarize_runs_made_apart_pools_each_seeds_pairs_and_refuses_runs_of_other_recipes(tmp_path, capsys):
    recipe = {"name": "sweep", "env": {"name": "taxi", "kwargs": {"max_steps": 10}}}
    wins = {0: {"reflect_rl": [True, True, True, False], "sft": [True, False, False, False]},
            1: {"reflect_rl": [True, True, False, False], "sft": [False, True, False, True]}}
    for seed, arms in wins.items():
        _evaluated_run(tmp_path / f"machine-{seed}", {**recipe, "seed": seed, "out_dir": f"elsewhere-{seed}"}, arms)
    runs = [str(tmp_path / f"machine-{seed}") for seed in wins]
    assert main(["summarize", *runs, "--out", str(tmp_path / "summary")]) == 0
    summary = json.loads((tmp_path / "summary" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["arms"]["reflect_rl"]["success"]["per_seed"] == [0.75, 0.5]
    assert summary["arms"]["sft"]["pooled"]["successes"] == 3
    paired = summary["paired_with_reflect_rl"]["sft"]
    assert (paired["0"]["only_a"], paired["1"]["only_a"], paired["1"]["only_b"]) == (2, 1, 1)
    assert {key: paired["all"][key] for key in ("tasks", "both", "only_a", "only_b", "neither")} == \
        {"tasks": 8, "both": 2, "only_a": 3, "only_b": 1, "neither": 2}
    assert "| SFT only (no reflection) | +50 [-1.9, +73.6], p 0.5 | +0 [-49.5, +49.5], p 1 | +25 [" in \
        (tmp_path / "summary" / "summary.md").read_text()

    _evaluated_run(tmp_path / "other", {**recipe, "seed": 2, "env": {"name": "taxi", "kwargs": {"max_steps": 20}}},
                   wins[0])
    _evaluated_run(tmp_path / "again", {**recipe, "seed": 1}, wins[1])
    _evaluated_run(tmp_path / "torn", {**recipe, "seed": 3}, wins[1])
    (tmp_path / "torn" / "eval.json").write_text('{"sft": {"success": 0.5}}')
    for extra, reason in ((str(tmp_path / "other"), "env.kwargs.max_steps differs"),
                          (str(tmp_path / "torn"), "sft is not an arm's result"),
                          (str(tmp_path / "again"), "both seed 1"), (runs[0], "named twice"),
                          (str(tmp_path), "has no config.yaml")):
        assert main(["summarize", *runs, extra, "--out", str(tmp_path / "refused")]) == 2
        assert reason in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_run_with_seeds_runs_each_seed_apart_and_writes_the_summary(tmp_path):
    recipe = write_recipe(tmp_path / "recipe.yaml", {
        "name": "sweep", "out_dir": str(tmp_path / "runs"), "threads": 1,
        "env": {"name": "taxi", "kwargs": {"max_steps": 10}}, "model": {"name": "tiny", **TINY},
        "reflection_tokens": 8, "data": {"episodes": 6},
        "sft": {"max_steps": 2, "batch_size": 16, "max_length": 512},
        "curriculum": {"levels": [{"stage": "pickup"}]},
        "rl": {"iterations": 1, "batch_episodes": 2},
        "eval": {"episodes": 3, "repeat_tasks": False, "levels": [{"stage": "pickup"}]},
    })
    command = [sys.executable, "-m", "reflectrl.cli", "run", "--config", str(recipe), "--seeds", "4,5"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seeds = tmp_path / "runs" / "sweep" / "seeds"
    summary = json.loads((seeds / "summary.json").read_text())
    assert summary["seeds"] == [4, 5]
    assert set(summary["arms"]) == {"random", "oracle", "sft", "sft_reflect", "sft_rl", "reflect_rl"}
    assert summary["arms"]["oracle"]["success"] == {"mean": 1.0, "std": 0.0, "per_seed": [1.0, 1.0]}
    assert "± " in (seeds / "summary.md").read_text() and "60%" not in done.stderr
    # Reflect-RL against each arm task by task in each seed, counted from that seed's transcripts
    paired = summary["paired_with_reflect_rl"]
    assert set(paired) == {"random", "oracle", "sft", "sft_reflect", "sft_rl"}
    for per_seed in paired.values():
        for seed, mine in zip(("4", "5"), summary["arms"]["reflect_rl"]["success"]["per_seed"]):
            counts = per_seed[seed]
            assert counts["tasks"] == counts["both"] + counts["only_a"] + counts["only_b"] + counts["neither"] == 3
            assert counts["both"] + counts["only_a"] == round(3 * mine)
            low, high = counts["difference_ci"]
            assert -1 <= low <= counts["difference"] <= high <= 1 and 0 < counts["p"] <= 1
    assert paired["oracle"]["4"]["only_a"] == 0
    assert "| Reflect-RL minus | seed 4 | seed 5 |" in (seeds / "summary.md").read_text()
    for seed in (4, 5):
        run = json.loads((seeds / f"seed-{seed}" / "run.json").read_text())
        assert run["seed"] == seed and run["wall_s"] > 0 and run["cpu"] and run["threads"] == 1
        names = {step["name"] for step in run["steps"]}
        assert {"data", "base models", "sft reflector", "sft policy", "rl reflect_rl", "eval oracle"} <= names
        assert all(step["peak_rss_gb"] > 0 for step in run["steps"] if not step["reused"])
    # run again: every step is found done, and run.json still says what making each one cost
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((seeds / "seed-4" / "run.json").read_text())
    assert rerun["steps"] and all(step["reused"] for step in rerun["steps"])
    assert all("made" in step for step in rerun["steps"])
    assert sum(step["made"]["wall_s"] for step in rerun["steps"]) > 0
    # the data differ between seeds: the seed reaches the teacher too
    data = [(seeds / f"seed-{seed}" / "data" / "train" / "policy.jsonl").read_text() for seed in (4, 5)]
    assert data[0] != data[1]
    _export_is_complete_and_read_like_the_run(seeds / "seed-5", tmp_path / "results" / "seed-5")


def _export_is_complete_and_read_like_the_run(run, out) -> None:
    """`reflectrl export` of a finished run: what results/ commits, read by `show` and `compare` as the run is."""
    record = json.loads((run / "run.json").read_text())
    assert record["commit"] is None or re.fullmatch(r"[0-9a-f]{12,}(\+dirty)?", record["commit"])
    cli = [sys.executable, "-m", "reflectrl.cli"]
    done = subprocess.run([*cli, "export", str(run), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not any(path.suffix == ".safetensors" or path.name == "data" for path in out.rglob("*"))
    for name in ("config.yaml", "eval.json", "report.md", "run.json", "training_curves.png"):
        assert (out / name).read_bytes() == (run / name).read_bytes(), name
    for arm in json.loads((run / "eval.json").read_text()):
        with gzip.open(out / "eval" / arm / "episodes.jsonl.gz", "rb") as packed:
            assert packed.read() == (run / "eval" / arm / "episodes.jsonl").read_bytes(), arm
    note = (out / "run.md").read_text()
    assert f"    {record['command']}\n    reflectrl export {run} {out}\n" in note
    assert all(f"| {step['name']} | " in note for step in record["steps"]) and "Seed 5" in note
    readings = [subprocess.run([*cli, "compare", str(where)], capture_output=True, text=True) for where in (run, out)]
    assert readings[0].returncode == readings[1].returncode == 0, readings[1].stderr
    assert readings[0].stdout.replace(str(run), str(out)) == readings[1].stdout
    shown = subprocess.run([*cli, "show", str(out), "--episode", "1"], capture_output=True, text=True)
    assert shown.returncode == 0 and "=== episode 1" in shown.stdout, shown.stderr
    # a second export would replace run.md, where a person writes why the run took what it took: refused
    (out / "run.md").write_text(note + "\nThe CPU was shared for 20 minutes.\n")
    again = subprocess.run([*cli, "export", str(run), str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "run.md" in again.stderr and "--overwrite" in again.stderr
    assert (out / "run.md").read_text().endswith("shared for 20 minutes.\n")
    packed = (out / "eval" / "sft" / "episodes.jsonl.gz").read_bytes()
    forced = subprocess.run([*cli, "export", str(run), str(out), "--overwrite"], capture_output=True, text=True)
    assert forced.returncode == 0 and (out / "run.md").read_text() == note.replace(f"{out}\n", f"{out} --overwrite\n", 1)
    assert (out / "eval" / "sft" / "episodes.jsonl.gz").read_bytes() == packed  # same transcript, same bytes
    # reading results loads neither torch nor transformers nor matplotlib: these commands answer at once
    commands = [["show", str(out), "--episode", "1"], ["compare", str(out)], ["export", str(run), str(out.parent / "again")],
                ["summarize", str(run.parent / "seed-4"), str(run), "--out", str(out.parent / "summary")]]
    assert cli_in_a_fresh_interpreter(commands, ("torch", "transformers", "matplotlib")) == ([0, 0, 0, 0], [])
