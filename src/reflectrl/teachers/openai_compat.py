"""An OpenAI-compatible chat endpoint, and the LLM teacher built on it.

The paper's teacher is GPT-4; any server speaking the chat-completions protocol
(OpenAI, vLLM, llama.cpp, Ollama, ...) can play that role here. Teacher calls
are slow and cost money, so every reply the caller accepts is cached on disk by
a hash of the full request: regenerating a data set, or resuming a crashed run,
never pays twice, and a reply the caller rejected is asked again rather than
kept. Credentials written into the URL reach the server but never a cache file,
a log line or an error message (``redact_url``).

Every failure a user can act on (the server refuses, replies with something
unusable, or misses the deadline) is an ``EndpointError``, a ``UserError``: the
command line prints its one line and exits with code 2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar, overload
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit, urlunsplit

from reflectrl.envs.base import Observation
from reflectrl.errors import UserError
from reflectrl.run_files import atomic_file
from reflectrl.teachers.base import Teacher

if TYPE_CHECKING:
    from reflectrl.config import TeacherConfig

log = logging.getLogger(__name__)

#: sent when the key variable is unset: local servers accept any key, and the
#: OpenAI client refuses to start without one
PLACEHOLDER_API_KEY = "no-key-set"
#: statuses worth retrying: timeouts, rate limits, server errors
_RETRYABLE_STATUS = frozenset({408, 429})
#: longest single wait between attempts, whatever the backoff or Retry-After says
MAX_RETRY_DELAY = 120.0
#: default cap on one reply's size: a chat completion of a few hundred tokens is a few kB
MAX_REPLY_BYTES = 1 << 20
#: how much of a reply with an error status is read: its message is shown, cut to MAX_MESSAGE_CHARS
ERROR_BODY_BYTES = 1 << 16
#: longest server message an error quotes
MAX_MESSAGE_CHARS = 300
#: what a credential is replaced with in anything written
REDACTED = "REDACTED"
#: query parameters whose value is a credential (matched anywhere in the name, any case)
_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential", re.I)
_ROLES = frozenset({"system", "user", "assistant"})

_T = TypeVar("_T")


class EndpointError(UserError, RuntimeError):
    """A chat endpoint refused, failed after all retries, or replied with something unusable."""


class MissingClientError(UserError, ImportError):
    """The optional openai client is not installed."""


class _Overdue(Exception):
    """One attempt ran past its total time limit."""


class _ReplyTooLarge(Exception):
    """A reply is (or says it is) larger than the size cap."""


class _StatusReply(Exception):
    """A reply with an error status: its status, ``Retry-After`` header and the server's words (scrubbed)."""

    def __init__(self, status: int, retry_after: str | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.retry_after = retry_after
        self.message = message


def redact_url(url: str) -> str:
    """``url`` without credentials: what may go into logs, errors, cache files and saved recipes.

    Userinfo (``user:password@``) is dropped and the value of every secret-looking
    query parameter (``api_key``, ``token``, ``sig``, ...) becomes ``REDACTED``;
    scheme, host, path and parameter names stay, so the text still says where.
    A URL holding no credentials comes back unchanged, and one that cannot be
    parsed (so cannot be checked) comes back as ``REDACTED``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc.rpartition("@")[2]
    fields = []
    for field in parts.query.split("&") if parts.query else []:
        name, sep, value = field.partition("=")
        fields.append(f"{name}={REDACTED}" if sep and value and _SECRET_PARAM.search(unquote(name)) else field)
    query = "&".join(fields)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _url_secrets(url: str) -> list[str]:
    """The credentials ``redact_url`` removes, as they may appear in text (raw and decoded), longest first."""
    parts = urlsplit(url)
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        found.update([userinfo, *userinfo.split(":")])
        # the HTTP client sends them as Basic auth (base64 of the decoded "user:password"), which a server may echo
        user, _, password = userinfo.partition(":")
        for pair in (userinfo, f"{unquote(user)}:{unquote(password)}"):
            found.add(base64.b64encode(pair.encode()).decode())
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if value and _SECRET_PARAM.search(name):
            found.update([value, quote(value, safe=""), quote_plus(value)])
    found.update([unquote(secret) for secret in found])
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def _load_openai() -> Any:
    """Import the optional ``openai`` client, or say how to install it."""
    try:
        import openai
    except ImportError as err:
        raise MissingClientError(
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


def _server_words(body: bytes) -> str:
    """The server's own words in an error reply: its JSON error ``message`` when it sent one, else the body."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    error = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return error if isinstance(error, str) else text


def _one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters: a server's message goes into a one-line error."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _as_is(reply: str) -> str:
    return reply


def _read_until(chunks: Any, limit: int, deadline: float) -> tuple[bytes, bool]:
    """At most ``limit`` bytes from ``chunks``, and whether more came; ``_Overdue`` once past ``deadline``."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
        if time.monotonic() > deadline:
            raise _Overdue()
    return bytes(body), False


class ChatEndpoint:
    """One model behind an OpenAI-compatible ``/chat/completions`` URL, with retries, limits and a disk cache.

    Retries (``max_retries`` more attempts after the first) cover rate limits
    (429), timeouts (408), server errors (5xx), connection failures and attempts
    that ran out of time; the wait doubles each time from ``backoff`` seconds, or
    follows the server's ``Retry-After`` when that is longer. The openai client's
    own retries are off so that this one policy applies, and so tests can make
    it fast.

    ``timeout`` bounds one attempt in all, from connecting to the reply's last
    byte, whatever its status (an HTTP client's timeout bounds each read, so a
    server that drips bytes would hold a call forever). A reply over
    ``max_reply_bytes`` is refused without being read to its end; of a reply with
    an error status only the first ``ERROR_BODY_BYTES`` are read, for its message.
    Credentials in ``base_url`` (userinfo, or query parameters such as
    ``api_key``) are sent to the server and nowhere else: ``self.base_url`` is
    the redacted URL. Userinfo travels as HTTP Basic auth, in the one
    Authorization header that would carry the key, so a URL holding it while
    ``$api_key_env`` holds a key is refused rather than one of them dropped.
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
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            shown = redact_url(base_url) if isinstance(base_url, str) else base_url
            raise UserError(f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {shown!r}")
        try:
            host = urlsplit(base_url).hostname
        except ValueError as err:
            raise UserError(f"base_url {redact_url(base_url)!r} is not a valid URL: {err}") from None
        if not host:
            raise UserError(f"base_url {redact_url(base_url)!r} names no host; e.g. 'http://127.0.0.1:8000/v1'")
        if not isinstance(model, str) or not model.strip():
            raise UserError(f"model must be a non-empty model name, got {model!r}")
        if max_retries < 0:
            raise UserError(f"max_retries must be >= 0, got {max_retries}")
        if backoff < 0:
            raise UserError(f"backoff must be >= 0 seconds, got {backoff}")
        if timeout <= 0:
            raise UserError(f"timeout must be > 0 seconds, got {timeout}")
        if max_tokens <= 0:
            raise UserError(f"max_tokens must be > 0, got {max_tokens}")
        if max_reply_bytes <= 0:
            raise UserError(f"max_reply_bytes must be > 0, got {max_reply_bytes}")
        self._url = base_url.rstrip("/")
        self._secrets = _url_secrets(self._url)
        self.base_url = redact_url(self._url)
        self._api_key = os.environ.get(api_key_env)
        if self._api_key and "@" in urlsplit(self._url).netloc:
            raise UserError(f"base_url {self.base_url!r} holds user:password (sent as HTTP Basic auth) and "
                            f"${api_key_env} holds an API key (sent as a Bearer token), but a request carries "
                            "one Authorization header: remove user:password from the URL, or name an unset "
                            "variable as the API key's")
        self.model = model
        self.api_key_env = api_key_env
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_reply_bytes = max_reply_bytes
        self._client: Any = None
        #: the deadline of the attempt a worker thread runs, for the response hook that thread calls
        self._attempt_state = threading.local()

    def __repr__(self) -> str:
        return f"ChatEndpoint(base_url={self.base_url!r}, model={self.model!r})"

    def request(self, messages: list[dict]) -> dict[str, Any]:
        """Everything that determines the reply; its hash is the cache key (the URL redacted)."""
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

    @overload
    def complete(self, messages: list[dict]) -> str: ...

    @overload
    def complete(self, messages: list[dict], accept: Callable[[str], _T]) -> _T: ...

    def complete(self, messages: list[dict], accept: Callable[[str], Any] | None = None) -> Any:
        """The reply to ``messages`` as ``accept(reply)`` makes it (the reply itself without ``accept``).

        ``accept`` raises when the caller cannot use a reply, and only a reply it
        accepted is cached: a bad reply is asked again on the next run instead of
        failing forever. A cached reply it now rejects (cached before a stricter
        check) is dropped with a warning and asked again.
        """
        use = _as_is if accept is None else accept
        request = self.request(messages)
        path = self.cache_path(messages)
        if path is not None:
            cached = self._read_cache(path, request)
            if cached is not None:
                try:
                    return use(cached)
                except Exception as err:
                    warnings.warn(f"{self._where()}: the caller rejects the cached reply in {path} ({err}); "
                                  "asking the server again", stacklevel=2)
                    path.unlink(missing_ok=True)
        reply = self._fetch(request)
        result = use(reply)
        if path is not None:
            self._write_cache(path, request, reply)
        return result

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
        with atomic_file(path, encoding="utf-8") as handle:
            json.dump({"request": request, "reply": reply}, handle, ensure_ascii=False)

    def _openai_client(self) -> Any:
        """The client, given the URL's query parameters as default query (the client would append its
        path after them). Its HTTP client follows no redirect and hands every reply with an error
        status to ``_refuse_status`` before the openai client would read that reply's whole body."""
        if self._client is None:
            openai = _load_openai()
            url, _, query = self._url.partition("?")
            self._client = openai.OpenAI(
                base_url=url,
                api_key=self._api_key or PLACEHOLDER_API_KEY,
                default_query=dict(parse_qsl(query, keep_blank_values=True)) or None,
                max_retries=0,
                timeout=self.timeout,
                http_client=openai.DefaultHttpxClient(follow_redirects=False,
                                                      event_hooks={"response": [self._refuse_status]}),
            )
        return self._client

    def _where(self) -> str:
        return f"chat endpoint {self.base_url}/chat/completions (model {self.model!r})"

    def _scrub(self, text: str) -> str:
        """``text`` with the URL's credentials replaced, for a server message that echoes the URL."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def _error(self, message: str, cause: BaseException | None = None) -> EndpointError:
        """A one-line EndpointError free of credentials, to raise without ``from``: ``cause`` is chained
        only when the URL holds none, since its text is the server's or the HTTP library's."""
        error = EndpointError(" ".join(self._scrub(message).split()))
        error.__cause__ = None if self._secrets else cause
        error.__suppress_context__ = True
        return error

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
                status, body = self._attempt(client, request)
            except _StatusReply as err:
                failure = str(err)
                if err.status in (401, 403):
                    failure += f" (is ${self.api_key_env} set to a valid key?)"
                if err.status not in _RETRYABLE_STATUS and err.status < 500:
                    raise self._error(f"{self._where()} refused the request: {failure}", err)
                retry_after = err.retry_after
                last_error = err
            except openai.APIConnectionError as err:
                failure = f"{err.message} ({err.__cause__ or type(err).__name__})"
                last_error = err
            except _Overdue as err:
                failure = f"no complete reply within {self.timeout:g}s (the total time limit of one attempt)"
                last_error = err
            except _ReplyTooLarge as err:
                raise self._error(f"{self._where()} sent a reply larger than {self.max_reply_bytes} bytes ({err}); "
                                  "raise max_reply_bytes if such replies are expected")
            else:
                return self._reply_text(status, body)
            if attempt == self.max_retries:
                raise self._error(f"{self._where()} failed after {attempts} attempts; last error: {failure}",
                                  last_error)
            delay = self._retry_delay(attempt, retry_after)
            log.warning("%s: %s; retrying in %.2fs (attempt %d of %d)", self._where(), self._scrub(failure), delay,
                        attempt + 2, attempts)
            time.sleep(delay)
            attempt += 1

    def _attempt(self, client: Any, request: dict[str, Any]) -> tuple[int, str]:
        """``_exchange`` in a worker thread left behind at the deadline: no phase of a slow reply (not
        even headers sent a byte at a time) holds the caller past ``timeout``. The worker stops at its
        next read (the client's per-read timeout, or its own check of the deadline, which covers the
        body of every reply, error statuses included)."""
        openai = _load_openai()
        deadline = time.monotonic() + self.timeout
        outcome: list[tuple[int, str] | BaseException] = []

        def run() -> None:
            self._attempt_state.deadline = deadline
            try:
                outcome.append(self._exchange(client, request, deadline))
            except openai.APIConnectionError as err:
                # openai 1.x wraps what a response hook raises; later versions let it through
                cause = err.__cause__
                outcome.append(cause if isinstance(cause, (_StatusReply, _Overdue, _ReplyTooLarge)) else err)
            except BaseException as err:  # handed to the caller's thread
                outcome.append(err)

        worker = threading.Thread(target=run, name="chat-endpoint-request", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if not outcome:
            raise _Overdue()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _exchange(self, client: Any, request: dict[str, Any], deadline: float) -> tuple[int, str]:
        """One request; the reply is read in chunks so the size cap and the deadline hold: (status, body)."""
        create = client.chat.completions.with_streaming_response.create
        with create(model=request["model"], messages=request["messages"], temperature=request["temperature"],
                    max_tokens=request["max_tokens"]) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_reply_bytes:
                raise _ReplyTooLarge(f"its Content-Length is {declared}")
            body, more = _read_until(response.iter_bytes(), self.max_reply_bytes, deadline)
            if more:
                raise _ReplyTooLarge("stopped reading it there")
            return response.status_code, body.decode("utf-8", errors="replace")

    def _refuse_status(self, response: Any) -> None:
        """The HTTP client's response hook: a reply with an error status becomes a ``_StatusReply``, read
        only up to ``ERROR_BODY_BYTES`` and before the attempt's deadline (the openai client would read
        it whole however large, and however slowly it came)."""
        if response.is_success:
            return
        try:
            body, _ = _read_until(response.iter_bytes(), ERROR_BODY_BYTES, self._attempt_state.deadline)
        finally:
            response.close()
        words = _server_words(body) or "(no message)"
        if response.is_redirect and response.headers.get("location"):
            words += f" (redirected to {response.headers['location']}; give that URL)"
        raise _StatusReply(response.status_code, response.headers.get("retry-after"),
                           _one_line(self._scrub(words)))

    def _reply_text(self, status: int, body: str) -> str:
        """The first choice's content, or a clear error saying what the reply lacked."""
        def malformed(problem: str) -> EndpointError:
            return self._error(f"{self._where()} sent a malformed reply (HTTP {status}): {problem}; body: {body[:300]!r}")

        try:
            data = json.loads(body)
        except ValueError:
            raise malformed("not JSON") from None
        if not isinstance(data, dict):
            raise malformed("not a JSON object")
        if "error" in data:
            raise malformed(f"server error {_one_line(repr(data['error']))}")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise malformed("no choices")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str) or not content.strip():
            refusal = message.get("refusal") if isinstance(message, dict) else None
            raise malformed(f"empty content (refusal: {refusal!r})" if refusal else "empty content")
        return content


def endpoint_from_config(settings: TeacherConfig, cache_dir: str | Path | None = None) -> ChatEndpoint:
    """The endpoint a recipe section (``teacher`` or ``eval.endpoint``) describes; ``cache_dir`` when it names none."""
    return ChatEndpoint(settings.base_url, settings.model, settings.api_key_env,
                        cache_dir=settings.cache_dir or cache_dir, timeout=settings.timeout,
                        max_retries=settings.attempts - 1)


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
        messages = self.messages(state, history, next_good_action, was_last_action_wrong)
        return self.endpoint.complete(messages, accept=self._reflection)

    def _reflection(self, reply: str) -> str:
        """The reflection in ``reply``; raising rejects the reply, so it is not cached."""
        reflection = clean_teacher_reply(reply)
        if not reflection:
            raise EndpointError(f"{self.endpoint!r} replied {_one_line(repr(reply))}, which holds no reflection once "
                                "markers are removed")
        return reflection
