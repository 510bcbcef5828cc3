"""Shared by the remote tests (engine and window): the server's API key and a stand-in HTTP server for answers no
Olmo server gives (garbage, a 503 with a reason)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "s3cret-key"
CONTEXT = 2048


class Canned:
    """A real HTTP server on 127.0.0.1 whose answers the test sets: ``routes[path] = (status, headers, body)``, or
    ``queues[path]``: answers given once each, in order (before ``routes``). ``posts``: the POSTed JSON bodies."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.queues: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self.posts: list[Any] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                queued = canned.queues.get(path)
                answer = queued.pop(0) if queued else None
                status, headers, body = answer or canned.routes.get(
                    path, (404, {}, b'{"error": {"message": "Not found"}}')
                )
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                canned.posts.append(json.loads(data) if data else None)
                self._answer()

            def log_message(self, *args: Any) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that stopped reading an oversized answer is what some tests do

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="canned-http", daemon=True)
        self.thread.start()

    def json(self, path: str, status: int, body: Any) -> None:
        self.routes[path] = (status, {}, json.dumps(body).encode())

    def stream(self, path: str, *chunks: Any) -> None:
        """Queue one streamed answer: each chunk a ``data:`` event, then ``[DONE]``."""
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self.queues.setdefault(path, []).append((200, {"Content-Type": "text/event-stream"}, body.encode()))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
