"""DangerousTaxi against gymnasium's own Taxi, its stages and rules, its oracle and its oracle teacher."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import deque

import gymnasium as gym
import pytest

from reflectrl.envs import InvalidActionError, make_env
from reflectrl.envs.taxi import (
    ACTIONS,
    SPLITS,
    STAGES,
    DangerousTaxi,
    decode,
    encode,
    render_map,
    start_states,
    transition,
)
from reflectrl.teachers.oracle import OracleTeacher
from reflectrl.teachers.oracle.taxi import reflect

SOUTH, NORTH, EAST, WEST, PICKUP, DROPOFF = range(6)
R, G, Y, B, IN_TAXI = range(5)
DANGER = -10 / 20


@pytest.fixture(scope="module")
def gym_env():
    """gymnasium's own Taxi, separate from the instance the env reads its table from."""
    env = gym.make("Taxi-v4", is_rainy=False, fickle_passenger=False)
    env.reset(seed=0)
    yield env.unwrapped
    env.close()


def gym_step(gym_env, state: int, action: int) -> tuple[int, float, bool]:
    gym_env.s = state
    next_state, reward, terminated, _, _ = gym_env.step(action)
    return int(next_state), float(reward), bool(terminated)


def test_transition_table_matches_gymnasium_step_for_every_state_and_action(gym_env):
    for state in range(500):
        assert decode(state) == tuple(gym_env.decode(state))
        for action in range(6):
            expected = gym_step(gym_env, state, action)
            assert transition(state, action) == expected, (state, action)
            assert decode(expected[0]) == tuple(gym_env.decode(expected[0]))


@pytest.mark.parametrize("stage", STAGES)
def test_env_step_follows_gymnasium_and_applies_dangerous_rule(gym_env, stage):
    env = DangerousTaxi(stage=stage)
    for state in start_states(stage):
        for action in range(6):
            env.reset(task=state)
            _, reward, terminated, truncated, info = env.step(action)
            next_state, base_reward, delivered = gym_step(gym_env, state, action)
            assert (info["state"], info["base_reward"], info["stage"]) == (next_state, base_reward, stage)
            assert not truncated
            if next_state == state:
                assert (reward, terminated, info["success"], info["dangerous"]) == (DANGER, True, False, True)
                continue
            picked_up = decode(state)[2] != IN_TAXI and decode(next_state)[2] == IN_TAXI
            bonus = 20 if picked_up and stage != "dropoff" else 0
            assert reward == pytest.approx((base_reward + bonus) / 20)
            ends = delivered or (picked_up and stage == "pickup")
            assert terminated == ends
            assert info.get("success") == (True if ends else None)


def shortest_solution_length(gym_env, stage: str, start: int) -> int:
    """Forward BFS over gymnasium's own P, independent of the env's oracle tables."""
    seen = {start}
    frontier = deque([(start, 0)])
    while frontier:
        state, depth = frontier.popleft()
        for action in range(6):
            (_, nxt, _, delivered), = gym_env.P[state][action]
            if nxt == state:
                continue
            if delivered if stage != "pickup" else (decode(state)[2] != IN_TAXI and decode(nxt)[2] == IN_TAXI):
                return depth + 1
            if nxt not in seen and not delivered:
                seen.add(nxt)
                frontier.append((nxt, depth + 1))
    raise AssertionError(f"no solution from {start}")


@pytest.mark.parametrize("stage", STAGES)
def test_oracle_solves_every_start_state_by_a_shortest_safe_path(gym_env, stage):
    env = DangerousTaxi(stage=stage)
    for start in start_states(stage):
        obs = env.reset(task=start)
        promised = obs.info["oracle"]["distance"]
        steps = 0
        while True:
            action = env.oracle_action()
            assert ACTIONS[action] == env.observation.info["oracle"]["next_action"]
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            assert not info["dangerous"]
            if terminated or truncated:
                break
        assert info["success"] and terminated, (stage, start)
        assert steps == promised == shortest_solution_length(gym_env, stage, start) <= env.max_steps
        with pytest.raises(RuntimeError, match="reached its goal"):
            env.oracle_action()


def test_bumping_a_wall_or_the_edge_ends_the_episode():
    env = DangerousTaxi(stage="full")
    start = encode(0, 1, Y, B)  # a wall lies east of (0, 1); row 0 is the north edge
    for action in (EAST, NORTH):
        env.reset(task=start)
        obs, reward, terminated, truncated, info = env.step(action)
        assert (reward, terminated, truncated, info["success"]) == (DANGER, True, False, False)
        assert info["state"] == start and info["base_reward"] == -1
        assert "Game over" in obs.text
        with pytest.raises(RuntimeError, match="episode is over"):
            env.step(SOUTH)
    assert "wall" in obs.text


def test_noop_pickup_and_dropoff_are_dangerous():
    env = DangerousTaxi(stage="full")
    for action in (PICKUP, DROPOFF):
        env.reset(task=encode(2, 2, R, G))
        _, reward, terminated, _, info = env.step(action)
        assert (reward, terminated, info["success"], info["base_reward"]) == (DANGER, True, False, -10)
    dropoff = DangerousTaxi(stage="dropoff")
    dropoff.reset(task=encode(2, 2, IN_TAXI, G))
    _, reward, terminated, _, info = dropoff.step(PICKUP)
    assert (reward, terminated, info["success"]) == (DANGER, True, False)


def test_pickup_bonus_ends_pickup_stage_and_is_paid_once_in_full():
    pickup = DangerousTaxi(stage="pickup")
    pickup.reset(task=encode(0, 0, R, G))
    obs, reward, terminated, _, info = pickup.step(PICKUP)
    assert (reward, terminated, info["success"]) == (pytest.approx(19 / 20), True, True)
    assert "X" in render_map(info["state"]) and obs.info["oracle"]["next_action"] is None

    full = DangerousTaxi(stage="full")
    full.reset(task=encode(0, 0, R, G))
    assert full.step(PICKUP)[1] == pytest.approx(19 / 20)
    # gym's drop-off at a depot that is not the destination leaves the passenger there: a real change, -1
    obs, reward, terminated, _, info = full.step(DROPOFF)
    assert (reward, terminated, decode(info["state"])[2]) == (pytest.approx(-1 / 20), False, R)
    assert "not the destination" in obs.text
    assert full.step(PICKUP)[1] == pytest.approx(-1 / 20)


def test_dropoff_stage_has_no_bonus_and_succeeds_on_delivery():
    env = DangerousTaxi(stage="dropoff")
    env.reset(task=encode(1, 4, IN_TAXI, G))
    _, reward, terminated, _, _ = env.step(NORTH)
    assert (reward, terminated) == (pytest.approx(-1 / 20), False)
    _, reward, terminated, _, info = env.step(DROPOFF)
    assert (reward, terminated, info["success"]) == (pytest.approx(20 / 20), True, True)


def test_horizon_truncates():
    env = DangerousTaxi(stage="full", max_steps=3)
    env.reset(task=encode(2, 2, R, G))
    results = [env.step(action) for action in (SOUTH, NORTH, SOUTH)]
    assert [r[3] for r in results] == [False, False, True]
    assert not any(r[2] for r in results)
    assert results[-1][4]["success"] is False and "success" not in results[0][4]
    assert "Out of time" in results[-1][0].text


def test_reset_is_deterministic_and_validates_tasks():
    env = DangerousTaxi(stage="full")

    def play(task, seed):
        texts = [env.reset(task=task, seed=seed).text]
        for action in (SOUTH, NORTH, EAST, WEST, SOUTH):
            obs, _, terminated, truncated, _ = env.step(action)
            texts.append(obs.text)
            if terminated or truncated:
                break
        return texts

    assert play(None, 7) == play(None, 7)
    assert len({env.reset(seed=seed).info["state"] for seed in range(30)}) > 10
    task = env.tasks("test")[0]
    assert play(task, 1) == play(task, 2)
    for bad in (encode(0, 0, G, G), encode(0, 0, IN_TAXI, G), 500, -1, "12", True, 1.5):
        with pytest.raises(ValueError, match="taxi"):
            env.reset(task=bad)
    with pytest.raises(ValueError, match="not a valid start state"):
        DangerousTaxi(stage="dropoff").reset(task=encode(0, 4, IN_TAXI, G))


def test_bad_constructor_arguments_and_splits():
    with pytest.raises(ValueError, match="stage 'drive'"):
        DangerousTaxi(stage="drive")
    with pytest.raises(ValueError, match="max_steps"):
        DangerousTaxi(max_steps=0)
    with pytest.raises(ValueError, match="reward_scale"):
        DangerousTaxi(reward_scale=0)
    with pytest.raises(ValueError, match="split 'dev'"):
        DangerousTaxi().tasks("dev")


@pytest.mark.parametrize("stage", STAGES)
def test_task_splits_are_disjoint_covering_and_seven_two_one(stage):
    env = DangerousTaxi(stage=stage)
    splits = {split: env.tasks(split) for split in SPLITS}
    everything = [task for split in SPLITS for task in splits[split]]
    assert len(everything) == len(set(everything))
    assert sorted(everything) == list(start_states(stage))
    assert len(everything) == (96 if stage == "dropoff" else 300)
    assert [round(len(splits[s]) / len(everything), 1) for s in SPLITS] == [0.7, 0.2, 0.1]


def test_task_splits_are_the_same_in_another_process():
    code = (
        "import json; from reflectrl.envs.taxi import DangerousTaxi, STAGES, SPLITS;"
        "print(json.dumps({st: {sp: DangerousTaxi(stage=st).tasks(sp) for sp in SPLITS} for st in STAGES}))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED="123"))
    here = {st: {sp: DangerousTaxi(stage=st).tasks(sp) for sp in SPLITS} for st in STAGES}
    assert json.loads(other.stdout) == here


def test_invalid_reply_is_a_dangerous_noop():
    env = DangerousTaxi(stage="pickup")
    start = env.reset(task=encode(2, 2, R, G)).info["state"]
    obs, reward, terminated, truncated, info = env.invalid_step("go somewhere")
    assert (reward, terminated, truncated, info["success"], info["invalid"]) == (DANGER, True, False, False, True)
    assert info["state"] == start and obs.info["oracle"]["last_result"] == "invalid"


def test_check_action_rejects_bad_indices():
    env = DangerousTaxi()
    env.reset(seed=0)
    for bad in (6, -1, "0", True, 1.0):
        with pytest.raises(InvalidActionError):
            env.step(bad)
    assert env.step(env.oracle_action())[2] is False


def test_observation_text_map_and_oracle_facts(gym_env):
    env = DangerousTaxi(stage="full")
    obs = env.reset(task=encode(4, 0, Y, B))  # taxi on the waiting passenger
    assert obs.actions == list(ACTIONS)
    assert len(obs.text.split()) < 120
    assert obs.text.startswith("Task: pick up the passenger") and "Start." in obs.text
    rows = obs.text.splitlines()[2:7]
    assert rows[4].startswith("|O|") and "D" in rows[4] and "P" not in rows[4]
    gym_map = gym_env.desc.astype(str)
    for row, line in enumerate(rows):
        walls = [i for i, ch in enumerate(line) if ch == "|"]
        assert walls == [i for i, ch in enumerate(gym_map[1 + row]) if ch == "|"]
    assert {c for line in rows for c in line} >= {"R", "G", "O", "D"}
    obs, _, _, _, _ = env.step(PICKUP)
    assert "X" in obs.text and "P" not in "".join(obs.text.splitlines()[2:7])
    facts = obs.info["oracle"]
    assert (facts["taxi_row"], facts["taxi_col"], facts["passenger"]) == (4, 0, "in taxi")
    assert (facts["destination"], facts["destination_row"], facts["destination_col"]) == ("B", 4, 3)
    assert facts["next_action"] == "move north" and facts["stage"] == "full"
    assert facts["blocked"] == ["south", "east", "west"]
    assert "walls block the direct way" in facts["reason"]
    assert facts["distance"] == 8  # seven moves around the walls, then the drop-off


def _plan_word(action_text: str) -> str:
    return {"pick up passenger": "pick up", "drop off passenger": "drop off"}.get(action_text, action_text[5:])


_PLAN_WORDS = re.compile(r"\b(south|north|east|west|pick up|drop off)\b")


def test_teacher_names_the_oracle_action_last_and_never_uses_digits():
    rng = random.Random(0)
    for stage in STAGES:
        env = DangerousTaxi(stage=stage)
        for start in start_states(stage):
            env.reset(task=start)
            history: list[str] = []
            while True:
                good = ACTIONS[env.oracle_action()]
                text = reflect(env.observation, history, good, False, rng)
                assert _PLAN_WORDS.findall(text)[-1] == _plan_word(good), text
                assert env.reflection_action(text, env.observation.actions) == ACTIONS.index(good), text
                assert not re.search(r"\d", text) and len(text.split()) <= 50
                history.append(good)
                _, _, terminated, truncated, _ = env.step(ACTIONS.index(good))
                if terminated or truncated:
                    break


def test_teacher_explains_wrong_actions():
    rng = random.Random(1)
    env = DangerousTaxi(stage="full")
    cases = {
        EAST: "wall",  # (0, 1) has a wall to the east
        PICKUP: "pick",
        DROPOFF: "drop",
        SOUTH: "away|farther",  # the passenger is north-west
    }
    for action, explanation in cases.items():
        env.reset(task=encode(0, 1, R, G))
        obs = env.step(action)[0]
        good = ACTIONS[env.oracle_action()]
        text = reflect(obs, [ACTIONS[action]], good, True, rng)
        first_sentence = text.split(". ")[0]
        assert re.search(explanation, first_sentence, re.I), text
        assert _PLAN_WORDS.findall(text)[-1] == _plan_word(good)
        assert env.reflection_action(text, obs.actions) == ACTIONS.index(good), text
        assert not re.search(r"\d", text) and len(text.split()) <= 55
    with pytest.raises(ValueError, match="history"):
        reflect(obs, ["move north"], good, True, rng)
    with pytest.raises(ValueError, match="non-empty history"):
        reflect(obs, [], good, True, rng)
    with pytest.raises(ValueError, match="next_good_action"):
        reflect(obs, [], "fly", False, rng)


def test_a_reflection_names_an_action_only_by_a_decision():
    """Directions that describe the map, a past move or a wall name no action; a cut-off reflection names none."""
    env = DangerousTaxi(stage="full")
    actions = env.reset(task=encode(2, 2, Y, B)).actions
    named = {
        "The passenger at R is two rows north and one column west of the taxi.": None,
        "Going west would hit a wall and end the trip.": None,
        "The last move, east, hit a wall; that wastes the whole episode.": None,
        "Trying to pick up here did nothing: the passenger is not here. So drive North now.": NORTH,
        "Moving south took the taxi farther from the passenger. Next, head west.": WEST,
        "Time to pick up the passenger.": PICKUP,
        "Now drop off the passenger.": DROPOFF,
        "So the taxi should move east next. The best move now is to go south.": SOUTH,
        "The passenger at G is two columns east of the taxi. So the taxi should": None,
        "": None,
    }
    for text, action in named.items():
        assert env.reflection_action(text, actions) == action, text


def test_teacher_phrasing_varies_with_rng_and_dispatches_by_env_name():
    env = DangerousTaxi(stage="full")
    obs = env.reset(task=encode(2, 2, Y, B))
    good = ACTIONS[env.oracle_action()]
    texts = {reflect(obs, [], good, False, random.Random(seed)) for seed in range(20)}
    assert len(texts) >= 5
    assert all(re.search(rf"\b{_plan_word(good)}\b", text) for text in texts)
    teacher = OracleTeacher("taxi", seed=3)
    assert teacher.reflect(obs, [], good, False) == OracleTeacher("taxi", seed=3).reflect(obs, [], good, False)


def test_make_env_builds_the_pickup_stage():
    env = make_env("taxi", stage="pickup")
    assert isinstance(env, DangerousTaxi) and env.name == "taxi" and env.stage == "pickup"
    obs = env.reset(seed=0)
    assert obs.text.startswith("Task: drive to the passenger P and pick them up.")
