"""TextWorld games made by TextWorld's own generator and played through its engine.

Games are generated once per test session into a temporary cache (about a
second each), then reused by every test.
"""

from __future__ import annotations

import json
import random
import re
import shutil

import pytest

from reflectrl.envs import InvalidActionError, make_env
from reflectrl.envs.textworld import TextWorld, cached_game_damage, split_of
from reflectrl.teachers.oracle import OracleTeacher
from reflectrl.teachers.oracle.textworld import in_words, reflect


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("textworld-cache")


@pytest.fixture(scope="session")
def simple(cache_dir) -> TextWorld:
    """tw-simple, 4 train and 2 test games, generated once for the session."""
    env = make_env("textworld", challenge="tw-simple", n_train=4, n_val=0, n_test=2, cache_dir=cache_dir)
    env.prepare("train")
    env.prepare("test")
    return env


@pytest.fixture(scope="session")
def custom(cache_dir) -> TextWorld:
    env = TextWorld(
        challenge="custom",
        settings={"nb_rooms": 3, "nb_objects": 5, "quest_length": 3},
        n_train=4,
        n_val=0,
        n_test=0,
        cache_dir=cache_dir,
    )
    env.prepare("train")
    return env


def play_oracle(env: TextWorld, task: int) -> tuple[bool, float, list[str]]:
    obs = env.reset(task=task)
    total, commands = 0.0, []
    while True:
        index = env.oracle_action()
        commands.append(obs.actions[index])
        obs, reward, terminated, truncated, info = env.step(index)
        total += reward
        if terminated or truncated:
            return info["success"], total, commands


def test_make_env_builds_textworld(simple):
    assert isinstance(simple, TextWorld) and simple.name == "textworld"
    assert simple.max_steps == 30


def test_the_engine_policy_solves_the_generated_games(simple, custom):
    results = [play_oracle(simple, task) for task in simple.tasks("train") + simple.tasks("test")]
    results += [play_oracle(custom, task) for task in custom.tasks("train")]
    wins = [r for r in results if r[0]]
    assert len(wins) >= 0.95 * len(results), f"oracle won {len(wins)} of {len(results)}"
    for _, total, commands in wins:
        # score deltas are normalised by the game's maximum score: a win is worth 1
        assert total == pytest.approx(1.0)
        assert len(commands) <= simple.max_steps


def test_splits_use_disjoint_seeds_and_the_challenges_own_test_distribution(simple):
    train, test = set(simple.tasks("train")), set(simple.tasks("test"))
    assert len(train) == 4 and len(test) == 2 and not train & test
    assert {split_of(t) for t in train} == {"train"} and {split_of(t) for t in test} == {"test"}
    metadata = json.loads(simple.game_path(simple.tasks("test")[0]).with_suffix(".json").read_text())["metadata"]
    assert "+test-" in metadata["uuid"]
    metadata = json.loads(simple.game_path(0).with_suffix(".json").read_text())["metadata"]
    assert "+train-" in metadata["uuid"]
    with pytest.raises(ValueError, match="outside every split"):
        simple.reset(task=5_000_000)
    with pytest.raises(ValueError, match="unknown split"):
        simple.tasks("dev")


def test_the_cache_is_reused_by_a_second_env(simple, cache_dir):
    paths = simple.prepare("train")
    stamps = {p: (p.stat().st_mtime_ns, p.with_suffix(".json").stat().st_mtime_ns) for p in paths}
    again = TextWorld(challenge="tw-simple", n_train=4, n_val=0, n_test=2, cache_dir=cache_dir)
    assert again.prepare("train") == paths
    again.reset(task=3)
    assert {p: (p.stat().st_mtime_ns, p.with_suffix(".json").stat().st_mtime_ns) for p in paths} == stamps
    other = TextWorld(challenge="tw-simple", settings={"rewards": "balanced"}, cache_dir=cache_dir)
    assert other.game_path(0).parent != paths[0].parent
    assert not any(p.name.startswith("build-") for p in paths[0].parent.iterdir())


def test_a_damaged_cached_game_is_generated_again_not_opened(simple, tmp_path):
    # Jericho ends the whole process on a truncated story file, so the env checks a cached game before opening it
    source = simple.prepare("train")[0]
    own = tmp_path / "cache"
    shutil.copytree(source.parents[1], own / source.parents[1].name)
    story = own / source.relative_to(source.parents[2])
    story.write_bytes(source.read_bytes()[:1000])
    env = TextWorld(challenge="tw-simple", n_train=4, n_val=0, n_test=2, cache_dir=own)
    assert env.game_path(0) == story
    with pytest.warns(UserWarning, match=r"train-0.z8 is damaged \(the story file has 1000 bytes of the"):
        env.reset(task=0)
    assert story.read_bytes() == source.read_bytes()
    assert cached_game_damage(story) is None
    for text, damage in (('{"not": "a game"}', "its description is not a TextWorld game"),
                         ("{trunc", "its description cannot be read")):
        story.with_suffix(".json").write_text(text)
        assert cached_game_damage(story).startswith(damage)


def test_reset_and_replay_are_deterministic(simple):
    rng = random.Random(5)
    obs = simple.reset(task=2)
    texts, rewards, actions = [obs.text], [], []
    for _ in range(12):
        index = simple.oracle_action() if rng.random() < 0.6 else rng.randrange(len(obs.actions))
        actions.append(index)
        obs, reward, terminated, truncated, _ = simple.step(index)
        texts.append(obs.text)
        rewards.append(reward)
        if terminated or truncated:
            break
    obs = simple.reset(task=2)
    assert obs.text == texts[0]
    replay_texts, replay_rewards = [obs.text], []
    for index in actions:
        obs, reward, *_ = simple.step(index)
        replay_texts.append(obs.text)
        replay_rewards.append(reward)
    assert (replay_texts, replay_rewards) == (texts, rewards)
    drawn = [simple.reset(seed=s).info["task"] for s in range(4)]
    assert drawn == [simple.reset(seed=s).info["task"] for s in range(4)]


def test_observation_shows_goal_room_inventory_and_sorted_commands(simple):
    obs = simple.reset(task=0)
    facts = obs.info["oracle"]
    assert obs.text.startswith(f"Goal: {facts['goal']}")
    assert "grilled" in facts["goal"]
    assert f"-= {facts['location'].title()} =-" in obs.text
    assert "Inventory: You are carrying nothing." in obs.text
    assert obs.actions == sorted(set(obs.actions)) and "look" in obs.actions
    assert facts["next_command"] in obs.actions and facts["remaining_steps"] == len(facts["plan"])
    after, *_ = simple.step(simple.oracle_action())
    assert f"Recent commands: {facts['next_command']}" in after.text
    assert "Last result: You open" in after.text


def test_invalid_reply_is_a_penalised_no_op(simple):
    obs = simple.reset(task=1)
    after, reward, terminated, truncated, info = simple.invalid_step("dance wildly")
    assert reward == pytest.approx(-simple.invalid_penalty)
    assert info["invalid"] and not terminated and not truncated
    assert after.actions == obs.actions and after.info["step"] == 1
    assert "not one of the listed commands" in after.text
    assert after.info["oracle"]["plan"] == obs.info["oracle"]["plan"]
    for bad in (len(obs.actions), -1, False, "0", 1.5):
        with pytest.raises(InvalidActionError):
            simple.step(bad)
    success, *_ = play_oracle(simple, 1)
    assert success


def test_random_play_never_crashes_the_engine(cache_dir, custom):
    short = TextWorld(challenge="tw-simple", n_train=4, n_val=0, n_test=2, max_steps=10, cache_dir=cache_dir)
    short_custom = TextWorld(
        challenge="custom",
        settings={"nb_rooms": 3, "nb_objects": 5, "quest_length": 3},
        n_train=4,
        max_steps=10,
        cache_dir=cache_dir,
    )
    rng = random.Random(0)
    endings = 0
    for episode in range(80):
        env = short if episode % 2 else short_custom
        obs = env.reset(task=env.tasks("train")[episode % len(env.tasks("train"))])
        for step in range(10):
            assert obs.actions and obs.text.startswith("Goal: ")
            assert not re.search(r"=-\s*\d+/\d+|RESTART", obs.text), obs.text  # no status bar or menu
            assert 0 <= env.oracle_action() < len(obs.actions)
            if rng.random() < 0.05:
                obs, reward, terminated, truncated, info = env.invalid_step("???")
            else:
                obs, reward, terminated, truncated, info = env.step(rng.randrange(len(obs.actions)))
            if terminated or truncated:
                assert isinstance(info["success"], bool)
                assert truncated == (step == 9 and not terminated)
                endings += 1
                break
    assert endings == 80
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(0)


def test_teacher_explains_and_varies(simple):
    obs = simple.reset(task=0)
    next_command = obs.actions[simple.oracle_action()]
    texts = {reflect(obs, [], next_command, False, random.Random(seed)) for seed in range(12)}
    assert len(texts) >= 4
    for text in texts:
        assert in_words(next_command) in text
        assert obs.info["oracle"]["location"] in text
        assert not re.search(r"\d", text) and len(text.split()) <= 60

    examine = next(i for i, a in enumerate(obs.actions) if a.startswith("examine"))
    after, *_ = simple.step(examine)
    teacher = OracleTeacher("textworld", seed=1)
    wrong = teacher.reflect(after, [obs.actions[examine]], after.actions[simple.oracle_action()], True)
    assert "information" in wrong or "looked around" in wrong
    assert in_words(obs.actions[examine]) in wrong

    invalid, *_ = simple.invalid_step("hmm")
    text = teacher.reflect(invalid, [obs.actions[examine]], invalid.actions[simple.oracle_action()], True)
    assert "listed command" in text or "valid command" in text


def test_teacher_points_the_way_to_another_room(simple):
    """Once the bedroom door is open, the teacher says which room holds what the plan needs next."""
    obs = simple.reset(task=0)
    while not obs.info["oracle"]["next_command"].startswith("go "):
        obs, *_ = simple.step(simple.oracle_action())
    facts = obs.info["oracle"]
    text = reflect(obs, [], facts["next_command"], False, random.Random(0))
    direction = facts["next_command"].split()[1]
    assert direction in text and facts["target"] in text and facts["target_room"] in text
    moved, *_ = simple.step(simple.oracle_action())
    room = moved.info["oracle"]["location"]
    assert room == facts["route_rooms"][0]
    assert f"Last result: You arrive in the {room}." in moved.text


def test_in_words_adds_articles():
    assert in_words("take old key from chest drawer") == "take the old key from the chest drawer"
    assert in_words("unlock wooden door with old key") == "unlock the wooden door with the old key"
    assert in_words("go east") == "go east" and in_words("prepare meal") == "prepare the meal"


def test_bad_configuration_is_reported():
    with pytest.raises(ValueError, match="unknown challenge"):
        TextWorld(challenge="tw-zork")
    with pytest.raises(ValueError, match="unknown tw-simple settings"):
        TextWorld(settings={"recipe": 2})
    with pytest.raises(ValueError, match="task is an int"):
        TextWorld(n_train=1).reset(task="kitchen")
    # settings of the wrong type or out of range are named before any game is generated
    for challenge, settings, problem in (
            ("custom", {"nb_rooms": -1}, "custom setting nb_rooms=-1 must be at least 1"),
            ("custom", {"nb_rooms": "x"}, "custom setting nb_rooms='x' must be an integer, like its default (3)"),
            ("custom", {"quest_length": True}, "must be an integer"),
            ("tw-simple", {"rewards": "lots"}, "rewards='lots' must be one of dense, balanced, sparse"),
            ("tw-cooking", {"cook": 1}, "cook=1 must be true or false")):
        with pytest.raises(ValueError, match=re.escape(problem)):
            TextWorld(challenge=challenge, settings=settings)
