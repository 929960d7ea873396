"""The nginx/ffmpeg helpers work for real: a rendered origin starts, takes a publish, serves a player,
drops the publisher on /control, reloads, and refuses a broken config. No console, no database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.app_settings import clean_app_settings
from streams.models import Application, Server
from streams.rendering import render_origin_config
from tests.nginx import (
    FfmpegFactory,
    NginxFactory,
    NginxProcess,
    ProcessError,
    ffmpeg_factory,  # noqa: F401 - fixture
    free_port,
    nginx_factory,  # noqa: F401 - fixture
    wait_until,
)

STREAM = "teststream"
POLL_TIMEOUT_S = 15


def render_config(
    rtmp_port: int, http_port: int, app_names: tuple[str, ...] = ("live",), media: Path | None = None, **settings: Any
) -> str:
    """An origin on loopback with callbacks off, so nothing calls a console."""
    server = Server(
        id=1,
        name="harness",
        host="127.0.0.1",
        rtmp_port=rtmp_port,
        stat_url=f"http://127.0.0.1:{http_port}/stat",
        hook_secret="unused",
    )
    apps = [
        Application(id=i, server=server, name=name, settings=clean_app_settings({"callbacks": False, **settings}))
        for i, name in enumerate(app_names, start=1)
    ]
    media_path = str(media or "/nonexistent")  # only reached when an app turns hls or record on
    return render_origin_config(
        server, apps, callback_base_url="http://127.0.0.1:9", hls_path=media_path, record_path=media_path
    )


def start_origin(nginx_factory: NginxFactory, app_names: tuple[str, ...] = ("live",)) -> NginxProcess:  # noqa: F811
    rtmp_port, http_port = free_port(), free_port()
    config = render_config(rtmp_port, http_port, app_names)
    return nginx_factory(config, http_port=http_port, rtmp_port=rtmp_port)


def test_publish_play_and_drop_through_a_rendered_origin(
    nginx_factory: NginxFactory,  # noqa: F811
    ffmpeg_factory: FfmpegFactory,  # noqa: F811
) -> None:
    nginx = start_origin(nginx_factory)
    assert b"<name>live</name>" in nginx.stat_xml()

    publisher = ffmpeg_factory.publisher(nginx.rtmp_url("live", STREAM))
    assert wait_until(lambda: not publisher.alive() or f"<name>{STREAM}</name>".encode() in nginx.stat_xml()), (
        nginx.error_log()
    )
    assert publisher.alive(), publisher.stderr_text()

    player = ffmpeg_factory.player(nginx.rtmp_url("live", STREAM), seconds=3)
    player_rc = player.wait(timeout_s=60)
    assert player.received_frames(), (player_rc, player.stderr_text())
    assert player_rc == 0, player.stderr_text()

    assert nginx.control("drop/publisher", app="live", name=STREAM) == 1
    publisher_rc = publisher.wait(timeout_s=POLL_TIMEOUT_S)
    assert publisher_rc != 0  # ffmpeg reports the broken pipe and exits 1
    assert wait_until(lambda: f"<name>{STREAM}</name>".encode() not in nginx.stat_xml())


def test_player_of_a_missing_stream_gets_no_frames(
    nginx_factory: NginxFactory,  # noqa: F811
    ffmpeg_factory: FfmpegFactory,  # noqa: F811
) -> None:
    nginx = start_origin(nginx_factory)
    player = ffmpeg_factory.player(nginx.rtmp_url("live", "nobody-here"), seconds=1)
    player.wait(timeout_s=60)  # -rw_timeout ends it
    assert not player.received_frames()


def test_reload_serves_the_new_config(nginx_factory: NginxFactory) -> None:  # noqa: F811
    nginx = start_origin(nginx_factory)
    nginx.reload(render_config(nginx.rtmp_port, nginx.http_port, ("live", "live2")))
    assert wait_until(lambda: b"<name>live2</name>" in nginx.stat_xml()), nginx.error_log()


def test_workers_can_write_hls_under_the_prefix(
    tmp_path: Path,
    nginx_factory: NginxFactory,  # noqa: F811
    ffmpeg_factory: FfmpegFactory,  # noqa: F811
) -> None:
    """As root the worker runs as `nobody`; the harness must still let it write PREFIX/media."""
    prefix = tmp_path / "hls-origin"
    rtmp_port, http_port = free_port(), free_port()
    config = render_config(rtmp_port, http_port, media=prefix / "media", hls=True, hls_fragment_s=1)
    nginx = nginx_factory(config, http_port=http_port, rtmp_port=rtmp_port, prefix=prefix)
    publisher = ffmpeg_factory.publisher(nginx.rtmp_url("live", STREAM))
    playlist = prefix / "media" / "live" / f"{STREAM}.m3u8"
    assert wait_until(lambda: not publisher.alive() or playlist.exists()), (publisher.stderr_text(), nginx.error_log())
    assert "#EXTINF" in playlist.read_text()
    assert "Permission denied" not in nginx.error_log()


def test_broken_config_is_refused_before_start(nginx_factory: NginxFactory) -> None:  # noqa: F811
    config = render_config(free_port(), free_port()).replace("chunk_size 4096;", "chunk_size 4096")
    with pytest.raises(ProcessError, match="test failed"):
        nginx_factory(config, http_port=free_port(), rtmp_port=free_port())


def test_nginx_that_cannot_start_raises_with_its_output(nginx_factory: NginxFactory) -> None:  # noqa: F811
    running = start_origin(nginx_factory)
    config = render_config(free_port(), running.http_port)  # nginx -t passes; bind() fails at start
    with pytest.raises(ProcessError, match="Address already in use"):
        nginx_factory(config, http_port=running.http_port, rtmp_port=free_port())


def test_stop_ends_master_and_workers(nginx_factory: NginxFactory) -> None:  # noqa: F811
    nginx = start_origin(nginx_factory)
    group = nginx.pid
    nginx.stop()
    assert not nginx.alive()
    remaining = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(p) == group]
    assert remaining == []


def _pgid(proc_dir: Path) -> int | None:
    try:
        stat = (proc_dir / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])
