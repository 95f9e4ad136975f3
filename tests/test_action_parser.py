"""The one shared parser from free text to an action index."""

import threading

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
    assert action_ids(len(ACTION_IDS) + 2)[-3:] == ["199", "200", "201"]


# AutoExplore's own vocabulary: a file named "3", one named "a", two names that differ only by case
EXPLORE = ["cd ..", "cat 3", "id 3", "cat setup.py", "id setup.py", "id a", "cat README", "cat readme", "id README",
           "id readme", "cd src", "cat a"]


@pytest.mark.parametrize("index", range(len(EXPLORE)))
@pytest.mark.parametrize("template", ["{}", "{}.", "`{}`", "I will {} now.", "My choice: {}", "Next I {}"])
def test_an_action_text_names_that_action_and_never_the_id_it_contains(index, template):
    assert parse_action(template.format(EXPLORE[index]), EXPLORE).index == index


def test_the_id_keyword_still_names_an_id_when_no_action_has_that_text():
    assert parse_action("id 4", ["cd ..", "cat x.py", "id x.py", "cat y.py", "id y.py"]).index == 4
    assert parse_action("Action id: 3", EXPLORE).index == 3


def test_an_id_that_contradicts_the_action_text_it_quotes_is_rejected():
    parsed = parse_action("Action 3: cat 3", EXPLORE)
    assert parsed.index is None and "cat 3" in parsed.error
    assert parse_action("Action 1: cat 3", EXPLORE).index == 1
    assert parse_action("Action 1: cat 3, not id 3", EXPLORE).index == 1


def test_texts_differing_only_by_case_stay_distinct_and_case_only_helps_when_unambiguous():
    assert parse_action("CAT SETUP.PY", EXPLORE).index == 3
    assert parse_action("please Cat Setup.py", EXPLORE).index == 3
    for reply in ("CAT README", "I will CAT README now"):
        parsed = parse_action(reply, EXPLORE)
        assert parsed.index is None and "cat README" in parsed.error and "cat readme" in parsed.error


def test_a_shorter_text_inside_a_longer_name_is_not_a_mention():
    actions = ["cat a.py", "cat a.py.bak"]
    parsed = parse_action("cat a.py.bak or cat a.py", actions)
    assert parsed.index is None and "several" in parsed.error
    assert parse_action("I will cat a.py.bak.", ["cat a.py"]).index is None


LABELLED = ["go north", "go south", "open the door", "take the key", "look", "wait", "drop it", "read the map",
            "push", "pull", "climb", "jump", "swim"]


@pytest.mark.parametrize(
    "reply",
    ["The answer is c.py", "Action: c.py", "answer: 3.5", "c.py is the answer", "The answer is a config file",
     "Action: a few steps north"],
)
def test_a_label_inside_a_name_or_a_word_is_not_a_label(reply):
    """c.py is a file name and "a" a word here: neither presents the label it starts with."""
    parsed = parse_action(reply, LABELLED)
    assert parsed.index is None and parsed.error


@pytest.mark.parametrize(
    "reply, expected",
    [("The answer is a config file, so the action is 4", 4), ("The answer is a.", 10), ("Answer: **c**", 12),
     ("My choice: (b) because it is shorter", 11), ("The answer is `c`", 12), ("Answer: 3.", 3),
     ("Action: 3\nAction: 3", 3), ("a) climb", 10)],
)
def test_a_label_is_read_where_the_reply_presents_one(reply, expected):
    assert parse_action(reply, LABELLED).index == expected


@pytest.mark.parametrize("reply", ["Action: 1 or Action: 3", "Option 2, no wait, option 5", "Answer: b. Action: c"])
def test_two_different_labels_are_ambiguous_and_invalid(reply):
    parsed = parse_action(reply, LABELLED)
    assert parsed.index is None and "several" in parsed.error


def test_a_long_reply_is_parsed_in_linear_time():
    """A 2 MB reply naming one action about 150,000 times: the quadratic parse took minutes on it, the linear
    one takes a second. The thread is a guard against hanging the suite, not a measurement."""
    reply = "cat setup.py " * 160_000
    result: list = []
    worker = threading.Thread(target=lambda: result.append(parse_action(reply, ACTIONS)), daemon=True)
    worker.start()
    worker.join(60)
    assert result and result[0].index == 2
