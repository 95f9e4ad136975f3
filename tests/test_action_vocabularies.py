"""Every env's own action texts parse back to their own index: alone, inside a sentence, under any labelling.

The vocabularies are the real ones: each env is built with ``make_env``, reset
on a few tasks and walked a few oracle steps, collecting ``observation.actions``.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from reflectrl.envs.action_parser import ACTION_IDS, EXTRA_ACTION_IDS, action_ids, parse_action
from reflectrl.envs.autoexplore import RepoSpec, build_tasks
from reflectrl.envs.registry import make_env

TEMPLATES = ("{}", "{}.", "`{}`", "I will {} now.", "My choice: {}", "Next: {}")
#: letter-pair labels (as a policy with a digit-splitting tokenizer uses) that are also command words
WORDY_IDS = ("id", "cd", "go", "to", "up", "on", "in")


def walk(env, tasks, steps: int) -> list[list[str]]:
    """The action lists seen while the oracle plays ``steps`` steps of each task."""
    vocabularies = []
    for task in tasks:
        obs = env.reset(task, seed=0)
        for _ in range(steps):
            vocabularies.append(list(obs.actions))
            obs, _, terminated, truncated, _ = env.step(env.oracle_action())
            if terminated or truncated:
                break
    return vocabularies


def tricky_repo(root: Path) -> Path:
    """Names that read as ids (``3``, ``a``, ``id``) and names that differ only by case."""
    for relative in ("3.txt", "a.md", "Notes.md", "notes.md", "NOTES.md", "3/setup.py", "id/id.py", "a/b.py"):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Notes about {relative}\n")
    return root


def vocabularies(name: str, tmp_path: Path) -> list[list[str]]:
    if name == "taxi":
        env = make_env("taxi")
        return walk(env, env.tasks("test")[:2], 6)
    if name == "autoexplore":
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        repos = [RepoSpec.from_path(stdlib / "json"), RepoSpec.from_path(stdlib / "email"),
                 RepoSpec.from_path(tricky_repo(tmp_path / "tricky"))]
        env = make_env("autoexplore", tasks=build_tasks(repos, max_tasks_per_repo=6))
        return walk(env, [t for split in ("train", "val", "test") for t in env.tasks(split)], 6)
    if name == "alfworld":
        pytest.importorskip("alfworld")
        pytest.importorskip("textworld")
        env = make_env("alfworld")
        return walk(env, env.tasks("test")[:1], 3)
    if name == "textworld":
        pytest.importorskip("textworld")
        env = make_env("textworld")
        return walk(env, env.tasks("test")[:1], 4)
    pytest.importorskip("minigrid")
    env = make_env("babyai")
    return walk(env, env.tasks("test")[:2], 4)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["taxi", "autoexplore", "alfworld", "textworld", "babyai"])
def test_every_action_text_of_every_env_parses_to_its_own_index(name: str, tmp_path: Path):
    seen = vocabularies(name, tmp_path)
    assert seen and all(seen)
    failures = []
    for actions in seen:
        assert len(set(actions)) == len(actions), actions
        wordy = [*WORDY_IDS, *(pair for pair in EXTRA_ACTION_IDS if pair not in WORDY_IDS)][: len(actions)]
        for ids in (action_ids(len(actions)), wordy):
            for index, text in enumerate(actions):
                for template in TEMPLATES:
                    reply = template.format(text)
                    parsed = parse_action(reply, actions, ids)
                    if parsed.index != index:
                        failures.append((reply, index, parsed, actions))
    assert not failures, failures[:5]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_step_with_more_actions_than_action_ids_parses_by_id_and_by_text(tmp_path: Path):
    """261 actions: labels run past ``ACTION_IDS`` into 200, 201, ...; file names that read as those labels stay apart."""
    root = tmp_path / "wide"
    (root / "sub").mkdir(parents=True)
    for index in range(126):
        (root / f"file_{index:03d}.md").write_text(f"# Notes number {index} of many\n")
    for name in ("200.md", "208.txt", "id.md"):
        (root / name).write_text(f"# About the name {name}\n")
    (root / "sub" / "inner.md").write_text("# Inner notes of the wide tree\n")
    env = make_env("autoexplore", tasks=build_tasks([RepoSpec.from_path(root)], max_tasks_per_repo=5))
    actions = env.reset(env.tasks("train")[0], seed=0).actions
    assert len(actions) == 1 + 2 * 129 and len(actions) > len(ACTION_IDS)
    failures = []
    pairs = [*WORDY_IDS, *(pair for pair in EXTRA_ACTION_IDS if pair not in WORDY_IDS)][:100]
    for ids in (action_ids(len(actions)), action_ids(len(actions), pairs)):
        assert len(set(ids)) == len(ids) and ids[-1].isdigit() and int(ids[-1]) >= 200
        for index, text in enumerate(actions):
            for reply in (text, f"I will {text} now.", ids[index], f"Action {ids[index]}", f"{ids[index]}. {text}"):
                parsed = parse_action(reply, actions, ids)
                if parsed.index != index:
                    failures.append((reply, index, parsed))
    assert not failures, failures[:5]
