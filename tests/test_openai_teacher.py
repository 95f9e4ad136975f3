"""ChatEndpoint, OpenAITeacher and EndpointAgent against a real local chat-completions server."""

from __future__ import annotations

import base64
import json
import logging
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("openai")

from chat_server import ChatServer, derived_reply

from reflectrl.config import ConfigError, load_config
from reflectrl.envs.base import Observation
from reflectrl.envs.registry import make_env
from reflectrl.errors import UserError
from reflectrl.eval.baselines import play_episode
from reflectrl.eval.endpoint_agent import AGENT_INSTRUCTION, EndpointAgent
from reflectrl.teachers.openai_compat import (
    MAX_REFLECTION_WORDS,
    ChatEndpoint,
    EndpointError,
    OpenAITeacher,
    clean_teacher_reply,
    endpoint_from_config,
    redact_url,
)

ROOT = Path(__file__).resolve().parents[1]

TAXI_STATE = Observation(
    text="Task: pick up the passenger at Y and drop them at G.\n+---------+\n|R: | : :G|\n| : | : : |\n|T: : : : |\n| | : | : |\n|Y| : |B: |\n+---------+",
    actions=["south", "north", "east", "west", "pickup", "dropoff"],
)
REPO_STATE = Observation(
    text="Task: which file lists the package's dependencies?\nCurrent working directory: /repo",
    actions=["cd ..", "cd src", "cat README.md", "cat setup.py", "id setup.py"],
)


@pytest.fixture
def server():
    with ChatServer() as chat_server:
        yield chat_server


@pytest.fixture(scope="module")
def repo_env():
    """The env REPO_STATE comes from; an EndpointAgent is handed it but, like a zero-shot LLM, reads only the observation."""
    return make_env("autoexplore")


def endpoint_for(server: ChatServer, **kwargs) -> ChatEndpoint:
    kwargs.setdefault("backoff", 0.001)
    kwargs.setdefault("timeout", 10)
    return ChatEndpoint(server.base_url, "test-model", **kwargs)


def test_complete_returns_server_reply_and_sends_request_fields(server, monkeypatch):
    monkeypatch.setenv("REFLECTRL_TEST_KEY", "sk-local-123")
    endpoint = endpoint_for(server, api_key_env="REFLECTRL_TEST_KEY", temperature=0.5, max_tokens=77)
    messages = [{"role": "user", "content": "hello there server"}]
    assert endpoint.complete(messages) == derived_reply({"messages": messages})
    (body,) = server.requests
    assert body["model"] == "test-model"
    assert body["messages"] == messages
    assert body["temperature"] == 0.5 and body["max_tokens"] == 77
    assert server.headers[0]["authorization"] == "Bearer sk-local-123"


def test_missing_key_uses_placeholder(server, monkeypatch):
    monkeypatch.delenv("REFLECTRL_UNSET_KEY", raising=False)
    endpoint_for(server, api_key_env="REFLECTRL_UNSET_KEY").complete([{"role": "user", "content": "hi"}])
    assert server.headers[0]["authorization"].startswith("Bearer ") and len(server.headers[0]["authorization"]) > 7


def test_teacher_analyze_prompt(server):
    teacher = OpenAITeacher(endpoint_for(server), env_description="The taxi must deliver a passenger.")
    reflection = teacher.reflect(TAXI_STATE, [], "", False)
    (body,) = server.requests
    system, user = body["messages"]
    assert system["role"] == "system" and "The taxi must deliver a passenger." in system["content"]
    assert TAXI_STATE.text.splitlines()[0] in user["content"]
    assert all(f"- {action}" in user["content"] for action in TAXI_STATE.actions)
    assert "Analyze the situation" in user["content"]
    assert "Hint for you only" not in user["content"] and "was a mistake" not in user["content"]
    assert reflection == derived_reply(body)


def test_teacher_spoiler_prompt(server):
    server.queue_replies("# Analyze:\n The passenger waits at Y, straight below the taxi.  Head down there.\n# Action: 0")
    teacher = OpenAITeacher(endpoint_for(server))
    reflection = teacher.reflect(TAXI_STATE, ["north"], "south", False)
    user = server.requests[0]["messages"][1]["content"]
    assert '"south"' in user and "Do NOT reveal" in user
    assert "was a mistake" not in user
    assert reflection == "The passenger waits at Y, straight below the taxi. Head down there."


def test_teacher_wrong_choice_prompt(server):
    server.queue_replies("Moving east bumped into nothing useful; the passenger is below, so go down instead.")
    teacher = OpenAITeacher(endpoint_for(server))
    reflection = teacher.reflect(TAXI_STATE, ["north", "east"], "south", True)
    user = server.requests[0]["messages"][1]["content"]
    assert 'last action, "east", was a mistake' in user
    assert "Actions taken so far: north; east" in user
    assert '"south"' in user and "Do NOT reveal" in user
    assert reflection.startswith("Moving east bumped")
    with pytest.raises(ValueError, match="history is empty"):
        teacher.reflect(TAXI_STATE, [], "south", True)


def test_teacher_limits_length_and_rejects_empty_reflection(server):
    long_reply = " ".join(f"Sentence {i} says something about the map." for i in range(40))
    server.queue_replies(long_reply, "# Action: 3")
    teacher = OpenAITeacher(endpoint_for(server))
    reflection = teacher.reflect(TAXI_STATE, [], "south", False)
    assert len(reflection.split()) <= MAX_REFLECTION_WORDS and reflection.endswith(".")
    with pytest.raises(EndpointError, match="no reflection"):
        teacher.reflect(TAXI_STATE, ["north"], "south", False)
    assert clean_teacher_reply("Analysis: go left.") == "go left."


def test_cache_answers_without_network_even_from_fresh_instance(server, tmp_path):
    messages = [{"role": "user", "content": "cache me"}]
    first = endpoint_for(server, cache_dir=tmp_path).complete(messages)
    assert server.request_count == 1
    assert endpoint_for(server, cache_dir=tmp_path).complete(messages) == first
    assert endpoint_for(server, cache_dir=tmp_path).complete(messages) == first
    assert server.request_count == 1
    endpoint_for(server, cache_dir=tmp_path, temperature=0.7).complete(messages)
    assert server.request_count == 2
    assert not list(tmp_path.glob("*.tmp")), "temp files must be renamed into place"


def test_corrupt_cache_entry_is_ignored_and_rewritten(server, tmp_path):
    endpoint = endpoint_for(server, cache_dir=tmp_path)
    messages = [{"role": "user", "content": "fragile"}]
    good = endpoint.complete(messages)
    path = endpoint.cache_path(messages)
    path.write_text('{"request": {"trunc', encoding="utf-8")
    with pytest.warns(UserWarning, match="corrupt chat cache entry"):
        assert endpoint.complete(messages) == good
    assert server.request_count == 2
    assert json.loads(path.read_text(encoding="utf-8"))["reply"] == good
    assert endpoint.complete(messages) == good and server.request_count == 2


@pytest.mark.parametrize("status", [500, 429])
def test_retries_recover_from_two_failures(server, status):
    server.fail_next(2, status=status)
    reply = endpoint_for(server, max_retries=2).complete([{"role": "user", "content": "retry"}])
    assert reply == derived_reply(server.requests[-1])
    assert server.request_count == 3


def test_retry_after_header_is_honoured(server):
    server.fail_next(1, status=429, retry_after=0.3)
    start = time.monotonic()
    endpoint_for(server, max_retries=1).complete([{"role": "user", "content": "slow down"}])
    assert time.monotonic() - start >= 0.3
    assert server.request_count == 2


def test_exhausted_retries_name_status_url_and_message(server):
    server.fail_next(3, status=503)
    endpoint = endpoint_for(server, max_retries=2)
    with pytest.raises(EndpointError) as info:
        endpoint.complete([{"role": "user", "content": "doomed"}])
    message = str(info.value)
    assert "HTTP 503" in message and server.base_url in message and "test-model" in message
    assert "injected failure with status 503" in message and "3 attempts" in message
    assert server.request_count == 3
    assert info.value.__cause__ is not None, "the last HTTP error is chained for debugging"


def test_client_errors_are_not_retried(server):
    server.fail_next(1, status=401)
    with pytest.raises(EndpointError, match=r"HTTP 401.*REFLECTRL_NO_KEY"):
        endpoint_for(server, api_key_env="REFLECTRL_NO_KEY").complete([{"role": "user", "content": "who am i"}])
    assert server.request_count == 1


def test_connection_failure_is_retried_then_reported():
    with ChatServer() as gone:
        url = gone.base_url
    endpoint = ChatEndpoint(url, "test-model", max_retries=2, backoff=0.001, timeout=5)
    with pytest.raises(EndpointError, match=r"failed after 3 attempts") as info:
        endpoint.complete([{"role": "user", "content": "anyone?"}])
    assert url in str(info.value)


@pytest.mark.parametrize(
    ("kind", "problem"), [("not-json", "not JSON"), ("no-choices", "no choices"), ("empty-content", "empty content")]
)
def test_malformed_reply_is_a_clear_error(server, kind, problem):
    server.malform_next(kind)
    with pytest.raises(EndpointError, match="malformed reply") as info:
        endpoint_for(server).complete([{"role": "user", "content": "broken"}])
    assert problem in str(info.value) and server.base_url in str(info.value)


def test_bad_arguments_are_rejected(server):
    with pytest.raises(ValueError, match="base_url"):
        ChatEndpoint("localhost:8000", "m")
    with pytest.raises(ValueError, match="not a valid URL") as info:
        ChatEndpoint("http://alice:s3cret@[::1/v1", "m")
    assert "s3cret" not in str(info.value)
    for hostless in ("http://", "https://:8000/v1", "http:///v1"):
        with pytest.raises(ValueError, match="names no host"):
            ChatEndpoint(hostless, "m")
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        endpoint_for(server).complete([{"role": "robot", "content": "x"}])
    assert server.request_count == 0


def test_missing_openai_client_says_how_to_install(server, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match=r"pip install 'reflectrl\[openai\]'"):
        endpoint_for(server).complete([{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("Action 3", 3), ("cat setup.py", 3), ("4.", 4), ("I would choose option 1 here.", 1), ("banana split", None)],
)
def test_endpoint_agent_parses_replies(server, repo_env, reply, expected):
    server.queue_replies(reply)
    agent = EndpointAgent(endpoint_for(server))
    index, raw = agent.act(repo_env, REPO_STATE)
    assert (index, raw) == (expected, reply)
    assert (agent.last_parse_error is None) == (expected is not None)
    system, user = server.requests[0]["messages"]
    assert system["content"] == AGENT_INSTRUCTION
    assert user["content"].startswith(REPO_STATE.text)
    assert "0. cd ..\n1. cd src\n2. cat README.md\n3. cat setup.py\n4. id setup.py\n" in user["content"]


def test_endpoint_agent_custom_instruction(server, repo_env):
    server.queue_replies("2")
    agent = EndpointAgent(endpoint_for(server), instruction="Pick wisely.")
    assert agent.act(repo_env, REPO_STATE) == (2, "2")
    assert server.requests[0]["messages"][0]["content"] == "Pick wisely."


def test_endpoint_agent_and_teacher_on_a_real_taxi_episode(server):
    env = make_env("taxi")
    observation = env.reset(seed=0)
    good = env.oracle_action()
    teacher = OpenAITeacher(endpoint_for(server), env_description="A 5x5 taxi grid.")
    server.queue_replies("The passenger is up and to the right, so start moving that way.")
    assert teacher.reflect(observation, [], observation.actions[good], False).startswith("The passenger is up")
    assert f'"{observation.actions[good]}"' in server.requests[-1]["messages"][1]["content"]

    server.queue_replies(f"I will {observation.actions[good]}.", "Let me think about it.")
    agent = EndpointAgent(endpoint_for(server))
    index, _ = agent.act(env, observation)
    assert index == good
    _, _, terminated, _, _ = env.step(index)
    assert not terminated
    index, reply = agent.act(env, env.observation)
    assert index is None
    _, reward, _, _, _ = env.invalid_step(reply)
    assert reward < 0


def test_endpoint_agent_plays_episodes_through_the_evaluator():
    """play_episode/evaluate_agent call ``act(env, observation)``, like every sequential agent."""
    env = make_env("taxi", stage="pickup")
    with ChatServer(action_ids=True) as server:
        result = play_episode(env, EndpointAgent(endpoint_for(server)), seed=3)
    assert result.steps >= 1 and result.invalid_actions == 0
    assert server.request_count == result.steps


@pytest.mark.parametrize("part", ["body", "headers"])
def test_dripping_server_hits_the_total_deadline(server, part):
    server.drip_next(part, seconds=10)
    endpoint = endpoint_for(server, timeout=1, max_retries=0)
    start = time.monotonic()
    with pytest.raises(EndpointError, match=r"no complete reply within 1s") as info:
        endpoint.complete([{"role": "user", "content": "take your time"}])
    assert time.monotonic() - start < 5, "the 1s limit, plus slack for a busy machine, not the 10s drip"
    assert server.base_url in str(info.value)


def test_deadline_miss_is_retried(server):
    server.drip_next("body", seconds=6)
    messages = [{"role": "user", "content": "second try"}]
    assert endpoint_for(server, timeout=1, max_retries=1).complete(messages) == derived_reply({"messages": messages})
    assert server.request_count == 2


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "until-close"])
def test_huge_reply_is_refused_not_retried(server, sized):
    server.huge_next(3_000_000, sized=sized)
    endpoint = endpoint_for(server, max_reply_bytes=100_000, max_retries=2)
    with pytest.raises(EndpointError, match=r"reply larger than 100000 bytes") as info:
        endpoint.complete([{"role": "user", "content": "tell me everything"}])
    assert server.base_url in str(info.value)
    assert server.request_count == 1


def test_reply_within_the_size_cap_is_accepted(server):
    server.huge_next(50_000)
    reply = endpoint_for(server, max_reply_bytes=100_000).complete([{"role": "user", "content": "a lot"}])
    assert len(reply) >= 49_000


def test_rejected_teacher_reply_is_not_cached(server, tmp_path):
    server.queue_replies("# Action: 3", "Head south to reach the passenger.")
    teacher = OpenAITeacher(endpoint_for(server, cache_dir=tmp_path))
    with pytest.raises(EndpointError, match="no reflection"):
        teacher.reflect(TAXI_STATE, [], "south", False)
    assert not list(tmp_path.iterdir()), "a rejected reply must not be cached"
    assert teacher.reflect(TAXI_STATE, [], "south", False) == "Head south to reach the passenger."
    assert teacher.reflect(TAXI_STATE, [], "south", False) == "Head south to reach the passenger."
    assert server.request_count == 2


def test_cached_reply_the_caller_now_rejects_is_asked_again(server, tmp_path):
    """A cache written before a stricter check (or by an older version) heals itself."""
    endpoint = endpoint_for(server, cache_dir=tmp_path)
    messages = [{"role": "user", "content": "judge me"}]
    server.queue_replies("unusable")
    assert endpoint.complete(messages) == "unusable"

    def accept(reply: str) -> str:
        if reply == "unusable":
            raise ValueError("no good")
        return reply.upper()

    with pytest.warns(UserWarning, match=r"rejects the cached reply.*no good"):
        assert endpoint.complete(messages, accept=accept) == derived_reply({"messages": messages}).upper()
    assert endpoint.complete(messages, accept=accept) == derived_reply({"messages": messages}).upper()
    assert server.request_count == 2


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("http://alice:s3cret@127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("https://sk-s3cret@api.example.com/v1/", "https://api.example.com/v1/"),
        ("https://api.example.com/v1?api_key=s3cret", "https://api.example.com/v1?api_key=REDACTED"),
        ("http://h:81/v1?api-version=2024-02&Token=s3cret&sig=s3cret", "http://h:81/v1?api-version=2024-02&Token=REDACTED&sig=REDACTED"),
        ("http://[::1]:8000/v1?x-api-key=s3cret#frag", "http://[::1]:8000/v1?x-api-key=REDACTED#frag"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    assert redact_url(expected) == expected
    assert redact_url("http://alice:s3cret@[::1/v1") == "REDACTED", "an unparsable URL is not shown at all"


def test_credentials_in_base_url_are_used_but_never_written(server, tmp_path, caplog):
    secrets = ("pw-s3cret", "key-s3cret")
    host = server.base_url.removeprefix("http://").removesuffix("/v1")
    endpoint = ChatEndpoint(f"http://alice:pw-s3cret@{host}/v1?api_key=key-s3cret", "test-model",
                            cache_dir=tmp_path, backoff=0.001, timeout=10, max_retries=1)
    messages = [{"role": "user", "content": "who am i"}]
    server.fail_next(1, status=500)
    with caplog.at_level(logging.WARNING):
        assert endpoint.complete(messages) == derived_reply({"messages": messages})
    assert server.paths[-1] == "/v1/chat/completions?api_key=key-s3cret", "the server still gets its credentials"
    wrong_path = ChatEndpoint(f"http://alice:pw-s3cret@{host}/nope?api_key=key-s3cret", "test-model", max_retries=0)
    with pytest.raises(EndpointError, match="HTTP 404") as info:
        wrong_path.complete(messages)
    assert info.value.__cause__ is None, "the HTTP error may echo the URL, so it is not chained"
    written = [str(info.value), repr(endpoint), repr(wrong_path), caplog.text]
    written += [path.read_text(encoding="utf-8") + path.name for path in tmp_path.iterdir()]
    assert caplog.text and len(written) == 5
    for text in written:
        assert not any(secret in text for secret in secrets), text


def test_endpoint_errors_are_user_errors(server):
    server.fail_next(1, status=400)
    with pytest.raises(UserError, match="HTTP 400"):
        endpoint_for(server).complete([{"role": "user", "content": "x"}])
    with pytest.raises(UserError, match="base_url"):
        ChatEndpoint("localhost:8000", "m")


def test_a_huge_error_reply_is_read_only_to_a_cap(server):
    """A 500 with a 40 MB body: each attempt reads its first kB and hangs up, instead of reading it all."""
    for _ in range(2):
        server.error_next(500, size=40_000_000)
    with pytest.raises(EndpointError, match=r"after 2 attempts; last error: HTTP 500: .*injected failure") as info:
        endpoint_for(server, max_retries=1).complete([{"role": "user", "content": "x"}])
    assert len(str(info.value)) < 1000 and "\n" not in str(info.value)
    assert server.wait_delivered(2) == [False, False], "the client hung up on both bodies before their end"


def test_a_long_error_message_becomes_one_short_line(server):
    server.error_next(400, message="bad request\nsee below", size=5_000_000)
    with pytest.raises(EndpointError, match=r"refused the request: HTTP 400: .*bad request") as info:
        endpoint_for(server).complete([{"role": "user", "content": "x"}])
    assert len(str(info.value)) < 1000 and "\n" not in str(info.value)
    server.error_next(400, message="bad request\nsee below", size=20_000)
    with pytest.raises(EndpointError, match=r"HTTP 400: bad request see below more detail .*\.\.\.$") as info:
        endpoint_for(server).complete([{"role": "user", "content": "x"}])
    assert len(str(info.value)) < 1000


def test_an_endless_error_reply_is_dropped_at_the_deadline(server):
    """No worker thread goes on reading an error body after the call gave up on it."""
    server.error_next(503, size=6000, drip_seconds=60)
    with pytest.raises(EndpointError, match=r"no complete reply within 1s"):
        endpoint_for(server, timeout=1, max_retries=0).complete([{"role": "user", "content": "x"}])
    assert server.cut_off.wait(20), "the client hangs up within a byte of the deadline, not after 60 s of drip"


def test_url_credentials_go_as_basic_auth_and_an_echo_of_them_is_redacted(server, monkeypatch):
    monkeypatch.delenv("REFLECTRL_UNSET_KEY", raising=False)
    host = server.base_url.removeprefix("http://").removesuffix("/v1")
    endpoint = ChatEndpoint(f"http://alice:pw-s3cret@{host}/v1", "test-model", api_key_env="REFLECTRL_UNSET_KEY",
                            max_retries=0)
    endpoint.complete([{"role": "user", "content": "who am i"}])
    encoded = base64.b64encode(b"alice:pw-s3cret").decode()
    assert server.headers[0]["authorization"] == f"Basic {encoded}"
    server.error_next(400, message="unexpected header Authorization: {authorization}")
    with pytest.raises(EndpointError, match="unexpected header Authorization: Basic REDACTED") as info:
        endpoint.complete([{"role": "user", "content": "again"}])
    assert encoded not in str(info.value) and "pw-s3cret" not in str(info.value)


def test_url_credentials_and_an_api_key_together_are_refused(server, monkeypatch):
    """They would both need the one Authorization header: the key would silently never reach the server."""
    monkeypatch.setenv("REFLECTRL_TEST_KEY", "sk-local-123")
    host = server.base_url.removeprefix("http://").removesuffix("/v1")
    with pytest.raises(UserError, match=r"user:password.*\$REFLECTRL_TEST_KEY holds an API key") as info:
        ChatEndpoint(f"http://alice:pw-s3cret@{host}/v1", "test-model", api_key_env="REFLECTRL_TEST_KEY")
    assert "pw-s3cret" not in str(info.value) and "sk-local-123" not in str(info.value)
    assert server.request_count == 0


def test_the_recipe_sets_deadline_and_attempts_and_rejects_impossible_ones():
    config = load_config(ROOT / "configs" / "taxi-tiny.yaml", {"teacher.timeout": 2.5, "teacher.attempts": 3})
    endpoint = endpoint_from_config(config.teacher, cache_dir="somewhere")
    assert (endpoint.timeout, endpoint.max_retries, endpoint.cache_dir.name) == (2.5, 2, "somewhere")
    for key, value in [("teacher.timeout", float("inf")), ("teacher.timeout", 0), ("eval.endpoint.attempts", 0)]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(ROOT / "configs" / "taxi-tiny.yaml", {key: value})
