"""Render nginx-rtmp configuration from the inventory: pure functions, model objects in, config text out.

Nothing here reads files or the network, nor the database beyond the objects passed in (except
``render_server_config``, which gathers a server's inputs and calls the pure renderers), and the output
is deterministic, so renders are golden-file tested and a revision's text can be diffed. Every
value that reaches the config is checked for nginx syntax (``;``, braces, quotes, whitespace, ``#``, ``$``),
so a render either returns a config nginx can parse or raises ``ValueError``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from streams.app_settings import clean_app_settings

if TYPE_CHECKING:
    from streams.models import Application, ProxyMember, Server

RTMP_MODULE_PATH = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
# Absolute, because nginx-rtmp resolves hls_path and record_path against the worker's working directory,
# not the -p prefix. nginx creates only the last component of hls_path; record_path must exist.
DEFAULT_RECORD_PATH = "/var/lib/tally/record"
DEFAULT_HLS_PATH = "/var/lib/tally/hls"
HOOK_EVENTS = ("publish", "publish_done", "play", "play_done", "done", "update", "connect", "disconnect")
# Application-level callbacks; on_connect/on_disconnect are server-level only (nginx rejects them in
# application{}), and on_update is rendered on its own switch.
_APP_EVENTS = ("publish", "publish_done", "play", "play_done", "done")
_UNSAFE = re.compile(r"[\s;{}'\"\\#$]")
_LISTEN = re.compile(r"^(?:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?\d{1,5}$")
_INDENT = "    "
# (prefix-relative, system) paths: the first for `nginx -p PREFIX/`, the second for Debian's packaged nginx.
_MAIN_PATHS = {
    "pid": ("logs/nginx.pid", "/run/nginx.pid"),
    "error_log": ("logs/error.log", "/var/log/nginx/error.log"),
    "access_log": ("logs/access.log", "/var/log/nginx/access.log"),
    "temp": ("tmp", "/var/lib/nginx"),
}
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
_TEMP_DIRS = {"client_body": "body"}


def build_callback_url(server: Server, event: str, *, callback_base_url: str) -> str:
    """The URL nginx-rtmp calls for ``event`` on ``server``.

    Format fixed by the console's hook views: ``{base}/hooks/nginx-rtmp/{server.id}/{event}?secret=...``.
    Raises ValueError for an unsaved server, an unknown event or a base URL nginx-rtmp cannot call.
    """
    if event not in HOOK_EVENTS:
        raise ValueError(f"Unknown nginx-rtmp callback event {event!r}.")
    if not isinstance(server.id, int):
        raise ValueError(f"Server {server.name!r} has no id yet; save it before rendering its callbacks.")
    base = _check_callback_base_url(callback_base_url)
    secret = _safe(server.hook_secret, "the server's hook secret")
    return f"{base}/hooks/nginx-rtmp/{server.id}/{event}?secret={secret}"


def render_application_block(
    application: Application,
    *,
    callback_base_url: str,
    record_path: str = DEFAULT_RECORD_PATH,
    hls_path: str = DEFAULT_HLS_PATH,
    play_routing: bool = False,
) -> str:
    """The ``application NAME { ... }`` block for one application, unindented, ending in a newline.

    ``idle_streams off`` refuses a player of a stream nobody publishes at once, instead of letting it hang;
    with ``play_routing`` (an origin behind a TCP proxy) it is left on, because a player redirected to
    the owner origin waits for the pull relay that ``on_play`` starts.

    Renders ``application.settings`` (normalised through ``clean_app_settings``; ``fail_open`` adds
    ``&fail_open=1`` to the callback URLs, for the console to read when its database is down).
    Recordings go to ``{record_path}/{name}``, HLS to ``{hls_path}/{name}``; both roots must be
    absolute. Raises ValueError on invalid settings or unsafe values.
    """
    name = _safe(application.name, "the application name")
    settings = _clean_settings(application)
    lines = ["live on;"] if application.kind == "live" else []
    lines += _record_lines(settings, _absolute_path(record_path, "record_path"), name)
    if not play_routing:
        lines.append("idle_streams off;")
    if settings["drop_idle_publisher_s"] > 0:
        lines.append(f"drop_idle_publisher {settings['drop_idle_publisher_s']}s;")
    lines += _access_lines("publish", settings["publish_allow_cidrs"])
    lines += _access_lines("play", settings["play_allow_cidrs"])
    lines += [f"push {_safe(target, 'a push target')};" for target in settings["push_targets"]]
    lines += _hls_lines(settings, _absolute_path(hls_path, "hls_path"), name)
    lines += _callback_lines(application.server, settings, callback_base_url)
    return "\n".join([f"application {name} {{", *_indent(lines), "}"]) + "\n"


def render_origin_config(
    server: Server,
    applications: Iterable[Application],
    *,
    callback_base_url: str,
    prefix_paths: bool = True,
    rtmp_listen: str | None = None,
    http_listen: str | None = None,
    console_allow: Sequence[str] = ("127.0.0.1",),
    record_path: str = DEFAULT_RECORD_PATH,
    hls_path: str = DEFAULT_HLS_PATH,
    play_routing: bool = False,
) -> str:
    """A complete nginx.conf for an nginx-rtmp origin or edge: rtmp applications plus /stat and /control.

    With ``prefix_paths`` the pid, logs and temp paths are relative, for ``nginx -p PREFIX/ -c
    conf/nginx.conf`` (PREFIX/logs and PREFIX/tmp must exist); without, they are Debian's system paths.
    ``rtmp_listen`` defaults to ``{server.host}:{server.rtmp_port}``, ``http_listen`` to the host:port of
    ``server.stat_url``; /stat and /control answer only ``console_allow``. Applications are rendered in
    name order. Raises ValueError for anything that would not give a valid config.
    """
    if server.kind != "nginx-rtmp" or server.role == "proxy":
        raise ValueError(f"Server {server.name!r} is not an nginx-rtmp origin or edge ({server.kind}, {server.role}).")
    apps = sorted(applications, key=lambda app: app.name)
    _check_applications(server, apps)
    rtmp = _rtmp_lines(
        server,
        apps,
        listen=_check_listen(rtmp_listen or _default_rtmp_listen(server), "rtmp_listen"),
        callback_base_url=callback_base_url,
        record_path=record_path,
        hls_path=hls_path,
        play_routing=play_routing,
    )
    http = _http_lines(
        listen=_check_listen(http_listen or _default_http_listen(server), "http_listen"),
        console_allow=[_cidr(value, "console_allow") for value in console_allow],
        prefix_paths=prefix_paths,
    )
    role, name = _safe(server.role, "the server role"), _safe(server.name, "the server name")
    header = [
        f"# nginx-rtmp {role} {name}, rendered by Tally.",
        "# Do not edit: the next deploy from the console replaces this file.",
    ]
    return "\n".join([*header, "", *_main_lines(prefix_paths), "", *rtmp, "", *http]) + "\n"


def _safe(value: Any, what: str) -> str:
    """``value`` as a config token, or ValueError when it is empty or could inject nginx syntax."""
    text = str(value)
    if not text or _UNSAFE.search(text):
        raise ValueError(
            f"Refusing to render {what} {text!r}: it is empty or contains whitespace, quotes, "
            "braces, ';', '#', '$' or a backslash, which would break the nginx config."
        )
    return text


def _check_callback_base_url(url: str) -> str:
    """``url`` without a trailing slash, or ValueError unless it is exactly ``http://host[:port]``."""
    _safe(url, "callback_base_url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError(f"callback_base_url {url!r} is not a valid URL.") from None
    if parts.scheme == "https":
        raise ValueError(
            f"callback_base_url {url!r} uses https://, which nginx-rtmp cannot call "
            '(nginx -t fails with "invalid port in url"); use http://host[:port], e.g. over a private network.'
        )
    if parts.scheme != "http" or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"callback_base_url {url!r} must be http://host[:port].")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"callback_base_url {url!r} must be http://host[:port], without a path or query.")
    return url.rstrip("/")


def _clean_settings(application: Application) -> dict[str, Any]:
    try:
        return clean_app_settings(application.settings)
    except ValidationError as exc:
        raise ValueError(f"Application {application.name!r} has invalid settings: {exc.messages}") from None


def _absolute_path(path: str, what: str) -> str:
    _safe(path, what)
    if not path.startswith("/"):
        raise ValueError(f"{what} {path!r} must be absolute: nginx-rtmp does not resolve it against the prefix.")
    return path.rstrip("/") or "/"


def _cidr(value: str, what: str) -> str:
    """A network in nginx's allow/deny form: a bare address for a single host, else network/prefix."""
    try:
        network = ipaddress.ip_network(_safe(value, what), strict=False)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not an IP address or network.") from None
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _indent(lines: Iterable[str], depth: int = 1) -> list[str]:
    return [f"{_INDENT * depth}{line}" if line else "" for line in lines]


def _record_lines(settings: dict[str, Any], root: str, name: str) -> list[str]:
    if not settings["record"]:
        return ["record off;"]
    # record_unique: a republished stream gets a new file instead of overwriting the last one.
    return ["record all;", f"record_path {root}/{name};", "record_unique on;"]


def _access_lines(action: str, cidrs: list[str]) -> list[str]:
    if not cidrs:
        return []
    allowed = [f"allow {action} {_cidr(cidr, f'{action}_allow_cidrs')};" for cidr in cidrs]
    return [*allowed, f"deny {action} all;"]


def _hls_lines(settings: dict[str, Any], root: str, name: str) -> list[str]:
    if not settings["hls"]:
        return []
    return [
        "hls on;",
        f"hls_path {root}/{name};",
        f"hls_fragment {settings['hls_fragment_s']}s;",
        f"hls_playlist_length {settings['hls_playlist_length_s']}s;",
    ]


def _callback_lines(server: Server, settings: dict[str, Any], callback_base_url: str) -> list[str]:
    if not settings["callbacks"]:
        return []
    events = [*_APP_EVENTS, "update"] if settings["on_update"] else list(_APP_EVENTS)
    # fail_open rides in the URL: the console must know it when its database is unreachable.
    flag = "&fail_open=1" if settings["fail_open"] else ""
    lines = ["notify_method post;"]
    lines += [
        f"on_{event} {build_callback_url(server, event, callback_base_url=callback_base_url)}{flag};"
        for event in events
    ]
    if settings["on_update"]:
        lines.append(f"notify_update_timeout {settings['on_update_interval_s']}s;")
    return lines


def _check_applications(server: Server, applications: list[Application]) -> None:
    names = [app.name for app in applications]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Duplicate application names for server {server.name!r}: {', '.join(duplicates)}.")
    for app in applications:
        if app.server_id != server.pk:
            raise ValueError(f"Application {app.name!r} belongs to another server than {server.name!r}.")


def _check_listen(value: str, what: str) -> str:
    if not _LISTEN.match(_safe(value, what)) or not 0 < int(value.rsplit(":", 1)[-1]) < 65536:
        raise ValueError(f"{what} {value!r} must be [host:]port, e.g. 127.0.0.1:1935 or [::1]:8080.")
    return value


def _default_rtmp_listen(server: Server) -> str:
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"{host}:{server.rtmp_port}"


def _default_http_listen(server: Server) -> str:
    """host:port of ``server.stat_url``; the rendered stat server is plain HTTP, so https is refused."""
    try:
        parts = urlsplit(server.stat_url)
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"Server {server.name!r} has an invalid stat_url {server.stat_url!r}.") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(
            f"Cannot derive http_listen from stat_url {server.stat_url!r}: it must be an http:// URL "
            "(the rendered stat server has no TLS); pass http_listen explicitly."
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def _main_lines(prefix_paths: bool) -> list[str]:
    which = 0 if prefix_paths else 1
    return [
        f"load_module {RTMP_MODULE_PATH};",
        "",
        "# rtmp stat, control and live state are per worker: keep one.",
        "worker_processes 1;",
        f"pid {_MAIN_PATHS['pid'][which]};",
        f"error_log {_MAIN_PATHS['error_log'][which]} info;",
        "",
        "events {",
        f"{_INDENT}worker_connections 1024;",
        "}",
    ]


def _rtmp_lines(
    server: Server,
    apps: list[Application],
    *,
    listen: str,
    callback_base_url: str,
    record_path: str,
    hls_path: str,
    play_routing: bool,
) -> list[str]:
    lines = [f"listen {listen};", "chunk_size 4096;"]
    if any(_clean_settings(app)["callbacks"] for app in apps):
        lines += [
            f"on_{event} {build_callback_url(server, event, callback_base_url=callback_base_url)};"
            for event in ("connect", "disconnect")
        ]
    for app in apps:
        block = render_application_block(
            app, callback_base_url=callback_base_url, record_path=record_path, hls_path=hls_path,
            play_routing=play_routing,
        )  # fmt: skip
        lines += ["", *block.splitlines()]
    return ["rtmp {", *_indent(["server {", *_indent(lines), "}"]), "}"]


def _http_lines(*, listen: str, console_allow: list[str], prefix_paths: bool) -> list[str]:
    which = 0 if prefix_paths else 1
    temp_root = _MAIN_PATHS["temp"][which]
    lines = [f"access_log {_MAIN_PATHS['access_log'][which]};"]
    lines += [f"{kind}_temp_path {temp_root}/{_TEMP_DIRS.get(kind, kind)};" for kind in _TEMP_PATHS]
    acl = [f"allow {address};" for address in console_allow] + ["deny all;"]
    server = [f"listen {listen};"]
    for location, directive in (("/stat", "rtmp_stat all;"), ("/control", "rtmp_control all;")):
        server += ["", f"location {location} {{", *_indent([directive, *acl]), "}"]
    lines += ["", "server {", *_indent(server), "}"]
    return ["http {", *_indent(lines), "}"]


STREAM_MODULE_PATH = "/usr/lib/nginx/modules/ngx_stream_module.so"
UPSTREAM_NAME = "rtmp_origins"


def render_proxy_config(
    server: Server, members: Iterable[ProxyMember], *, prefix_paths: bool = True, listen: str | None = None
) -> str:
    """A complete nginx.conf for a TCP proxy: ``stream {}`` balancing RTMP over the origins in ``members``.

    The method is the server's ``proxy_method``: round robin, ``least_conn`` (ties broken round robin), or
    ``hash $remote_addr consistent`` (a client sticks to one origin). Each member carries its weight,
    ``max_fails``, ``fail_timeout`` and ``backup`` (nginx refuses ``backup`` with ``hash``, so this does
    too). Players through a proxy may land on an origin without their stream; the origins' ``on_play``
    callbacks redirect them (see streams.hooks). Raises ValueError for anything that would not give a
    valid config.
    """
    if server.kind != "nginx-rtmp" or server.role != "proxy":
        raise ValueError(f"Server {server.name!r} is not an nginx TCP proxy ({server.kind}, {server.role}).")
    members = sorted(members, key=lambda member: member.origin.name)
    if not [m for m in members if not m.backup]:
        raise ValueError(f"Proxy {server.name!r} needs at least one origin that is not a backup.")
    method = server.proxy_method
    upstream = {"least_conn": ["least_conn;"], "hash": ["hash $remote_addr consistent;"]}.get(method, [])
    for member in members:
        origin = member.origin
        if origin.kind != "nginx-rtmp" or origin.role == "proxy":
            raise ValueError(f"{origin.name!r} cannot be behind a proxy: only nginx-rtmp origins and edges can.")
        if member.backup and method == "hash":
            raise ValueError(f"{origin.name!r}: nginx does not allow backup servers with hash balancing.")
        options = [f"weight={int(member.weight)}", f"max_fails={int(member.max_fails)}",
                   f"fail_timeout={int(member.fail_timeout_s)}s"]  # fmt: skip
        options += ["backup"] if member.backup else []
        upstream.append(
            f"server {_check_listen(_default_rtmp_listen(origin), 'an origin address')} {' '.join(options)};"
        )
    which = 0 if prefix_paths else 1
    name = _safe(server.name, "the server name")
    lines = [
        f"# TCP proxy {name}, rendered by Tally.",
        "# Do not edit: the next deploy from the console replaces this file.",
        "",
        f"load_module {STREAM_MODULE_PATH};",
        "",
        "worker_processes auto;",
        f"pid {_MAIN_PATHS['pid'][which]};",
        f"error_log {_MAIN_PATHS['error_log'][which]} info;",
        "",
        "events {",
        f"{_INDENT}worker_connections 4096;",
        "}",
        "",
        "stream {",
        *_indent([
            f"upstream {UPSTREAM_NAME} {{", *_indent(upstream), "}", "",
            "server {",
            *_indent([f"listen {_check_listen(listen or _default_rtmp_listen(server), 'listen')};",
                      f"proxy_pass {UPSTREAM_NAME};", "proxy_connect_timeout 5s;"]),
            "}",
        ]),
        "}",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def render_server_config(server: Server, *, callback_base_url: str) -> str:
    """What a deploy writes on ``server``: the origin/edge config, or the proxy config."""
    if server.role == "proxy":
        members = server.proxy_members.select_related("origin")
        return render_proxy_config(server, members, prefix_paths=server.nginx_prefix_paths)
    return render_origin_config(
        server, server.applications.all(), callback_base_url=callback_base_url, prefix_paths=server.nginx_prefix_paths,
        console_allow=settings.CONSOLE_ADDRESSES, play_routing=server.behind_proxies.exists(),
    )  # fmt: skip
