"""Golden-file tests of the nginx-rtmp renderer, the ValueError guards, and a real `nginx -t` of a full config.

Regenerate the goldens after an intended change with
``UPDATE_GOLDENS=1 .venv/bin/pytest tests/streams/test_rendering.py`` and review the diff. Model instances are unsaved (explicit id and hook_secret), so no database is needed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from streams.models import Application, ProxyMember, Server
from streams.rendering import build_callback_url, render_application_block, render_origin_config, render_proxy_config

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "rendering"
NGINX = "/usr/sbin/nginx"
BASE_URL = "http://127.0.0.1:8000"


def check_golden(name: str, text: str, golden_dir: Path = GOLDEN_DIR) -> None:
    """Compare ``text`` with ``golden_dir/name``; with UPDATE_GOLDENS=1, (re)write the file instead."""
    path = golden_dir / name
    if os.environ.get("UPDATE_GOLDENS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"missing golden {path}; run with UPDATE_GOLDENS=1 to create it"
    assert text == path.read_text(), f"render differs from {path}; if intended, rerun with UPDATE_GOLDENS=1"


def make_server(**fields: Any) -> Server:
    fields = {
        "id": 7,
        "name": "origin-1",
        "host": "127.0.0.1",
        "rtmp_port": 1935,
        "stat_url": "http://127.0.0.1:8080/stat",
        "hook_secret": "hs-TEST_secret",
        **fields,
    }
    return Server(**fields)


def make_app(server: Server, name: str = "live", app_id: int = 1, **settings: Any) -> Application:
    return Application(id=app_id, server=server, name=name, settings=settings)


FULL_SETTINGS = {
    "hls": True,
    "hls_fragment_s": 2,
    "hls_playlist_length_s": 12,
    "record": True,
    "push_targets": ["rtmp://192.0.2.10/live", "rtmp://192.0.2.11:1936/backup"],
    "publish_allow_cidrs": ["10.1.2.0/24", "192.0.2.7"],
    "play_allow_cidrs": ["0.0.0.0/0", "2001:db8::/32"],
    "drop_idle_publisher_s": 0,
}


def full_origin_apps(server: Server) -> list[Application]:
    """Every application variant on one server, deliberately out of name order."""
    return [
        make_app(server, "live", 1),
        make_app(server, "archive", 2, **FULL_SETTINGS),
        make_app(server, "backup", 3, on_update=False, fail_open=True),
        make_app(server, "ingest", 4, callbacks=False, on_update_interval_s=60),
    ]


@pytest.mark.parametrize(
    ("golden", "kind", "settings"),
    [
        ("app_live_default.conf", "live", {}),
        ("app_on_update_off.conf", "live", {"on_update": False, "fail_open": True}),
        ("app_callbacks_off.conf", "live", {"callbacks": False}),
        ("app_hls_record_push_cidrs.conf", "live", FULL_SETTINGS),
        ("app_vod.conf", "vod", {"callbacks": False, "drop_idle_publisher_s": 30}),
    ],
)
def test_application_block_matches_golden(golden: str, kind: str, settings: dict[str, Any]) -> None:
    app = make_app(make_server(), name=kind, **settings)
    app.kind = kind
    text = render_application_block(
        app, callback_base_url=BASE_URL, record_path="/srv/tally/record", hls_path="/srv/tally/hls"
    )
    check_golden(golden, text)


def test_default_app_renders_every_callback_and_the_update_interval() -> None:
    text = render_application_block(make_app(make_server(), on_update_interval_s=45), callback_base_url=BASE_URL)
    for event in ("publish", "publish_done", "play", "play_done", "done", "update"):
        assert f"on_{event} {BASE_URL}/hooks/nginx-rtmp/7/{event}?secret=hs-TEST_secret;" in text
    assert "notify_update_timeout 45s;" in text
    assert "on_connect" not in text  # server-level only: nginx rejects it inside application{}


def test_on_update_off_keeps_the_other_callbacks() -> None:
    text = render_application_block(make_app(make_server(), on_update=False), callback_base_url=BASE_URL)
    assert "on_publish " in text
    assert "on_update" not in text
    assert "notify_update_timeout" not in text


def test_full_origin_config_matches_golden() -> None:
    server = make_server()
    text = render_origin_config(
        server,
        full_origin_apps(server),
        callback_base_url=BASE_URL,
        console_allow=["127.0.0.1", "10.0.0.0/8"],
        record_path="/srv/tally/record",
        hls_path="/srv/tally/hls",
    )
    check_golden("origin_full.conf", text)


def test_origin_config_is_deterministic_and_sorted() -> None:
    server = make_server()
    apps = full_origin_apps(server)
    first = render_origin_config(server, apps, callback_base_url=BASE_URL)
    assert first == render_origin_config(server, list(reversed(apps)), callback_base_url=BASE_URL)
    positions = [first.index(f"application {name} {{") for name in ("archive", "backup", "ingest", "live")]
    assert positions == sorted(positions)


def test_origin_without_callback_apps_has_no_server_callbacks() -> None:
    server = make_server()
    text = render_origin_config(server, [make_app(server, callbacks=False)], callback_base_url=BASE_URL)
    assert "on_connect" not in text
    assert "on_disconnect" not in text
    assert "notify_method" not in text


def test_system_paths_and_explicit_listens() -> None:
    server = make_server(host="::1", stat_url="http://[::1]:8081/stat")
    text = render_origin_config(server, [make_app(server)], callback_base_url=BASE_URL, prefix_paths=False)
    assert "listen [::1]:1935;" in text
    assert "listen [::1]:8081;" in text
    assert "pid /run/nginx.pid;" in text
    assert "client_body_temp_path /var/lib/nginx/body;" in text
    text = render_origin_config(
        server, [make_app(server)], callback_base_url=BASE_URL, rtmp_listen="19350", http_listen="127.0.0.1:18080"
    )
    assert "listen 19350;" in text
    assert "listen 127.0.0.1:18080;" in text
    assert "pid logs/nginx.pid;" in text


def test_update_goldens_env_rewrites_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    golden = tmp_path / "goldens" / "x.conf"
    monkeypatch.delenv("UPDATE_GOLDENS", raising=False)
    with pytest.raises(AssertionError, match="UPDATE_GOLDENS=1"):
        check_golden("x.conf", "new\n", golden_dir=golden.parent)
    monkeypatch.setenv("UPDATE_GOLDENS", "1")
    check_golden("x.conf", "new\n", golden_dir=golden.parent)
    assert golden.read_text() == "new\n"
    monkeypatch.delenv("UPDATE_GOLDENS")
    check_golden("x.conf", "new\n", golden_dir=golden.parent)
    with pytest.raises(AssertionError, match="differs"):
        check_golden("x.conf", "changed\n", golden_dir=golden.parent)


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("https://console.example", "invalid port in url"),
        ("http://console.example/tally", "without a path"),
        ("http://console.example:8000/?x=1", "without a path"),
        ("ftp://console.example", "http://host"),
        ("http://user:pw@console.example", "http://host"),
        ("http://console.example:99999", "not a valid URL"),
        ("http://", "http://host"),
        ("http://console.example;\nx", "would break"),
        ("", "would break"),
    ],
)
def test_unusable_callback_base_url_is_refused(base_url: str, message: str) -> None:
    server = make_server()
    with pytest.raises(ValueError, match=message):
        render_application_block(make_app(server), callback_base_url=base_url)
    with pytest.raises(ValueError, match=message):
        render_origin_config(server, [make_app(server)], callback_base_url=base_url)


def test_callback_base_url_may_end_in_a_slash() -> None:
    url = build_callback_url(make_server(), "connect", callback_base_url="http://10.0.0.2:8000/")
    assert url == "http://10.0.0.2:8000/hooks/nginx-rtmp/7/connect?secret=hs-TEST_secret"


@pytest.mark.parametrize("name", ["live;", "live {", "li ve", "live\n", 'live"', "live'", "live}", "a#b", ""])
def test_injection_in_application_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="would break the nginx config"):
        render_application_block(make_app(make_server(), name=name), callback_base_url=BASE_URL)


@pytest.mark.parametrize(
    "settings",
    [
        {"push_targets": ["rtmp://192.0.2.10/live; on_publish http://evil"]},
        {"push_targets": ["rtmp://192.0.2.10/live\n}"]},
        {"publish_allow_cidrs": ["10.0.0.0/8;"]},
        {"play_allow_cidrs": ["10.0.0.0/8 all"]},
        {"hls": "yes please"},
        {"unknown_key": 1},
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid settings"):
        render_application_block(make_app(make_server(), **settings), callback_base_url=BASE_URL)


def test_unsafe_server_values_are_refused() -> None:
    app = make_app(make_server(hook_secret="abc;def"))
    with pytest.raises(ValueError, match="hook secret"):
        render_application_block(app, callback_base_url=BASE_URL)
    with pytest.raises(ValueError, match="no id yet"):
        render_application_block(make_app(make_server(id=None)), callback_base_url=BASE_URL)
    server = make_server()
    with pytest.raises(ValueError, match="would break"):
        render_origin_config(server, [], callback_base_url=BASE_URL, rtmp_listen="127.0.0.1:1935; x")
    with pytest.raises(ValueError, match="http_listen"):
        render_origin_config(server, [], callback_base_url=BASE_URL, http_listen="0.0.0.0:0")
    with pytest.raises(ValueError, match="rtmp_listen"):
        render_origin_config(server, [], callback_base_url=BASE_URL, rtmp_listen="127.0.0.1:port")
    with pytest.raises(ValueError, match="console_allow"):
        render_origin_config(server, [], callback_base_url=BASE_URL, console_allow=["127.0.0.1;"])
    with pytest.raises(ValueError, match="console_allow"):
        render_origin_config(server, [], callback_base_url=BASE_URL, console_allow=["not-an-ip"])


def test_paths_must_be_absolute_and_safe() -> None:
    app = make_app(make_server(), record=True, hls=True)
    with pytest.raises(ValueError, match="must be absolute"):
        render_application_block(app, callback_base_url=BASE_URL, record_path="record")
    with pytest.raises(ValueError, match="would break"):
        render_application_block(app, callback_base_url=BASE_URL, hls_path="/srv/my hls")


def test_origin_config_refuses_bad_server_or_application_sets() -> None:
    server = make_server()
    with pytest.raises(ValueError, match="Duplicate application names"):
        render_origin_config(server, [make_app(server), make_app(server, app_id=2)], callback_base_url=BASE_URL)
    other = make_server(id=8, name="origin-2")
    with pytest.raises(ValueError, match="another server"):
        render_origin_config(server, [make_app(other)], callback_base_url=BASE_URL)
    with pytest.raises(ValueError, match="https"):
        render_origin_config(make_server(stat_url="https://127.0.0.1/stat"), [], callback_base_url=BASE_URL)
    with pytest.raises(ValueError, match="not an nginx-rtmp origin or edge"):
        render_origin_config(make_server(role=Server.Role.PROXY), [], callback_base_url=BASE_URL)


def test_nginx_accepts_the_full_origin_config(tmp_path: Path) -> None:
    """The same inputs as the golden, with media paths in the prefix: the real nginx -t must pass."""
    prefix = tmp_path / "origin"
    for sub in ("conf", "logs", "tmp", "media/record", "media/hls"):
        (prefix / sub).mkdir(parents=True)
    server = make_server()
    config = render_origin_config(
        server,
        full_origin_apps(server),
        callback_base_url=BASE_URL,
        console_allow=["127.0.0.1", "10.0.0.0/8"],
        record_path=str(prefix / "media/record"),
        hls_path=str(prefix / "media/hls"),
    )
    (prefix / "conf" / "nginx.conf").write_text(config)
    result = subprocess.run(
        [NGINX, "-t", "-p", f"{prefix}/", "-c", "conf/nginx.conf", "-e", "logs/error.log"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# --- TCP proxy ---------------------------------------------------------------------------------------------


def make_proxy(method: str, members: list[tuple[str, str, int, dict[str, Any]]]) -> tuple[Server, list[ProxyMember]]:
    proxy = make_server(name="front", host="0.0.0.0", role="proxy", proxy_method=method, stat_url="")
    rows = []
    for index, (name, host, port, options) in enumerate(members, start=1):
        origin = make_server(id=100 + index, name=name, host=host, rtmp_port=port)
        rows.append(ProxyMember(proxy=proxy, origin=origin, **options))
    return proxy, rows


PROXY_MEMBERS = [
    ("origin-b", "10.0.0.6", 1935, {"weight": 2, "max_fails": 3, "fail_timeout_s": 30}),
    ("origin-a", "10.0.0.5", 1936, {}),
    ("origin-c", "2001:db8::7", 1935, {"backup": True}),
]


@pytest.mark.parametrize("method", ["least_conn", "round_robin"])
def test_proxy_config_matches_golden(method: str) -> None:
    proxy, members = make_proxy(method, PROXY_MEMBERS)
    check_golden(f"proxy_{method}.conf", render_proxy_config(proxy, members, prefix_paths=False))


def test_proxy_config_refuses_what_nginx_would() -> None:
    proxy, members = make_proxy("hash", PROXY_MEMBERS)
    with pytest.raises(ValueError, match="backup servers with hash"):
        render_proxy_config(proxy, members)
    proxy, members = make_proxy("least_conn", [("a", "10.0.0.5", 1935, {"backup": True})])
    with pytest.raises(ValueError, match="at least one origin that is not a backup"):
        render_proxy_config(proxy, members)
    with pytest.raises(ValueError, match="not an nginx TCP proxy"):
        render_proxy_config(make_server(), [])
    proxy, members = make_proxy("least_conn", [("a", "10.0.0.5;evil", 1935, {})])
    with pytest.raises(ValueError):
        render_proxy_config(proxy, members)


@pytest.mark.parametrize("method", ["least_conn", "round_robin", "hash"])
def test_nginx_accepts_every_proxy_method(tmp_path: Path, method: str) -> None:
    options = [
        (n, h, p, {k: v for k, v in o.items() if k != "backup" or method != "hash"}) for n, h, p, o in PROXY_MEMBERS
    ]
    proxy, members = make_proxy(method, options)
    prefix = tmp_path / "proxy"
    for sub in ("conf", "logs", "tmp"):
        (prefix / sub).mkdir(parents=True)
    (prefix / "conf" / "nginx.conf").write_text(render_proxy_config(proxy, members))
    result = subprocess.run([NGINX, "-t", "-p", f"{prefix}/", "-c", "conf/nginx.conf", "-e", "logs/error.log"],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
