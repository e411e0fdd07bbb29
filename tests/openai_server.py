"""A minimal OpenAI-compatible chat server on 127.0.0.1 for tests (no network, no model).

It answers ``POST /v1/chat/completions`` deterministically from the last user message, can fail
its first N calls (503 or 429) to exercise retries, and counts the calls it served.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 512  # the default backlog of 5 refuses connections under benchmark concurrency
    daemon_threads = True


class FakeOpenAIServer:
    def __init__(self, fail_first: int = 0, fail_status: int = 503, reply=None, fail_if=None,
                 latency_s: float = 0.0, echo_key: bool = False) -> None:
        """``reply(last_user_message) -> str`` overrides the default echo (e.g. a reader's letter);
        ``fail_if(request_body) -> bool`` fails matching requests every time (a request the server
        cannot serve), with ``fail_status``; ``echo_key``: a failure's message quotes the request's
        Authorization header, as some servers' 401 bodies do."""
        self.echo_key = echo_key
        self.fail_first = fail_first
        self.fail_if = fail_if
        self.latency_s = latency_s  # every call takes this long: an LLM-bound benchmark's server
        self.in_flight = 0
        self.max_in_flight = 0
        self.finished_at: list[float] = []  # when each call was answered (monotonic clock)
        self.reply = reply
        self.fail_status = fail_status
        self.calls = 0
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.calls += 1
                    n = server.calls
                    server.requests.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.latency_s:
                        time.sleep(server.latency_s)
                    self._answer(body, n)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                        server.finished_at.append(time.monotonic())

            def _answer(self, body: dict, n: int) -> None:
                if n <= server.fail_first or (server.fail_if is not None and server.fail_if(body)):
                    message = "try again"
                    if server.echo_key:
                        message = f"Incorrect API key provided: {self.headers.get('Authorization', '')}"
                    self._send(server.fail_status, {"error": {"message": message, "type": "server_error"}})
                    return
                messages = body.get("messages", [])
                last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
                text = last if isinstance(last, str) else json.dumps(last)
                reply = server.reply(text) if server.reply else f"Noted: {text[:80]}"
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
                self._send(200, {
                    "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(reply.split()),
                              "total_tokens": prompt_tokens + len(reply.split())},
                })

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
