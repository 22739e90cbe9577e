"""A scripted OpenAI-compatible chat endpoint on loopback: the policy of the trainer tests.

``POST /v1/chat/completions`` answers with the scripted assistant messages in order, the n-th
reply of a conversation being the one after the n assistant messages the request already
carries, so concurrent conversations each follow the script. Every request body is kept
(``requests``) for the test to look at. Standard library only, so any trainer venv can run it.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedModel:
    """Serves ``replies`` (assistant message contents) at ``self.base_url`` until ``close``."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # /v1/models, for clients that look first
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                model.requests.append(body)
                turn = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
                content = model.replies[min(turn, len(model.replies) - 1)]
                head = {"id": f"chatcmpl-{len(model.requests)}", "created": int(time.time()),
                        "model": body.get("model", "scripted")}
                usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
                if body.get("stream"):
                    self._stream(head, content, usage)
                    return
                self._send(200, {**head, "object": "chat.completion", "usage": usage, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                     "logprobs": None}]})

            def _stream(self, head: dict[str, Any], content: str, usage: dict[str, Any]) -> None:
                """The same reply as server-sent events: the text, the finish reason, the usage, [DONE]."""
                chunk = {**head, "object": "chat.completion.chunk"}
                events = [
                    {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                                           "finish_reason": None, "logprobs": None}]},
                    {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]},
                    {**chunk, "choices": [], "usage": usage},
                ]
                data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                raw = data.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
