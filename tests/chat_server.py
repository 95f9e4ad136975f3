"""A small local server speaking the OpenAI chat-completions protocol, for tests.

It really parses each request (rejecting bad ones with 400 like a real server),
records it, and answers either with queued replies, with a deterministic reply
derived from the request, or (``action_ids=True``) with the id of one of the
actions the prompt lists, like an agent would. It can be told to fail the next
N requests with an HTTP status, to send malformed or huge replies (error replies
too), or to drip a reply a byte at a time, and it records whether each answer went
out whole, so client retries, limits and error handling are tested over real HTTP.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CHAT_PATH = "/v1/chat/completions"
MALFORMED_KINDS = ("not-json", "no-choices", "empty-content")
DRIP_PARTS = ("headers", "body")
#: seconds between two bytes of a dripped header
DRIP_HEADER_DELAY = 0.05
#: one "<id>. <action>" line of the action list an agent prompt ends with
_ACTION_LINE = re.compile(r"^([0-9A-Za-z]+)\. ", re.M)


def derived_reply(body: dict[str, Any]) -> str:
    """The default reply: a sentence fixed by the request's messages, so tests can predict it."""
    last = body["messages"][-1]["content"]
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()[:10]
    return f"Read {len(body['messages'])} messages; the last has {len(last.split())} words (digest {digest})."


@dataclass
class _Answer:
    """How to answer one request: ``delivery`` is ``whole``, ``unsized`` (no Content-Length,
    the body ends when the connection closes), ``drip-headers`` (a long header sent a byte
    at a time before the rest) or ``drip-body`` (the body sent a byte at a time), a drip
    lasting about ``drip_seconds``."""

    status: int
    payload: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delivery: str = "whole"
    drip_seconds: float = 0.0
    #: the reply text's size in bytes, for ``huge_next``
    text_size: int | None = None
    #: for ``error_next``: the error message (``{authorization}`` becomes the request's header) and the
    #: size the body is padded to
    error_message: str | None = None
    error_size: int = 0


class ChatServer:
    """``with ChatServer() as server: ... server.base_url ...`` (binds 127.0.0.1 on a free port)."""

    def __init__(self, action_ids: bool = False, seed: int = 0) -> None:
        """``action_ids``: by default answer with a random id from the prompt's action list."""
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        #: the request target of each valid request, query string included
        self.paths: list[str] = []
        self.request_count = 0
        #: for each answer, whether it went out whole (False: the client hung up first)
        self.delivered: list[bool] = []
        #: set when a client hangs up before an answer went out whole
        self.cut_off = threading.Event()
        self.action_ids = action_ids
        self._rng = random.Random(seed)
        self._replies: deque[str] = deque()
        self._failures: deque[tuple[int, float | None]] = deque()
        self._malformed: deque[str] = deque()
        self._special: deque[_Answer] = deque()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="chat-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def queue_replies(self, *texts: str) -> None:
        """Answer the next requests with these texts, in order."""
        with self._lock:
            self._replies.extend(texts)

    def fail_next(self, n: int, status: int = 500, retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (and a ``Retry-After`` header when given)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * n)

    def malform_next(self, kind: str) -> None:
        """Send one malformed 200 reply: ``not-json``, ``no-choices`` or ``empty-content``."""
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"unknown malformed kind {kind!r}; known: {MALFORMED_KINDS}")
        with self._lock:
            self._malformed.append(kind)

    def drip_next(self, part: str, seconds: float) -> None:
        """Send part of the next (valid) reply a byte at a time, taking about ``seconds``:
        ``headers`` drips a long header before the body, ``body`` drips the body; every read
        of a client gets a byte well within any per-read timeout."""
        if part not in DRIP_PARTS:
            raise ValueError(f"unknown drip part {part!r}; known: {DRIP_PARTS}")
        with self._lock:
            self._special.append(_Answer(200, delivery=f"drip-{part}", drip_seconds=seconds))

    def huge_next(self, n_bytes: int, sized: bool = True) -> None:
        """Answer the next request with a valid reply of about ``n_bytes`` bytes, with a
        Content-Length header (``sized``) or ended by closing the connection."""
        with self._lock:
            self._special.append(_Answer(200, delivery="whole" if sized else "unsized", text_size=n_bytes))

    def error_next(self, status: int, message: str = "injected failure", size: int = 0,
                   drip_seconds: float = 0.0) -> None:
        """Answer the next request with ``status`` and a JSON error whose message is ``message``, padded
        with lines of text to about ``size`` bytes; ``{authorization}`` in it becomes the request's
        Authorization header, as a server echoing it would send. ``drip_seconds`` drips the body a byte
        at a time over about that long."""
        delivery = "drip-body" if drip_seconds else "whole"
        with self._lock:
            self._special.append(_Answer(status, delivery=delivery, drip_seconds=drip_seconds, error_message=message,
                                         error_size=size))

    def wait_delivered(self, n: int, timeout: float = 30) -> list[bool]:
        """``delivered`` once ``n`` answers have ended (an answer ends a moment after the client's call does)."""
        with self._answered:
            self._answered.wait_for(lambda: len(self.delivered) >= n, timeout)
            return list(self.delivered)

    def _record_delivery(self, whole: bool) -> None:
        with self._answered:
            self.delivered.append(whole)
            self._answered.notify_all()
        if not whole:
            self.cut_off.set()

    def _respond(self, body: dict[str, Any], headers: dict[str, str], path: str) -> _Answer:
        """Record one valid request and decide the answer."""
        with self._lock:
            self.request_count += 1
            self.requests.append(body)
            self.headers.append(headers)
            self.paths.append(path)
            if self._failures:
                status, retry_after = self._failures.popleft()
                extra = {} if retry_after is None else {"Retry-After": str(retry_after)}
                error = {"error": {"message": f"injected failure with status {status}", "type": "server_error"}}
                return _Answer(status, json.dumps(error).encode(), extra)
            if self._malformed:
                kind = self._malformed.popleft()
                if kind == "not-json":
                    return _Answer(200, b"<html>upstream proxy error</html>")
                return _Answer(200, json.dumps(self._completion(body, "" if kind == "empty-content" else None)).encode())
            if self._special:
                answer = self._special.popleft()
                if answer.error_message is not None:
                    message = answer.error_message.format(authorization=headers.get("authorization", ""))
                    message += "\nmore detail" * max(0, (answer.error_size - len(message)) // 12)
                    answer.payload = json.dumps({"error": {"message": message, "type": "server_error"}}).encode()
                    return answer
                text = derived_reply(body) if answer.text_size is None else "word " * (answer.text_size // 5)
                answer.payload = json.dumps(self._completion(body, text)).encode()
                return answer
            if self._replies:
                text = self._replies.popleft()
            elif self.action_ids:
                text = self._rng.choice(_ACTION_LINE.findall(body["messages"][-1]["content"]) or ["no actions listed"])
            else:
                text = derived_reply(body)
        return _Answer(200, json.dumps(self._completion(body, text)).encode())

    def _completion(self, body: dict[str, Any], text: str | None) -> dict[str, Any]:
        """A chat.completion object; ``text=None`` gives one with no choices."""
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        choices = [] if text is None else [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ]
        return {
            "id": f"chatcmpl-{self.request_count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len((text or "").split()),
                "total_tokens": prompt_tokens + len((text or "").split()),
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output clean."""

            def _send(self, answer: _Answer) -> None:
                try:
                    self._deliver(answer)
                except (BrokenPipeError, ConnectionResetError):
                    server._record_delivery(False)  # the client hung up, as a client that enforces limits does
                else:
                    server._record_delivery(True)

            def _drip(self, data: bytes, seconds: float) -> None:
                delay = seconds / len(data)
                for i in range(len(data)):
                    if server._stop.wait(delay):
                        return
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()

            def _deliver(self, answer: _Answer) -> None:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                if answer.delivery != "unsized":
                    self.send_header("Content-Length", str(len(answer.payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.delivery == "drip-headers":
                    self.flush_headers()
                    padding = b"p" * int(answer.drip_seconds / DRIP_HEADER_DELAY)
                    self._drip(b"X-Padding: " + padding + b"\r\n", answer.drip_seconds)
                self.end_headers()
                if answer.delivery == "drip-body":
                    self.wfile.flush()
                    self._drip(answer.payload, answer.drip_seconds)
                else:
                    self.wfile.write(answer.payload)

            def _error(self, status: int, message: str) -> None:
                payload = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
                self._send(_Answer(status, payload))

            def do_POST(self) -> None:
                if urlsplit(self.path).path != CHAT_PATH:
                    self._error(404, f"unknown path {self.path}")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    self._error(400, "request body is not JSON")
                    return
                messages = body.get("messages") if isinstance(body, dict) else None
                if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                    self._error(400, "'model' is required")
                    return
                if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages
                ):
                    self._error(400, "'messages' must be a non-empty list of {role, content}")
                    return
                self._send(server._respond(body, {k.lower(): v for k, v in self.headers.items()}, self.path))

        return Handler
