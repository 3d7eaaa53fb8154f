"""Posting deploy events: the event's shape, names validated, a restarting server ridden out, a
refusal reported at once."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from fleetscan.deploy_events import EVENT, deploy_event, post_with_retries
from fleetscan.errors import FleetscanError, UsageError


class Events(BaseHTTPRequestHandler):
    received: list[Any] = []
    status = 204

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_event_names_the_workload() -> None:
    event = deploy_event("shop", "StatefulSet", "db", {"generation": 3})
    assert event["event"] == EVENT
    assert event["resource"]["prefect.resource.id"] == "fleetscan.workload.shop.statefulset.db"
    assert (event["resource"]["fleetscan.kind"], event["payload"]) == ("StatefulSet", {"generation": 3})
    with pytest.raises(UsageError):
        deploy_event("Shop;rm", "Deployment", "x")
    with pytest.raises(UsageError):
        deploy_event("shop", "CronJob", "x")


def test_a_server_that_comes_back_gets_the_event() -> None:
    port = free_port()  # nothing listens yet: connection refused, as while a server restarts
    handler = type("H", (Events,), {"received": [], "status": 204})

    def start_late() -> None:
        time.sleep(1)
        late = HTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=late.serve_forever, daemon=True).start()
        stop.wait()
        late.shutdown()
        late.server_close()

    stop = threading.Event()
    threading.Thread(target=start_late, daemon=True).start()
    try:
        post_with_retries(f"http://127.0.0.1:{port}/api", [deploy_event("shop", "Deployment", "web")], auth="u:p")
    finally:
        stop.set()
    (path, authorization, body), *_ = handler.received
    assert path == "/api/events" and authorization == "Basic dTpw" and body[0]["event"] == EVENT


def test_a_refusal_is_not_retried() -> None:
    handler = type("H", (Events,), {"received": [], "status": 422})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(FleetscanError, match="refused the event: 422"):
            post_with_retries(f"http://127.0.0.1:{server.server_port}/api", [deploy_event("shop", "Pod", "p")])
    finally:
        server.shutdown()
        server.server_close()
    assert len(handler.received) == 1
