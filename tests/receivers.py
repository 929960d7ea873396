"""Real loopback receivers of Tally's notices: an SMTP server (aiosmtpd) and a webhook endpoint that
checks the HMAC-SHA256 signature independently of Tally's code."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.nginx import free_port

logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO


class Inbox:
    """aiosmtpd handler keeping every message; ``stall`` makes DATA hang (a server stuck mid-send)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.stall = False
        self.stalled = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        while self.stall:
            self.stalled.set()
            await asyncio.sleep(0.1)
        self.messages.append(envelope)
        return "250 OK"

    def texts(self) -> list[str]:
        return [message.content.decode() for message in self.messages]


class SmtpServer:
    """An SMTP server on 127.0.0.1 that can be stopped and started again on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.inbox = Inbox()
        self.port = port or free_port()
        self.controller: Controller | None = None

    def start(self) -> SmtpServer:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def signature_valid(secret: str, header: str, body: bytes) -> bool:
    """Check ``X-Tally-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>``."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    mac = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, fields["v1"])


class WebhookReceiver(ThreadingHTTPServer):
    """A webhook endpoint answering ``status``; ``calls`` holds (headers, JSON body, signature valid)."""

    def __init__(self, secret: str, status: int = 204) -> None:
        self.secret, self.status = secret, status
        self.calls: list[tuple[dict[str, str], Any, bool]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                valid = signature_valid(receiver.secret, self.headers["X-Tally-Signature"], body)
                receiver.calls.append((dict(self.headers), json.loads(body), valid))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/hook"
