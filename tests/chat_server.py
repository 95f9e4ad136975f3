"""A small local server speaking the OpenAI chat-completions protocol, for tests.

It really parses each request (rejecting bad ones with 400 like a real server),
records it, and answers either with queued replies or with a deterministic reply
derived from the request. It can be told to fail the next N requests with an
HTTP status, or to send malformed replies, so client retries and error
handling are tested over real HTTP.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"
MALFORMED_KINDS = ("not-json", "no-choices", "empty-content")


def derived_reply(body: dict[str, Any]) -> str:
    """The default reply: a sentence fixed by the request's messages, so tests can predict it."""
    last = body["messages"][-1]["content"]
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()[:10]
    return f"Read {len(body['messages'])} messages; the last has {len(last.split())} words (digest {digest})."


class ChatServer:
    """``with ChatServer() as server: ... server.base_url ...`` (binds 127.0.0.1 on a free port)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.request_count = 0
        self._replies: deque[str] = deque()
        self._failures: deque[tuple[int, float | None]] = deque()
        self._malformed: deque[str] = deque()
        self._lock = threading.Lock()
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

    def _respond(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Record one valid request and decide the answer: (status, extra headers, body bytes)."""
        with self._lock:
            self.request_count += 1
            self.requests.append(body)
            self.headers.append(headers)
            if self._failures:
                status, retry_after = self._failures.popleft()
                extra = {} if retry_after is None else {"Retry-After": str(retry_after)}
                error = {"error": {"message": f"injected failure with status {status}", "type": "server_error"}}
                return status, extra, json.dumps(error).encode()
            if self._malformed:
                kind = self._malformed.popleft()
                if kind == "not-json":
                    return 200, {}, b"<html>upstream proxy error</html>"
                return 200, {}, json.dumps(self._completion(body, "" if kind == "empty-content" else None)).encode()
            text = self._replies.popleft() if self._replies else derived_reply(body)
        return 200, {}, json.dumps(self._completion(body, text)).encode()

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

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _error(self, status: int, message: str) -> None:
                payload = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
                self._send(status, payload)

            def do_POST(self) -> None:
                if self.path != CHAT_PATH:
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
                status, headers, payload = server._respond(body, {k.lower(): v for k, v in self.headers.items()})
                self._send(status, payload, headers)

        return Handler
