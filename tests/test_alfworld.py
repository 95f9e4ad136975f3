"""ALFWorld through the real alfworld/TextWorld engine: generated games, the official loader, oracle, teacher."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("textworld")

from reflectrl.envs import InvalidActionError, make_env  # noqa: E402
from reflectrl.envs.action_parser import ACTION_IDS  # noqa: E402
from reflectrl.envs.alfworld import ALFWorld, GeneratorSettings, generate_problem  # noqa: E402
from reflectrl.envs.alfworld.data import collect_problem_dirs  # noqa: E402
from reflectrl.envs.alfworld.engine import GAME_FILE, NOTHING_HAPPENS  # noqa: E402
from reflectrl.envs.alfworld.problems import GENERATED_TASK_TYPES, split_of_seed  # noqa: E402
from reflectrl.errors import UserError  # noqa: E402
from reflectrl.teachers.oracle import OracleTeacher  # noqa: E402
from reflectrl.teachers.oracle.alfworld import reflect  # noqa: E402

#: rooms with at most two receptacles of a kind and few objects play fast
SMALL_ROOMS = {"max_per_receptacle_type": 2, "min_distractors": 2, "max_distractors": 5}
TINY_ROOMS = {"max_per_receptacle_type": 1, "min_distractors": 1, "max_distractors": 3}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("alfworld-cache")


@pytest.fixture(scope="module")
def env(cache) -> ALFWorld:
    """The paper's setting (tomato -> microwave) on generated kitchens of the default size."""
    return ALFWorld(source="generated", cache_dir=cache, n_train=50, n_val=10, n_test=15)


@pytest.fixture(scope="module")
def small_env(cache) -> ALFWorld:
    return ALFWorld(source="generated", cache_dir=cache, max_steps=8, n_train=10, generator_options=SMALL_ROOMS)


def play_oracle(env: ALFWorld, task) -> tuple[bool, float, int]:
    env.reset(task)
    total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(env.oracle_action())
        total += reward
        steps += 1
        if terminated or truncated:
            return info["success"], total, steps


def test_oracle_solves_generated_test_tasks(env):
    tasks = env.tasks("test")
    assert len(tasks) == 15 and all(split_of_seed(task) == "test" for task in tasks)
    results = [play_oracle(env, task) for task in tasks]
    solved = sum(success for success, _, _ in results)
    assert solved >= 0.95 * len(tasks), results
    for success, total, steps in results:
        if success:
            assert total == 1.0 and steps <= env.max_steps


def test_state_actions_and_oracle_info(env):
    obs = env.reset(env.tasks("train")[0])
    oracle = obs.info["oracle"]
    assert "Your task is to: put " in obs.text and "tomato" in obs.text and "microwave" in obs.text
    assert "Welcome to TextWorld" not in obs.text
    assert obs.actions == sorted(obs.actions) and {"look", "inventory", "help"} <= set(obs.actions)
    assert all(action.startswith("go to ") for action in obs.actions if action not in ("look", "inventory", "help"))
    assert len(obs.actions) <= len(ACTION_IDS)
    assert oracle["goal_receptacle_type"] == "microwave" and oracle["target_type"] == "tomato"
    assert obs.actions[env.oracle_action()] == oracle["next_command"] == oracle["plan"][0]
    assert f"a {oracle['target_location']}," in obs.text or f"a {oracle['target_location']}." in obs.text
    assert oracle["holding"] is None and oracle["agent_at"] is None and not oracle["target_seen"]
    # Walk the plan: the tomato is found where the oracle said, then carried.
    where = oracle["target_location"]
    while True:
        command = env.observation.actions[env.oracle_action()]
        obs, _, terminated, _, info = env.step(env.oracle_action())
        oracle = obs.info["oracle"]
        if command.startswith("go to ") and command.endswith(where):
            assert oracle["agent_at"] == where
        if command.startswith("take "):
            assert oracle["holding"] == oracle["target_object"] and oracle["target_location"] == "held"
            assert oracle["target_seen"]
        if terminated:
            break
    assert info["success"] and oracle["won"] and oracle["plan"] == []
    assert oracle["target_locations"][oracle["target_object"]] == oracle["goal_receptacle"]
    assert "Previous steps:" in obs.text and "Step 1. Action: go to" in obs.text


def test_history_window_keeps_older_commands_without_feedback(cache):
    env = ALFWorld(source="generated", cache_dir=cache, history_window=1, generator_options=SMALL_ROOMS)
    env.reset(3)
    env.step(env.observation.actions.index("look"))
    env.step(env.observation.actions.index("inventory"))
    text = env.observation.text
    assert "Step 1. Action: look\nStep 2. Action: inventory\nObservation: You are not carrying anything." in text


def test_random_play_never_crashes_the_engine(cache):
    """30 short episodes mixing random, oracle (as the paper's data generation does) and invalid moves."""
    env = ALFWorld(source="generated", cache_dir=cache, max_steps=4, n_train=10, generator_options=TINY_ROOMS)
    rng = random.Random(0)
    tasks = env.tasks("train")
    invalid = 0
    for episode in range(30):
        obs = env.reset(tasks[episode // 3])
        for step in range(1, env.max_steps + 1):
            assert obs.actions and obs.info["oracle"]["next_command"] in obs.actions
            draw = rng.random()
            if draw < 0.1:
                obs, reward, terminated, truncated, info = env.invalid_step("what now?")
                assert info["invalid"] and reward == 0.0 and not terminated
                invalid += 1
            else:
                action = rng.randrange(len(obs.actions)) if draw < 0.7 else env.oracle_action()
                obs, reward, terminated, truncated, info = env.step(action)
                assert reward == (1.0 if terminated else 0.0)
            if terminated or truncated:
                break
        assert terminated or truncated, "an episode must end by the horizon"
        assert truncated == (step == env.max_steps and not terminated)
        assert info["success"] == terminated == info["won"]
    assert invalid > 0


def test_invalid_commands(small_env):
    obs = small_env.reset(small_env.tasks("train")[1])
    for bad in (-1, len(obs.actions), 1.5, "0", True, None):
        with pytest.raises(InvalidActionError):
            small_env.step(bad)
    before = list(obs.actions)
    obs, reward, terminated, truncated, info = small_env.invalid_step("I think I'd rather dance")
    assert info["invalid"] and info["feedback"] == NOTHING_HAPPENS and reward == 0.0
    assert not terminated and not truncated and obs.actions == before
    assert "Action: I think I'd rather dance\nObservation: Nothing happens." in obs.text
    assert obs.info["oracle"]["last_invalid"] and obs.info["step"] == 1
    for _ in range(small_env.max_steps - 1):
        obs, _, terminated, truncated, info = small_env.invalid_step("")
    assert truncated and not terminated and info["success"] is False
    with pytest.raises(RuntimeError, match="episode is over"):
        small_env.step(0)
    with pytest.raises(RuntimeError, match="episode is over"):
        small_env.invalid_step("x")


def test_reset_is_deterministic(small_env):
    def rollout(task, seed):
        rng = random.Random(seed)
        obs = small_env.reset(task)
        trace = [(obs.text, tuple(obs.actions), obs.info["oracle"]["plan"])]
        for _ in range(6):
            obs, reward, terminated, truncated, _ = small_env.step(rng.randrange(len(obs.actions)))
            trace.append((obs.text, tuple(obs.actions), reward, obs.info["oracle"]["plan"]))
            if terminated or truncated:
                break
        return trace

    task = small_env.tasks("train")[2]
    assert rollout(task, 5) == rollout(task, 5)
    first = small_env.reset(seed=7)
    drawn = small_env.task
    assert small_env.reset(seed=7).text == first.text and small_env.task == drawn


def test_generator_is_pure_and_validates_settings():
    settings = GeneratorSettings()
    a, b = generate_problem(settings, 11), generate_problem(settings, 11)
    assert a.pddl_problem == b.pddl_problem and a.traj_data == b.traj_data
    assert generate_problem(settings, 12).pddl_problem != a.pddl_problem
    assert a.room == "kitchen" and a.object_type == "Tomato" and a.receptacle_type == "Microwave"
    assert a.traj_data["pddl_params"]["parent_target"] == "Microwave"
    assert "(inReceptacle Tomato_bar_1 Microwave_bar_1)" not in a.pddl_problem
    assert "(openable Microwave_bar_1)" in a.pddl_problem and "(opened " not in a.pddl_problem
    assert settings.key() != GeneratorSettings(object_type="Apple").key()
    anything = GeneratorSettings(object_type=None, receptacle_type=None)
    assert len({generate_problem(anything, seed).room for seed in range(40)}) > 1
    with pytest.raises(ValueError, match="Toaster"):
        GeneratorSettings(receptacle_type="Toaster")
    with pytest.raises(ValueError, match="object type"):
        GeneratorSettings(object_type="Unicorn")
    with pytest.raises(ValueError, match="task types"):
        GeneratorSettings(task_type="look_at_obj_in_light")
    with pytest.raises(ValueError, match="seeds"):
        generate_problem(settings, -1)


@pytest.mark.parametrize("task_type", [t for t in GENERATED_TASK_TYPES if t != "pick_and_place_simple"])
def test_oracle_solves_heat_cool_clean_tasks(cache, task_type):
    env = ALFWorld(
        source="generated", cache_dir=cache, task_type=task_type, object_type=None, receptacle_type=None,
        generator_options=SMALL_ROOMS,
    )
    task = env.tasks("val")[0]
    obs = env.reset(task)
    treatment = obs.info["oracle"]["treatment"]
    assert treatment is not None and treatment["appliance"] and not treatment["done"]
    success, total, _ = play_oracle(env, task)
    assert success and total == 1.0
    assert env.observation.info["oracle"]["treatment"]["done"]


def test_cache_is_keyed_by_settings_and_seed(cache, small_env):
    small_env.reset(4)
    key = small_env.generator.key()
    files = list((cache / "generated" / key).rglob(GAME_FILE))
    game = next(path for path in files if path.parent.name.endswith("_4"))
    data = json.loads(game.read_text())
    assert data["solvable"] is True and data["walkthrough"] and "put a tomato in microwave" in data["grammar"]
    mtime = game.stat().st_mtime_ns
    again = ALFWorld(source="generated", cache_dir=cache, generator_options=SMALL_ROOMS, max_steps=8)
    again.reset(4)
    assert game.stat().st_mtime_ns == mtime
    other = ALFWorld(source="generated", cache_dir=cache, object_type="Apple", generator_options=SMALL_ROOMS)
    assert other.generator.key() != key
    other.reset(4)
    assert "apple" in other.observation.text


def test_missing_official_data_warns_and_uses_generated_set(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "nothing-here"))
    with pytest.warns(UserWarning, match="alfworld-download") as caught:
        env = ALFWorld(cache_dir=cache, generator_options=SMALL_ROOMS)
    message = str(caught[0].message)
    assert "ALFWORLD_DATA" in message and "pip install alfworld" in message and "generated" in message
    assert env.source == "generated"
    with pytest.raises(FileNotFoundError, match="alfworld-download"):
        ALFWorld(source="official", cache_dir=cache)


def test_generated_problems_load_through_the_official_loader(cache, small_env, tmp_path):
    expected = {}
    for task in small_env.tasks("train")[:3]:
        obs = small_env.reset(task)
        expected[obs.text] = len(obs.info["oracle"]["plan"])
    data_dir = cache / "generated" / small_env.generator.key()
    official = ALFWorld(source="official", data_dir=data_dir, cache_dir=tmp_path / "cache")
    assert official.source == "official"
    dirs = official.tasks("train")
    assert len(dirs) >= 3 and all(Path(d, "initial_state.pddl").is_file() for d in dirs)
    assert official.tasks("test") == [] and official.tasks("val") == []
    found = {}
    for task in dirs:
        obs = official.reset(task)
        found[obs.text] = len(obs.info["oracle"]["plan"])
    assert expected.items() <= found.items()
    assert play_oracle(official, dirs[0])[0]
    assert ALFWorld(source="official", data_dir=data_dir, object_type="Apple").tasks("train") == []
    # drawing a train task where none fits says where it looked
    with pytest.raises(UserError, match=rf"none matches .* Apple -> .* among the trial folders \(traj_data.json\) "
                                        rf"under {re.escape(str(data_dir))}"):
        ALFWorld(source="official", data_dir=data_dir, object_type="Apple", cache_dir=tmp_path / "cache").reset(seed=0)

    # A trial without game.tw-pddl (as in a bare ALFRED download) is built into the cache, not the data folder.
    bare_root = tmp_path / "bare" / "json_2.1.1"
    bare = bare_root / "valid_seen" / "pick_and_place_simple-Tomato-None-Microwave-1" / "trial_1"
    shutil.copytree(dirs[0], bare)
    (bare / GAME_FILE).unlink()
    unsolvable = bare_root / "valid_seen" / "pick_and_place_simple-Tomato-None-Microwave-2" / "trial_2"
    shutil.copytree(dirs[1], unsolvable)
    marked = json.loads((unsolvable / GAME_FILE).read_text())
    (unsolvable / GAME_FILE).write_text(json.dumps({**marked, "solvable": False}))
    assert collect_problem_dirs(bare_root, "val", "pick_and_place_simple", "Tomato", "Microwave") == [bare]
    from_bare = ALFWorld(source="official", data_dir=bare_root.parent, cache_dir=tmp_path / "cache2")
    assert from_bare.tasks("val") == [str(bare)]
    assert play_oracle(from_bare, str(bare))[0]
    assert not (bare / GAME_FILE).exists()
    assert list((tmp_path / "cache2").rglob(GAME_FILE))

    # a user's trial that cannot be played is refused naming it: broken PDDL, a traj_data.json that is not JSON
    (bare / "initial_state.pddl").write_text("(define (problem broken)")
    broken = ALFWorld(source="official", data_dir=bare_root.parent, cache_dir=tmp_path / "cache3")
    with pytest.raises(UserError, match=f"ALFWorld task {re.escape(repr(str(bare)))} cannot be played: ParseError"):
        broken.reset(str(bare))
    (unsolvable / GAME_FILE).write_text(json.dumps({"solvable": True}))
    with pytest.raises(UserError, match=f"{re.escape(str(unsolvable / GAME_FILE))}: a game file's 'grammar' must be"):
        broken.reset(str(unsolvable))
    (unsolvable / GAME_FILE).write_text("[]")
    with pytest.raises(UserError, match="game.tw-pddl: expected a JSON object, got list"):
        broken.reset(str(unsolvable))
    (bare / "traj_data.json").write_text("{not json")
    with pytest.raises(UserError, match="traj_data.json is not valid JSON"):
        ALFWorld(source="official", data_dir=bare_root.parent, cache_dir=tmp_path / "cache4").tasks("val")
    for traj_data, fault in (({"task_type": "pick_and_place_simple", "pddl_params": []}, "'pddl_params' is [], not an"),
                             ({"task_type": 3, "pddl_params": {}}, "'task_type' is 3, not a string"),
                             ({"task_type": "pick_and_place_simple", "pddl_params": {"object_target": 5}},
                              "'pddl_params.object_target' is 5, not a string")):
        (bare / "traj_data.json").write_text(json.dumps(traj_data))
        with pytest.raises(UserError, match=f"{re.escape(str(bare / 'traj_data.json'))}: {re.escape(fault)}"):
            ALFWorld(source="official", data_dir=bare_root.parent, cache_dir=tmp_path / "cache4").tasks("val")


def test_make_env_builds_alfworld(cache):
    env = make_env("alfworld", source="generated", cache_dir=cache, max_steps=10, generator_options=SMALL_ROOMS)
    assert isinstance(env, ALFWorld) and env.name == "alfworld" and env.max_steps == 10
    obs = env.reset(env.tasks("train")[0])
    assert obs.actions[env.oracle_action()] == obs.info["oracle"]["next_command"]
    with pytest.raises(ValueError, match="source"):
        make_env("alfworld", source="internet")
    for options, problem in (({"bogus": 1}, "generator_options: unknown bogus; known: room, min_distractors"),
                             ({"object_type": "Apple"}, "object_type, receptacle_type are the env's own arguments"),
                             ({"min_distractors": "x"}, "argument 'min_distractors' must be int, got \"x\"")):
        with pytest.raises(UserError, match=re.escape(problem)):
            make_env("alfworld", source="generated", cache_dir=cache, generator_options=options)
    with pytest.raises(ValueError, match="task type"):
        make_env("alfworld", task_type="pick_everything")


def test_teacher_explains_and_varies_phrasing(small_env):
    obs = small_env.reset(small_env.tasks("train")[5])
    oracle = obs.info["oracle"]
    good = oracle["next_command"]
    texts = {reflect(obs, [], good, False, random.Random(seed)) for seed in range(12)}
    assert len(texts) >= 4
    for text in texts:
        assert good not in text and oracle["target_location"] in text
        assert len(text.split()) <= 60 and not re.search(r"\b(action|id)\s*\d", text, re.I)

    # A wrong move: go somewhere that holds no tomato; the reflection says why and what to do instead.
    places = set(oracle["target_locations"].values())
    wrong = next(a for a in obs.actions if a.startswith("go to ") and a[len("go to "):] not in places)
    obs, *_ = small_env.step(obs.actions.index(wrong))
    corrected = obs.info["oracle"]["next_command"]
    teacher = OracleTeacher("alfworld", seed=3)
    texts = {teacher.reflect(obs, [wrong], corrected, True) for _ in range(12)}
    assert len(texts) >= 3
    place = wrong[len("go to "):]
    assert all(place in text for text in texts)
    assert all(corrected not in text for text in texts)

    # Holding the tomato: the reflection says where it must go.
    small_env.reset(small_env.tasks("train")[5])
    while not small_env.observation.info["oracle"]["holding"]:
        small_env.step(small_env.oracle_action())
    obs = small_env.observation
    text = reflect(obs, [], obs.info["oracle"]["next_command"], False, random.Random(0))
    assert obs.info["oracle"]["holding"] in text and obs.info["oracle"]["goal_receptacle"] in text


def test_search_expert_acts_only_on_what_it_has_seen(cache):
    """Until a tomato has been seen, the search expert's moves and the teacher's words never point at it."""
    env = ALFWorld(source="generated", cache_dir=cache, expert="search", n_test=8, generator_options=SMALL_ROOMS)
    first_moves, steps_taken = set(), []
    for task in env.tasks("test"):
        obs = env.reset(task)
        oracle = obs.info["oracle"]
        first = obs.actions[env.oracle_action()]
        assert first == f"go to {oracle['likely_places'][0]}", "the search starts at the first usual place"
        first_moves.add(first)
        history: list[str] = []
        while True:
            oracle = obs.info["oracle"]
            command = obs.actions[env.oracle_action()]
            if not oracle["target_seen"]:
                assert not any(command.endswith(place) for place in oracle["searched"]), "a checked place is not searched twice"
                text = reflect(obs, history, command, False, random.Random(len(history)))
                assert oracle["target_object"] not in text and "best bet" not in text and ", where the " not in text, text
            obs, _, terminated, truncated, info = env.step(obs.actions.index(command))
            history.append(command)
            if terminated or truncated:
                break
        assert info["success"], f"the search expert failed task {task}"
        steps_taken.append(len(history))
    assert max(steps_taken) <= env.max_steps
    with pytest.raises(ValueError, match="expert must be one of planner, search"):
        ALFWorld(source="generated", cache_dir=cache, expert="psychic")


@pytest.mark.parametrize("task_type,expert", [(t, "planner") for t in GENERATED_TASK_TYPES] +
                         [("pick_and_place_simple", "search")])
def test_teacher_reflections_name_the_experts_command(cache, task_type, expert):
    """Evaluation reads which command a reflection decides on: every phrasing the teacher gives each of the
    expert's commands names that command, and so does its reflection after a wrong move."""
    env = ALFWorld(source="generated", cache_dir=cache, task_type=task_type, object_type=None,
                   receptacle_type=None, expert=expert, generator_options=SMALL_ROOMS)
    teacher = OracleTeacher("alfworld", seed=0)
    for task in env.tasks("val")[:2]:
        obs, history = env.reset(task), []
        while True:
            command = obs.actions[env.oracle_action()]
            for seed in range(8):
                text = reflect(obs, history, command, False, random.Random(seed))
                assert env.reflection_action(text, obs.actions) == obs.actions.index(command), (command, text)
            obs, _, terminated, truncated, _ = env.step(obs.actions.index(command))
            history.append(command)
            if terminated or truncated:
                break

    # a detour: the correction names the expert's new command, not the place the detour went to
    obs = env.reset(env.tasks("val")[0])
    wrong = next(a for a in obs.actions if a.startswith("go to ") and a != obs.actions[env.oracle_action()])
    obs, *_ = env.step(obs.actions.index(wrong))
    corrected = obs.actions[env.oracle_action()]
    for _ in range(8):
        text = teacher.reflect(obs, [wrong], corrected, True)
        assert env.reflection_action(text, obs.actions) == obs.actions.index(corrected), text


def test_a_reflection_without_a_decision_names_no_command(small_env):
    obs = small_env.reset(small_env.tasks("train")[0])
    command = obs.actions[small_env.oracle_action()]
    text = reflect(obs, [], command, False, random.Random(0))
    decision = text.rindex(". ") + 2
    assert small_env.reflection_action(text[:decision], obs.actions) is None  # cut off before its decision
    assert small_env.reflection_action("Now I will dance with the tomato 1.", obs.actions) is None
    assert small_env.reflection_action("I should go to the moon now.", obs.actions) is None
    place = command.removeprefix("go to ")
    assert small_env.reflection_action(f"The {place} was checked. Now I will head to the {place}.",
                                       obs.actions) == obs.actions.index(command)
