"""Held-out evaluation plans on the real DangerousTaxi."""

from __future__ import annotations

from reflectrl.envs.registry import make_env
from reflectrl.eval.baselines import OracleAgent
from reflectrl.eval.evaluate import EvalPlan, evaluate_agent


def test_without_repeats_each_held_out_task_is_played_once():
    test_tasks = make_env("taxi", stage="dropoff").tasks("test")
    assert 0 < len(test_tasks) < 30
    once = EvalPlan("taxi", {}, [{"stage": "dropoff"}], "test", episodes=30, repeat_tasks=False)
    cycled = EvalPlan("taxi", {}, [{"stage": "dropoff"}], "test", episodes=30)
    env = make_env("taxi", stage="dropoff")
    assert sorted(task for task, _ in once.tasks(env)) == sorted(test_tasks)
    assert len(cycled.tasks(env)) == 30
    result = evaluate_agent(once, OracleAgent)
    level = result["levels"]["stage=dropoff"]
    assert level["episodes"] == len(test_tasks) and level["success"] == 1.0
