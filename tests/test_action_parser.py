"""The one shared parser from free text to an action index."""

import pytest

from reflectrl.envs.action_parser import ACTION_IDS, action_ids, parse_action

ACTIONS = ["cd ..", "cd email", "cat setup.py", "id setup.py", "cat README.md", "id README.md"]


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("3", 3),
        ("3.", 3),
        (" 2 ", 2),
        ("Action 3", 3),
        ("action: 4", 4),
        ("The answer is 5", 5),
        ("cat setup.py", 2),
        ("`cd email`", 1),
        ("I will cat setup.py now", 2),
        ("1. cd email", 1),
        ("(0) go up", 0),
    ],
)
def test_replies_map_to_the_named_action(reply, expected):
    assert parse_action(reply, ACTIONS).index == expected


@pytest.mark.parametrize("reply", ["", "   ", "banana", "9", "Action 42", "cat", "setup"])
def test_unparseable_replies_are_explicitly_invalid(reply):
    parsed = parse_action(reply, ACTIONS)
    assert parsed.index is None and not parsed.valid
    assert parsed.error


def test_action_texts_that_contain_each_other_resolve_to_the_longest():
    actions = ["cat a.py", "cat a.py.bak"]
    assert parse_action("cat a.py.bak", actions).index == 1
    assert parse_action("please cat a.py", actions).index == 0


def test_two_different_actions_named_is_ambiguous():
    parsed = parse_action("cat setup.py or cat README.md", ACTIONS)
    assert parsed.index is None and "several" in parsed.error


def test_shuffled_labels_are_honoured():
    ids = ["b", "0", "a", "3", "1", "2"]
    assert parse_action("a", ACTIONS, ids).index == 2
    assert parse_action("Action 0", ACTIONS, ids).index == 1


def test_ids_are_unique_and_many():
    assert len(set(ACTION_IDS)) == len(ACTION_IDS) >= 200
    assert action_ids(12)[10:] == ["a", "b"]
    with pytest.raises(ValueError, match="at most"):
        action_ids(len(ACTION_IDS) + 1)
