"""The AutoExplore failure counts: on the committed transcripts the README quotes, and on real teacher rows."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

from reflectrl.cli import _key_values, main
from reflectrl.config import load_config, save_config
from reflectrl.data.sft_sets import read_set
from reflectrl.envs.autoexplore.env import last_command
from reflectrl.pipeline import write_set_folder

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "autoexplore_failures.py"


def _run_benchmark(monkeypatch, script: str, args: list[str]) -> None:
    """A benchmark script run as ``python benchmarks/<script> ARGS`` runs it, but in this process: the models
    it loads need torch and transformers, which a new interpreter takes ~10 s to import on a 2-core CPU."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__")


def _count(run: Path, tmp_path: Path) -> dict:
    out = tmp_path / "failures.json"
    subprocess.run([sys.executable, str(SCRIPT), str(run), "--out", str(out)], check=True, cwd=tmp_path,
                   capture_output=True, timeout=300)
    return json.loads(out.read_text())


def test_failures_of_the_committed_own_reflections_run(tmp_path):
    arms = _count(ROOT / "results" / "autoexplore-smollm2-own", tmp_path)["arms"]
    reflect_rl, sft = arms["reflect_rl"], arms["sft"]
    assert (reflect_rl["successes"], reflect_rl["wrong_id"], reflect_rl["wrong_id_right_after_cat_of_it"]) == (51, 49, 46)
    assert 0 < reflect_rl["of_those_reflection_judged_it_not_the_answer"] <= 46
    assert reflect_rl["of_those_policy_took_it"] <= reflect_rl["steps_whose_reflection_names_a_listed_action"] > 0
    assert sft["successes"] == 59 and sft["steps_whose_reflection_names_a_listed_action"] == 0
    assert sft["successes"] + sum(sft["failures_by_outcome"].values()) == sft["episodes"] == 100
    assert arms["oracle"]["successes"] == 100 and arms["oracle"]["good_steps"] is None
    # after every read the oracle identified the file it read, an answer each time
    assert arms["oracle"]["right_after_a_cat"]["answer"] == {"steps": 100, "identified_it": 100,
                                                              "reflection_judged_it_not_the_answer": 0,
                                                              "identified_it_though_judged_not_the_answer": 0}
    after = reflect_rl["right_after_a_cat"]
    assert (after["answer"]["steps"], after["answer"]["identified_it"]) == (51, 51)
    assert (after["not_answer"]["steps"], after["not_answer"]["identified_it"]) == (52, 46)
    assert 0 < after["not_answer"]["reflection_judged_it_not_the_answer"] <= 52
    for kind in after.values():
        assert kind["identified_it_though_judged_not_the_answer"] <= min(kind["identified_it"],
                                                                          kind["reflection_judged_it_not_the_answer"])
    # 46 of the 52 other files identified: at least 46 - (52 - judged) of them after a "not the answer"
    judged = after["not_answer"]["reflection_judged_it_not_the_answer"]
    assert after["not_answer"]["identified_it_though_judged_not_the_answer"] >= 46 - (52 - judged)


def test_more_negatives_show_more_steps_after_a_wrong_file(tmp_path):
    counts = {}
    for negatives in (0, 2):
        name = f"neg{negatives}"
        assert main(["data", "--config", str(ROOT / "configs" / "autoexplore-tiny.yaml"), "--set", "data.episodes=12",
                     "--set", "data.random_action_prob=0", "--set", f"data.negatives_per_episode={negatives}",
                     "--set", f"name={name}", "--set", f"out_dir={tmp_path}"]) == 0
        counts[negatives] = _count(tmp_path / name, tmp_path)["training_rows"]
    assert counts[0]["negative_rows"] == 0 and counts[0]["of_those_negative_rows"] == 0
    # without random steps or negatives the teacher never reads a file it does not then identify
    assert counts[0]["rows_after_a_file_not_identified"] == 0
    assert counts[0]["of_those_right_after_cat_of_it"] <= counts[0]["teacher_identifications"] > 0
    assert counts[2]["negative_rows"] > 0
    assert counts[2]["rows_after_a_file_not_identified"] == counts[2]["of_those_negative_rows"] > 0

    # the policy's reflections judged as the reflector would write them if it always said "not the answer"
    data = tmp_path / "neg2" / "data"
    rows = {split: [{**row, "teacher_reflection": row["reflection"],
                     "reflection": "Reading it wasted a step: it is not the file we need."}
                    for row in read_set(data, split, "policy")] for split in ("train", "val")}
    write_set_folder(tmp_path / "neg2" / "reflections", {split: {"policy": rows[split]} for split in rows}, {})
    judged = _count(tmp_path / "neg2", tmp_path)["reflections_after_a_cat"]["train"]
    assert judged["not_answer"]["rows"] == counts[2]["rows_after_a_file_not_identified"]
    assert judged["answer"]["rows"] == counts[2]["of_those_right_after_cat_of_it"]
    for kind in ("answer", "not_answer"):
        assert judged[kind]["own_judged_it_not_the_answer"] == judged[kind]["rows"]
    # the teacher's judgment tells the two apart, every time
    assert judged["answer"]["teacher_judged_it_not_the_answer"] == 0
    assert judged["not_answer"]["teacher_judged_it_not_the_answer"] == judged["not_answer"]["rows"]


def test_reflector_judgment_counts_a_fold_reflector_on_the_states_it_never_trained_on(tmp_path, monkeypatch):
    out = tmp_path / "judgment.json"
    monkeypatch.chdir(tmp_path)
    _run_benchmark(monkeypatch, "reflector_judgment.py", [
        "--config", str(ROOT / "configs" / "autoexplore-tiny.yaml"), "--set", "sft.reflections=reflector",
        "--set", "threads=1", "--set", "data.episodes=16", "--set", "reflector_sft.epochs=1",
        "--set", "teacher.quote_reads=true", "--set", "env.kwargs={max_steps: 10, cat_view: outline}",
        "--set", "name=judged", "--set", f"out_dir={tmp_path}", "--out", str(out)])
    result = json.loads(out.read_text())
    after, trained_on = result["after_a_cat"], result["after_a_cat_trained_on"]
    assert after["answer"]["rows"] > 0 and after["not_answer"]["rows"] > 0
    by_kind = result["after_a_cat_by_question_kind"]
    assert set(by_kind) <= {"name", "code", "text"}
    for kind in after:
        assert sum(counts[kind]["rows"] for counts in by_kind.values()) == after[kind]["rows"]
    # the other fold's states, which this reflector trained on, are counted apart: together, every row after a cat
    assert sum(after[kind]["rows"] + trained_on[kind]["rows"] for kind in after) == \
        sum(last_command(row["state"]).startswith("cat ")
            for row in read_set(tmp_path / "judged" / "data", "train", "policy"))
    assert trained_on["answer"]["teacher_judged_it_not_the_answer"] == 0 < trained_on["answer"]["rows"]
    # the quoting teacher's verdict tells the two apart every time; the fold reflector's is counted beside it
    assert after["answer"]["teacher_judged_it_not_the_answer"] == 0
    assert after["not_answer"]["teacher_judged_it_not_the_answer"] == after["not_answer"]["rows"]
    for kind in after:
        assert 0 <= after[kind]["own_judged_it_not_the_answer"] <= after[kind]["rows"]
    assert "That is the question's sentence." in result["examples"]["answer"]["teacher"]
    assert result["writer"].endswith("reflector_fold0") and (tmp_path / "judged" / "reflector_fold0" / "sft_metrics.json").exists()
    assert 0 <= result["teacher_reflections_over_budget"] <= result["teacher_reflections"]
    assert result["peak_rss_gb"] > 0 and result["wall_s"] > 0


def test_policy_verdict_replays_both_sft_policies_on_their_rows_after_a_cat(tmp_path, monkeypatch):
    config = ROOT / "configs" / "autoexplore-tiny.yaml"
    sets = ["threads=1", "sft.reflections=reflector", "data.episodes=16", "reflector_sft.epochs=1", "sft.epochs=1", "name=verdict",
            f"out_dir={tmp_path}"]
    for set_name in ("policy", "policy_noreflect"):
        assert main(["sft", "--config", str(config), *[arg for value in sets for arg in ("--set", value)],
                     "--set-name", set_name]) == 0
    run = tmp_path / "verdict"
    # the config a `reflectrl run` of the same recipe would keep beside its steps
    save_config(load_config(config, _key_values(sets, "--set")), run / "config.yaml")
    for split in ("train", "val"):
        out = tmp_path / f"verdict-{split}.json"
        _run_benchmark(monkeypatch, "policy_verdict.py", [str(run), "--threads", "1", "--split", split, "--out", str(out)])
        result = json.loads(out.read_text())
        groups = result["rows_right_after_a_cat"]
        rows = read_set(run / "reflections", split, "policy")
        after_cat = [row for row in rows if last_command(row["state"]).startswith("cat ")]
        assert sum(groups.values()) == len(after_cat) and result["split"] == split
        assert {group.split("/")[0] for group in groups} <= {"answer", "not_answer"}
        for arm in ("sft_reflect", "sft"):
            assert set(result["identified_it"][arm]) == set(groups)
            for group, n in groups.items():
                assert 0 <= result["identified_it"][arm][group] <= n
        assert result["peak_rss_gb"] > 0 and result["threads"] == 1
    assert len(after_cat) < sum(json.loads((tmp_path / "verdict-train.json").read_text())
                                ["rows_right_after_a_cat"].values())
