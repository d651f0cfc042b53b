"""A local stand-in for Slack, PagerDuty and a generic webhook.

It accepts JSON POSTs on ``/slack``, ``/pagerduty`` and ``/webhook``, keeps
them (with the wall-clock time they arrived) and, if asked, prints one
readable line per message. The demo and the evaluation point alert routes at
it; nothing leaves the machine.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    body: dict[str, Any]
    at: float  #: wall-clock seconds when it arrived


def describe(message: Received) -> str:
    """One human line for a received alert message."""
    body = message.body
    if message.path.startswith("/pagerduty"):
        action = body.get("event_action", "?")
        payload = body.get("payload") or {}
        text = payload.get("summary") or body.get("dedup_key", "")
        return f"PagerDuty {action:<8} {payload.get('severity', ''):<8} {text}"
    if message.path.startswith("/slack"):
        return f"Slack     {body.get('text', '')}"
    alerts = body.get("alerts") or [{}]
    first = alerts[0]
    name = (first.get("annotations") or {}).get("summary") or body.get("groupKey", "")
    return f"Webhook   {body.get('status', '?'):<8} {name}"


class AlertReceiver:
    """A tiny HTTP server that records alert deliveries.

    >>> receiver = AlertReceiver().start()
    >>> import httpx
    >>> httpx.post(f"{receiver.url}/slack", json={"text": "hi"}).status_code
    200
    >>> [m.body["text"] for m in receiver.messages]
    ['hi']
    >>> receiver.stop()
    """

    def __init__(
        self, *, port: int = 0, on_message: Callable[[Received], None] | None = None
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                message = Received(self.path, body, time.time())
                with receiver._lock:
                    receiver.messages.append(message)
                if on_message is not None:
                    on_message(message)
                self.send_response(202 if self.path.startswith("/pagerduty") else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status":"success"}')

            def log_message(self, *args: Any) -> None:
                pass  # quiet: the owner prints what it wants

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> AlertReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def pagerduty_triggers(self) -> list[Received]:
        with self._lock:
            return [
                m
                for m in self.messages
                if m.path.startswith("/pagerduty") and m.body.get("event_action") == "trigger"
            ]
