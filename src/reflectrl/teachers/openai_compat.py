"""An OpenAI-compatible chat endpoint, and the LLM teacher built on it.

The paper's teacher is GPT-4; any server speaking the chat-completions protocol
(OpenAI, vLLM, llama.cpp, Ollama, ...) can play that role here. Teacher calls
are slow and cost money, so every reply is cached on disk by a hash of the full
request: regenerating a data set, or resuming a crashed run, never pays twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from reflectrl.envs.base import Observation
from reflectrl.teachers.base import Teacher

log = logging.getLogger(__name__)

#: sent when the key variable is unset: local servers accept any key, and the
#: OpenAI client refuses to start without one
PLACEHOLDER_API_KEY = "no-key-set"
#: statuses worth retrying: timeouts, rate limits, server errors
_RETRYABLE_STATUS = frozenset({408, 429})
#: longest single wait between attempts, whatever the backoff or Retry-After says
MAX_RETRY_DELAY = 120.0
_ROLES = frozenset({"system", "user", "assistant"})


class EndpointError(RuntimeError):
    """A chat endpoint failed after all retries, or replied with something unusable."""


def _load_openai() -> Any:
    """Import the optional ``openai`` client, or say how to install it."""
    try:
        import openai
    except ImportError as err:
        raise ImportError(
            "the OpenAI-compatible chat endpoint needs the openai client; install it with: "
            "pip install 'reflectrl[openai]'"
        ) from err
    return openai


def _check_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES or not isinstance(message.get("content"), str):
            raise ValueError(
                f"messages[{i}] must be a dict with 'role' in {sorted(_ROLES)} and a str 'content', got {message!r}"
            )


def _server_message(err: Any) -> str:
    """The server's own words from an openai status error (its JSON ``message`` when it sent one)."""
    body = getattr(err, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return str(getattr(err, "message", err))


class ChatEndpoint:
    """One model behind an OpenAI-compatible ``/chat/completions`` URL, with retries and a disk cache.

    Retries (``max_retries`` more attempts after the first) cover rate limits
    (429), timeouts (408), server errors (5xx) and connection failures; the wait
    doubles each time from ``backoff`` seconds, or follows the server's
    ``Retry-After`` when that is longer. The openai client's own retries are
    off so that this one policy applies, and so tests can make it fast.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        cache_dir: str | Path | None = None,
        max_retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 60,
        temperature: float = 0.0,
        max_tokens: int = 256,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {base_url!r}")
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty model name, got {model!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0 seconds, got {backoff}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._client: Any = None

    def __repr__(self) -> str:
        return f"ChatEndpoint(base_url={self.base_url!r}, model={self.model!r})"

    def request(self, messages: list[dict]) -> dict[str, Any]:
        """Everything that determines the reply; its hash is the cache key."""
        _check_messages(messages)
        return {
            "base_url": self.base_url,
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def cache_path(self, messages: list[dict]) -> Path | None:
        """Where the reply to ``messages`` is (or would be) cached; None without a cache dir."""
        if self.cache_dir is None:
            return None
        canonical = json.dumps(self.request(messages), sort_keys=True, ensure_ascii=False)
        return self.cache_dir / f"{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}.json"

    def complete(self, messages: list[dict]) -> str:
        """The assistant's reply to ``messages``: from the cache when present, else from the server."""
        request = self.request(messages)
        path = self.cache_path(messages)
        if path is not None:
            cached = self._read_cache(path, request)
            if cached is not None:
                return cached
        reply = self._fetch(request)
        if path is not None:
            self._write_cache(path, request, reply)
        return reply

    def _read_cache(self, path: Path, request: dict[str, Any]) -> str | None:
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(entry, dict) or entry.get("request") != request:
                raise ValueError("entry does not hold this request")
            reply = entry.get("reply")
            if not isinstance(reply, str) or not reply.strip():
                raise ValueError("entry has no reply text")
        except (OSError, ValueError) as err:
            warnings.warn(f"ignoring corrupt chat cache entry {path} ({err}); asking the server again", stacklevel=3)
            return None
        return reply

    def _write_cache(self, path: Path, request: dict[str, Any], reply: str) -> None:
        """Write through a temp file and rename, so a crash leaves either no entry or a whole one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as tmp:
                json.dump({"request": request, "reply": reply}, tmp, ensure_ascii=False)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _openai_client(self) -> Any:
        if self._client is None:
            openai = _load_openai()
            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=os.environ.get(self.api_key_env) or PLACEHOLDER_API_KEY,
                max_retries=0,
                timeout=self.timeout,
            )
        return self._client

    def _where(self) -> str:
        return f"chat endpoint {self.base_url}/chat/completions (model {self.model!r})"

    def _retry_delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * 2**attempt
        if retry_after is not None:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, MAX_RETRY_DELAY)

    def _fetch(self, request: dict[str, Any]) -> str:
        openai = _load_openai()
        client = self._openai_client()
        attempts = self.max_retries + 1
        attempt = 0
        last_error: Exception | None = None
        while True:
            retry_after = None
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=request["model"],
                    messages=request["messages"],
                    temperature=request["temperature"],
                    max_tokens=request["max_tokens"],
                )
            except openai.APIStatusError as err:
                status = err.status_code
                failure = f"HTTP {status}: {_server_message(err)}"
                if status in (401, 403):
                    failure += f" (is ${self.api_key_env} set to a valid key?)"
                if status not in _RETRYABLE_STATUS and status < 500:
                    raise EndpointError(f"{self._where()} refused the request: {failure}") from err
                retry_after = err.response.headers.get("retry-after")
                last_error = err
            except openai.APIConnectionError as err:
                failure = f"{err.message} ({err.__cause__ or type(err).__name__})"
                last_error = err
            else:
                return self._reply_text(raw.http_response.status_code, raw.http_response.text)
            if attempt == self.max_retries:
                raise EndpointError(f"{self._where()} failed after {attempts} attempts; last error: {failure}") from last_error
            delay = self._retry_delay(attempt, retry_after)
            log.warning("%s: %s; retrying in %.2fs (attempt %d of %d)", self._where(), failure, delay, attempt + 2, attempts)
            time.sleep(delay)
            attempt += 1

    def _reply_text(self, status: int, body: str) -> str:
        """The first choice's content, or a clear error saying what the reply lacked."""
        def malformed(problem: str) -> EndpointError:
            return EndpointError(f"{self._where()} sent a malformed reply (HTTP {status}): {problem}; body: {body[:300]!r}")

        try:
            data = json.loads(body)
        except ValueError:
            raise malformed("not JSON") from None
        if not isinstance(data, dict):
            raise malformed("not a JSON object")
        if "error" in data:
            raise malformed(f"server error {data['error']!r}")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise malformed("no choices")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str) or not content.strip():
            refusal = message.get("refusal") if isinstance(message, dict) else None
            raise malformed(f"empty content (refusal: {refusal!r})" if refusal else "empty content")
        return content


TEACHER_SYSTEM_PROMPT = """\
You coach an agent that acts in a text environment, one action per turn. {env_description}
You write a short analysis that helps the agent choose its next action: what the \
situation is, what matters now, and what to do next, in plain words.
Write at most three sentences (under {max_words} words). Refer to actions by what \
they do, never by a number or id, and never write "# Action"."""

TEACHER_STATE_PROMPT = """\
Current state:
{state}

Actions taken so far: {history}

Valid actions now:
{actions}"""

#: (c) negative examples: the teacher knows the last move was a mistake
WRONG_CHOICE_PROMPT = """\
The agent's last action, "{last_action}", was a mistake. Explain briefly why it \
was wrong and what the agent should do instead."""

#: (b) the spoiler: the teacher knows the next good action but must reason, not tell
SPOILER_PROMPT = """\
Hint for you only: an expert would take the action "{next_good_action}" next. Do \
NOT reveal or quote this action verbatim; reason towards it instead, explaining \
from the state why it is the right move, so the agent can work it out itself."""

#: (a) the analysis every reflection is: situation and plan, briefly
ANALYZE_PROMPT = """\
Analyze the situation and plan the next step in at most three sentences. Reply \
with the analysis only."""

#: the reflector's output budget (~100 tokens in the paper)
MAX_REFLECTION_WORDS = 60

_ACTION_MARKER = re.compile(r"#+\s*action\b.*", re.I | re.S)
_ANALYZE_PREFIX = re.compile(r"^\s*(?:#+\s*)?(?:analy[sz]e|analysis)\s*:\s*", re.I)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def clean_teacher_reply(reply: str, max_words: int = MAX_REFLECTION_WORDS) -> str:
    """A reflection fit for the SFT set: no markers, one paragraph, cut to ``max_words`` at a sentence end."""
    text = _ACTION_MARKER.sub("", _ANALYZE_PREFIX.sub("", reply.strip()))
    text = " ".join(text.split()).strip("\"'` ")
    words = text.split()
    if len(words) <= max_words:
        return text
    cut = " ".join(words[:max_words])
    sentence_ends = [m.end() for m in _SENTENCE_END.finditer(cut)]
    if sentence_ends and sentence_ends[-1] >= len(cut) // 2:
        return cut[: sentence_ends[-1]]
    return cut


class OpenAITeacher(Teacher):
    """The paper's GPT-4 teacher: an LLM behind a ``ChatEndpoint`` writes each reflection.

    An empty ``next_good_action`` asks for a plain analysis; a non-empty one is
    shown as a spoiler the teacher must not reveal; ``was_last_action_wrong``
    adds that ``history[-1]`` was a mistake to explain and correct.
    """

    def __init__(self, endpoint: ChatEndpoint, env_description: str = "") -> None:
        self.endpoint = endpoint
        self.env_description = env_description.strip()

    def messages(
        self,
        state: Observation,
        history: list[str],
        next_good_action: str,
        was_last_action_wrong: bool,
    ) -> list[dict[str, str]]:
        """The chat request for one reflection (kept separate so data tools can log or cache it)."""
        if was_last_action_wrong and not history:
            raise ValueError("was_last_action_wrong=True needs the wrong action as history[-1], but history is empty")
        system = TEACHER_SYSTEM_PROMPT.format(env_description=self.env_description, max_words=MAX_REFLECTION_WORDS)
        parts = [
            TEACHER_STATE_PROMPT.format(
                state=state.text.strip(),
                history="; ".join(history) if history else "none yet",
                actions="\n".join(f"- {action}" for action in state.actions),
            )
        ]
        if was_last_action_wrong:
            parts.append(WRONG_CHOICE_PROMPT.format(last_action=history[-1]))
        if next_good_action.strip():
            parts.append(SPOILER_PROMPT.format(next_good_action=next_good_action.strip()))
        parts.append(ANALYZE_PROMPT)
        system = "\n".join(line.rstrip() for line in system.splitlines())
        return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]

    def reflect(
        self,
        state: Observation,
        history: list[str],
        next_good_action: str,
        was_last_action_wrong: bool,
    ) -> str:
        reply = self.endpoint.complete(self.messages(state, history, next_good_action, was_last_action_wrong))
        reflection = clean_teacher_reply(reply)
        if not reflection:
            raise EndpointError(f"{self.endpoint!r} replied {reply!r}, which holds no reflection once markers are removed")
        return reflection
