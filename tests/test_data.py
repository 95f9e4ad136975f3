"""Teacher trajectories, negative examples and the SFT sets, on the real DangerousTaxi."""

import random

import pytest

from reflectrl.agent.prompts import ACTION_MARKER, ANALYZE_MARKER
from reflectrl.data.sft_sets import SET_NAMES, build_sets, read_jsonl, task_fold, write_sets
from reflectrl.data.trajectories import generate_examples, negative_example, teacher_episode
from reflectrl.envs.registry import make_env
from reflectrl.teachers.oracle import OracleTeacher


class RecordingTeacher(OracleTeacher):
    """The oracle teacher, remembering what it was asked."""

    def __init__(self):
        super().__init__("taxi", seed=0)
        self.calls = []

    def reflect(self, state, history, next_good_action, was_last_action_wrong):
        self.calls.append((list(history), next_good_action, was_last_action_wrong))
        return super().reflect(state, history, next_good_action, was_last_action_wrong)


def test_positive_examples_are_labelled_with_the_oracle_action():
    env = make_env("taxi", stage="full")
    teacher = RecordingTeacher()
    task = env.tasks("train")[0]
    examples, taken, history = teacher_episode(env, teacher, task, 0, 0.5, random.Random(1))
    assert len(examples) == len(taken) == len(history)
    for k, example in enumerate(examples):
        assert not example.negative
        replay = env.reset(task=task, seed=0)
        for index in taken[:k]:
            replay = env.step(index)[0]
        assert replay.text == example.state
        assert example.action == env.oracle_action()
        assert teacher.calls[k][1] == replay.actions[env.oracle_action()]
        assert not teacher.calls[k][2]


def test_negative_example_takes_a_wrong_action_then_corrects_it():
    env = make_env("taxi", stage="full")
    teacher = RecordingTeacher()
    task = env.tasks("train")[3]
    _, taken, history = teacher_episode(env, teacher, task, 0, 0.0, random.Random(0))
    teacher.calls.clear()
    example = negative_example(env, teacher, task, 0, taken, history, random.Random(5))
    assert example is not None and example.negative
    asked_history, good, wrong_flag = teacher.calls[-1]
    assert wrong_flag
    h = example.step - 1
    assert asked_history[:h] == history[:h]
    wrong = asked_history[-1]
    assert wrong != history[h]
    # the example's state is the state right after the wrong action, labelled with the oracle's fix
    state = env.reset(task=task, seed=0)
    for index in taken[:h]:
        state = env.step(index)[0]
    after = env.step(state.actions.index(wrong))[0]
    assert after.text == example.state
    assert example.actions[example.action] == good == after.actions[env.oracle_action()]


def test_generation_is_deterministic_and_yields_negatives():
    env = make_env("taxi", stage="pickup")
    tasks = env.tasks("train")
    first = list(generate_examples(env, OracleTeacher("taxi", 0), tasks, 20, 0.3, 1, seed=3))
    second = list(generate_examples(env, OracleTeacher("taxi", 0), tasks, 20, 0.3, 1, seed=3))
    assert first == second
    assert sum(e.negative for e in first) >= 10
    with pytest.raises(ValueError, match="random_action_prob"):
        list(generate_examples(env, OracleTeacher("taxi", 0), tasks, 1, 1.5, 0))
    with pytest.raises(ValueError, match="no tasks"):
        list(generate_examples(env, OracleTeacher("taxi", 0), [], 1, 0.1, 0))


def test_sft_sets(tmp_path):
    env = make_env("taxi", stage="dropoff")
    examples = list(generate_examples(env, OracleTeacher("taxi", 0), env.tasks("train"), 10, 0.3, 1, seed=0))
    sets = build_sets(examples)
    assert set(sets) == set(SET_NAMES)
    n_pos = sum(not e.negative for e in examples)
    assert len(sets["reflection"]) == len(sets["policy"]) == len(sets["policy_noreflect"]) == len(examples)
    assert len(sets["reflection_pos"]) == len(sets["policy_pos"]) == n_pos < len(examples)
    row = sets["policy"][0]
    assert ANALYZE_MARKER in row["prompt"] and row["prompt"].endswith(ACTION_MARKER)
    assert ANALYZE_MARKER not in sets["policy_noreflect"][0]["prompt"]
    assert row["completion"] == str(row["action"])
    write_sets(sets, tmp_path)
    assert read_jsonl(tmp_path / "policy.jsonl") == sets["policy"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_every_row_of_a_task_falls_in_one_fold():
    """Rows name their task; rows of sets written without one are folded by the lines up to the task line."""
    env = make_env("taxi", stage="dropoff")
    sets = build_sets(generate_examples(env, OracleTeacher("taxi", 0), env.tasks("train"), 12, 0.3, 1, seed=0))
    by_task: dict[str, set[int]] = {}
    for name in ("reflection", "policy"):
        for row in sets[name]:
            by_task.setdefault(row["task"], set()).add(task_fold(row))
    assert len(by_task) == 12 and all(len(folds) == 1 for folds in by_task.values())
    assert {fold for folds in by_task.values() for fold in folds} == {0, 1}
    question = "Task: Find the file named cyaml.py.\nCurrent working directory: {}\nFiles under it:\n{}"
    states = [question.format(cwd, files) for cwd, files in (("yaml", "a.py"), (".", "yaml"), ("yaml", "b.py"))]
    assert len({task_fold({"state": state}) for state in states}) == 1
    assert task_fold({"prompt": states[0] + "\n # Analyze:\n"}) == task_fold({"state": states[1]})


def _steps_to_goal(env, task, prefix: list[int]) -> int:
    """Steps an episode takes: ``prefix``, then the oracle's actions until it ends."""
    env.reset(task=task, seed=0)
    steps, done = 0, False
    for index in prefix:
        done = any(env.step(index)[2:4])
        steps += 1
    while not done:
        done = any(env.step(env.oracle_action())[2:4])
        steps += 1
    return steps


def test_negative_examples_never_call_a_tie_for_the_shortest_move_wrong():
    env = make_env("taxi", stage="full")
    tasks = env.tasks("train")[:12]
    ties = 0
    for task in tasks:
        _, taken, history = teacher_episode(env, OracleTeacher("taxi", 0), task, 0, 0.0, random.Random(0))
        for h in range(len(taken)):
            env.reset(task=task, seed=0)
            for index in taken[:h]:
                env.step(index)
            good = env.good_actions()
            assert env.oracle_action() in good
            ties += len(good) > 1
            # every good action starts a path as short as the oracle's own
            shortest = _steps_to_goal(env, task, taken[: h + 1])
            assert all(_steps_to_goal(env, task, taken[:h] + [g]) == shortest for g in good)
        teacher = RecordingTeacher()
        for seed in range(4):
            example = negative_example(env, teacher, task, 0, taken, history, random.Random(seed))
            assert example is not None
            h = example.step - 1
            state = env.reset(task=task, seed=0)
            for index in taken[:h]:
                state = env.step(index)[0]
            wrong = teacher.calls[-1][0][-1]
            assert state.actions.index(wrong) not in env.good_actions()
    assert ties >= 5  # Taxi has ties on these tasks, so the check above is not vacuous
