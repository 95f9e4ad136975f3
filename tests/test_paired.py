"""Two arms on the same tasks: counts, Newcombe's paired interval, the exact McNemar test."""

from __future__ import annotations

import gzip
import json

import pytest

from reflectrl.cli import main
from reflectrl.errors import UserError
from reflectrl.eval.paired import PairedCounts, mcnemar_exact_p, paired_counts, paired_difference_interval
from reflectrl.eval.report import paired_table


def record(task, success, level="all"):
    return {"level": level, "task": task, "success": success}


def test_newcombe_interval_matches_his_worked_examples():
    # Newcombe (1998), Statistics in Medicine 17:2635, Table II, method 10
    low, high = paired_difference_interval(PairedCounts(both=36, only_a=12, only_b=2, neither=0))
    assert (round(low, 4), round(high, 4)) == (0.0569, 0.3404)
    low, high = paired_difference_interval(PairedCounts(both=5, only_a=5, only_b=0, neither=0))
    assert (round(low, 4), round(high, 4)) == (0.1174, 0.7634)


def test_interval_is_symmetric_and_holds_the_difference():
    for counts in (PairedCounts(3, 3, 6, 3), PairedCounts(50, 7, 0, 3), PairedCounts(0, 0, 0, 20)):
        low, high = paired_difference_interval(counts)
        assert -1 <= low <= counts.difference <= high <= 1
        swapped = PairedCounts(counts.both, counts.only_b, counts.only_a, counts.neither)
        assert paired_difference_interval(swapped) == pytest.approx((-high, -low))
    assert paired_difference_interval(PairedCounts(0, 0, 0, 0)) == (-1.0, 1.0)


def test_exact_mcnemar():
    # 9 against 2 discordant tasks: P(X <= 2 | 11, 1/2) twice
    assert mcnemar_exact_p(9, 2) == pytest.approx(2 * (1 + 11 + 55) / 2 ** 11)
    assert mcnemar_exact_p(2, 9) == mcnemar_exact_p(9, 2)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(7, 0) == pytest.approx(2 / 2 ** 7)


def test_tasks_are_matched_by_level_and_task_not_by_order():
    a = [record({"q": 1}, True), record({"q": 2}, True), record({"q": 3}, False), record({"q": 1}, True, "deep")]
    b = [record({"q": 1}, False, "deep"), record({"q": 3}, True), record({"q": 2}, True), record({"q": 1}, False)]
    assert paired_counts(a, b) == PairedCounts(both=1, only_a=2, only_b=1, neither=0)
    # a task played twice pairs its plays in order
    assert paired_counts([record(7, True), record(7, False)], [record(7, True), record(7, True)]) == \
        PairedCounts(both=1, only_a=0, only_b=1, neither=0)


def test_different_tasks_are_refused():
    with pytest.raises(UserError, match="did not play the same tasks: 2 tasks differ"):
        paired_counts([record(1, True), record(2, True)], [record(1, True), record(3, True)])
    table = paired_table({"reflect_rl": [record(1, True)], "sft": [record(2, False)], "random": [record(1, False)]})
    assert "| SFT only (no reflection) | not paired:" in table
    random_row = next(line for line in table.splitlines() if line.startswith("| Random |"))
    assert random_row.split(" | ")[1:6] == ["1", "0", "1", "0", "0"]
    assert paired_table({"sft": [record(1, True)]}) is None
    # an arm whose episodes file held none is a row that says so
    table = paired_table({"reflect_rl": [record(1, True)], "sft": []})
    assert "| SFT only (no reflection) | not paired: no episodes of it were read |" in table


def test_paired_test_separates_what_separate_intervals_cannot():
    # 60 tasks: 57 against 50 solved, every task the second arm solved also solved by the first
    counts = PairedCounts(both=50, only_a=7, only_b=0, neither=3)
    low, _ = paired_difference_interval(counts)
    assert low > 0 and mcnemar_exact_p(7, 0) < 0.05


def test_compare_refuses_files_that_are_not_transcripts_naming_the_file(tmp_path, capsys):
    good = tmp_path / "sft.jsonl"
    step = {"observation": "a room", "reflection": None, "actions": ["north", "south"], "action": 1,
            "action_text": "south", "probability": 0.5, "reward": 1.0}
    whole = {**record(1, True), "seed": 0, "return": 1.0, "steps": 1, "outcome": "success", "transcript": [step],
             "final": {"observation": "done"}}
    good.write_text(json.dumps(whole) + "\n")
    damaged = {"success.jsonl": ({**whole, "success": "yes"}, "record 1 is damaged: 'success' is \"yes\", not true"),
               "final.jsonl": ({**whole, "final": {}}, "'final' is {}, not an object with the final observation"),
               "step.jsonl": ({**whole, "transcript": [step, "x"]}, "step 2 is \"x\", not an object"),
               "action.jsonl": ({**whole, "transcript": [{**step, "action": 2}]},
                                "step 1's 'action' is 2, not null or an index into its 2 actions"),
               "lacks.jsonl": ({**whole, "transcript": [{k: v for k, v in step.items() if k != "reward"}]},
                               "step 1 lacks 'reward'"),
               "named.jsonl": ({**whole, "transcript": [{**step, "named": 0}]}, "step 1 lacks 'good'")}
    for name, (bad, _) in damaged.items():
        (tmp_path / name).write_text(json.dumps(whole) + "\n" + json.dumps(bad) + "\n")
    (tmp_path / "fake.jsonl.gz").write_bytes(b"not gzip")
    with gzip.open(tmp_path / "other.jsonl.gz", "wt") as handle:
        handle.write('{"loss": 0.5}\n')
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    for name, reason in (("fake.jsonl.gz", "not a readable gzipped episodes file"),
                         ("other.jsonl.gz", "record 1 is not an episode transcript (it lacks level"),
                         ("list.jsonl", "record 1 is not an episode transcript"),
                         *((name, reason.replace("record 1", "record 2")) for name, (_, reason) in damaged.items())):
        path = tmp_path / name
        assert main(["compare", "--episodes", f"reflect_rl={path}", "--episodes", f"sft={good}"]) == 2
        err = capsys.readouterr().err
        assert reason in err and str(path) in err
    assert main(["compare", "--episodes", f"reflect_rl={good}", "--episodes", f"sft={good}"]) == 0
