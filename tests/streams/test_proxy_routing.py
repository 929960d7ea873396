"""The classic topology on real nginx: a TCP proxy (``stream {}``, least_conn) rendered by Tally in front of
two nginx-rtmp origins that call a live console back. Publishers through the proxy land on different
origins; every player through the proxy gets frames, because a non-owner origin's ``on_play`` answers a
302 to the owner and nginx pulls the stream (lab README §6, §8)."""

import re

import pytest

from streams import hooks
from streams.models import ProxyMember, PublishSession, Server
from streams.rendering import render_server_config
from tests import factories
from tests.nginx import free_port, wait_until

BOUND_S = 30


def published_names(nginx):
    """Streams with a real (not relayed) publisher in this origin's /stat."""
    xml = nginx.stat_xml().decode()
    names = set()
    for block in re.findall(r"<stream>(.*?)</stream>", xml, re.S):
        name = re.search(r"<name>([^<]*)</name>", block).group(1)
        publishers = re.findall(r"<client>((?:(?!</client>).)*<publishing/>(?:(?!</client>).)*)</client>", block, re.S)
        if any("ngx-local-relay" not in client for client in publishers):
            names.add(name)
    return names


@pytest.fixture
def topology(transactional_db, live_server, nginx_factory, settings):
    settings.CALLBACK_BASE_URL = f"http://127.0.0.1:{live_server.thread.port}"
    proxy_port = free_port()
    proxy = factories.make_server("front", host="127.0.0.1", rtmp_port=proxy_port, role=Server.Role.PROXY,
                                  proxy_method=Server.ProxyMethod.LEAST_CONN, nginx_prefix_paths=True)  # fmt: skip
    origins = []
    for name in ("origin-a", "origin-b"):
        server, http_port = factories.make_loopback_server(name, nginx_prefix_paths=True)
        factories.make_application(server, "live", settings={"on_update": False})
        ProxyMember.objects.create(proxy=proxy, origin=server)
        origins.append((server, http_port))
    # Rendered as a deploy renders them (render_server_config): origins behind a proxy route plays.
    nginxes = [nginx_factory(render_server_config(server, callback_base_url=settings.CALLBACK_BASE_URL),
                             http_port=http_port, rtmp_port=server.rtmp_port) for server, http_port in origins]  # fmt: skip
    front = nginx_factory(render_server_config(proxy, callback_base_url=""), http_port=free_port(),
                          rtmp_port=proxy_port, has_stat=False)  # fmt: skip
    return [server.applications.get() for server, _ in origins], nginxes, front


def test_least_conn_spreads_publishers_and_every_player_gets_frames(topology, ffmpeg_factory):
    apps, nginxes, front = topology
    app_a = apps[0]
    keys = [factories.issue_key(app_a, f"Camera {i}", public_name=f"cam{i}") for i in (1, 2)]
    publishers = []
    for issued in keys:  # one after the other: least_conn sends the second to the other origin
        publishers.append(ffmpeg_factory.publisher(front.rtmp_url("live", issued.secret)))
        assert wait_until(lambda name=issued.key.public_name: PublishSession.objects.filter(
            public_name=name, ended__isnull=True).exists(), timeout_s=BOUND_S), publishers[-1].stderr_text()  # fmt: skip
    assert wait_until(lambda: published_names(nginxes[0]) | published_names(nginxes[1]) == {"cam1", "cam2"},
                      timeout_s=BOUND_S)  # fmt: skip
    assert published_names(nginxes[0]) and published_names(nginxes[1])  # one on each origin
    # Keys of origin-a's "live" publish on origin-b too: both sit behind the same proxy.
    assert {s.server.name for s in PublishSession.objects.filter(ended__isnull=True)} == {"origin-a", "origin-b"}
    for _ in range(2):  # a player of each stream, twice: the proxy sends them to both origins
        players = [ffmpeg_factory.player(front.rtmp_url("live", name), seconds=3) for name in ("cam1", "cam2")]
        for player in players:
            assert player.wait(timeout_s=BOUND_S) == 0, player.stderr_text()
            assert player.frames() > 0, player.stderr_text()


def test_on_play_routes_to_the_owner_only_behind_a_shared_proxy(transactional_db):
    a = factories.make_server("a", host="10.0.0.1", rtmp_port=1936)
    b = factories.make_server("b", host="10.0.0.2")
    c = factories.make_server("c", host="10.0.0.3")
    proxy = factories.make_server("p", host="10.0.0.9", role=Server.Role.PROXY)
    for origin in (a, b):
        ProxyMember.objects.create(proxy=proxy, origin=origin)
    app = factories.make_application(a, "live")
    PublishSession.objects.create(server=a, application=app, app_name="live", public_name="cam", client_id="1",
                                  started=app.created)  # fmt: skip
    play = hooks.Callback("play", "live", "cam", "9", "192.0.2.7", "LNX 9,0,124,2", "play")
    assert hooks.handle(b, play) == hooks.Decision(302, location="rtmp://10.0.0.1:1936/live/cam")
    assert hooks.handle(a, play) == hooks.ALLOW  # the owner serves it
    assert hooks.handle(c, play) == hooks.ALLOW  # not behind the proxy: no routing
    relay = hooks.Callback("play", "live", "cam", "10", "10.0.0.1:1936/live/cam", "ngx-local-relay", "play")
    assert hooks.handle(b, relay) == hooks.ALLOW
    assert hooks.same_pool(a.pk, b.pk) and not hooks.same_pool(a.pk, c.pk)
