"""Plain typed factories and personas (admin, operator, viewer, outsider)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from rest_framework.test import APIClient

from console import audit, tokens
from streams import keys
from streams.models import Application, Server

PASSWORD = "correct-horse-battery"


def make_user(username: str, role: str | None) -> Any:
    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])  # transactional tests flush the groups
    return user


def make_server(name: str = "origin-1", **fields: Any) -> Server:
    fields.setdefault("host", "127.0.0.1")
    fields.setdefault("stat_url", "http://127.0.0.1:8080/stat")
    server = Server(name=name, **fields)
    server.full_clean()
    server.save()
    return server


def make_loopback_server(name: str, **fields: Any) -> tuple[Server, int]:
    """An nginx-rtmp server on free loopback ports, its /stat and /control on an HTTP port of their own;
    returns it and that HTTP port (to start nginx with)."""
    from tests.nginx import free_port

    http_port = free_port()
    server = make_server(name, host="127.0.0.1", rtmp_port=free_port(), stat_url=f"http://127.0.0.1:{http_port}/stat",
                         control_url=f"http://127.0.0.1:{http_port}/control", **fields)  # fmt: skip
    return server, http_port


def make_application(server: Server | None = None, name: str = "live", **fields: Any) -> Application:
    app = Application(server=server or make_server(), name=name, **fields)
    app.full_clean()
    app.save()
    return app


def issue_key(application: Application | None = None, label: str = "Camera 1", **fields: Any) -> keys.IssuedKey:
    return keys.issue_key(application or make_application(), label=label, actor=audit.Actor.system(), **fields)


def token_client(user: Any, role_ceiling: str = "admin") -> APIClient:
    """An API client authenticated with a fresh bearer token of ``user``."""
    issued = tokens.issue_token(user, f"{user.username}-token", role_ceiling, audit.Actor.system())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    return client


def logged_in(user: Any) -> Client:
    """A page client with ``user``'s session."""
    client = Client()
    client.force_login(user)
    return client


def default_alert_rules() -> dict[str, Any]:
    """The two rules the migration creates (stream dropped, server down), by condition. Tests that flush
    the database (``transactional_db``) remove them; this puts them back."""
    from monitoring.models import AlertRule

    defaults = {"stream_dropped": ("Stream dropped", 15), "server_down": ("Server down", 0)}
    return {
        condition: AlertRule.objects.get_or_create(
            condition=condition, server=None, application=None, key=None,
            defaults={"name": name, "duration_s": duration_s},
        )[0]
        for condition, (name, duration_s) in defaults.items()
    }  # fmt: skip
