"""The fleet overview and a stream's page, rendered from stored state (the browser tests drive them live)."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from monitoring.models import Alert, FleetSample, Health, ServerStatus, Stream
from streams.models import PublishSession
from tests import factories

pytestmark = pytest.mark.django_db


def page(user, url):
    client = Client()
    client.force_login(user)
    response = client.get(url)
    return response, response.content.decode()


@pytest.fixture
def fleet():
    now = timezone.now()
    up, down = factories.make_server("edge-up"), factories.make_server("edge-down")
    ServerStatus.objects.create(server=up, health=Health.UP, snapshot={"bandwidth_in_kbps": 1500.0,
                                                                       "bandwidth_out_kbps": 600.0})  # fmt: skip
    ServerStatus.objects.create(server=down, health=Health.DOWN, consecutive_failures=4, health_since=now,
                                last_error="stat request failed: connection refused")  # fmt: skip
    good = Stream.objects.create(server=up, app="live", name="gym", live=True, live_since=now - timedelta(seconds=75),
                                 first_seen=now, last_seen=now,
                                 latest={"bitrate_in_kbps": 1200.0, "viewers": 3, "fps": 25.0})  # fmt: skip
    Stream.objects.create(server=up, app="live", name="frozen", live=True, live_since=now, first_seen=now,
                          last_seen=now, latest={"bitrate_in_kbps": 90.0, "viewers": 0, "fps": 0})  # fmt: skip
    app = factories.make_application(up)
    issued = factories.issue_key(app, "Hall camera")
    session = PublishSession.objects.create(server=up, application=app, key=issued.key, app_name="live",
                                            public_name="gym", client_id="7", publisher_addr="198.51.100.7",
                                            encoder="FMLE/3.0 (compatible; obs-studio/30.1)",
                                            started=now - timedelta(seconds=75))  # fmt: skip
    PublishSession.objects.create(server=up, application=app, app_name="live", public_name="hall",
                                  client_id="8", publisher_addr="198.51.100.8", started=now)  # fmt: skip
    Alert.objects.create(condition="server_down", subject=f"server:{down.pk}", server=down, state="open",
                         title="Server down: edge-down", started_at=now, opened_at=now)  # fmt: skip
    Alert.objects.create(condition="stream_dropped", subject="stream:x", server=up, state="closed",
                         title="Stream dropped: live/old", started_at=now, closed_at=now)  # fmt: skip
    for i in range(5):
        FleetSample.objects.create(at=now - timedelta(seconds=5 * (5 - i)), servers_up=1, servers_degraded=0,
                                   servers_down=1, live_streams=i, viewers=i, ingest_kbps=100.0 * i,
                                   egress_kbps=0)  # fmt: skip
    return {"good": good, "session": session, "up": up}


def test_overview_counts_sparklines_problems_first_and_what_is_live(fleet, viewer):
    response, html = page(viewer, "/")
    assert response.status_code == 200
    tiles = html[html.index('id="fleet-tiles"') : html.index('id="fleet-problems"')]
    assert re.search(r'tile-streams"><b>3</b>', tiles)  # 2 polled + 1 accepted by a callback, not polled yet
    assert "1.50 Mbps" in tiles and "600 kbps" in tiles and "<b>3</b><span>viewers" in tiles
    assert tiles.count('class="spark"') == 5 and 'data-points="5"' in tiles
    problems = html[html.index('id="fleet-problems"') : html.index('id="fleet-live"')]
    assert "edge-down" in problems and "connection refused" in problems and "live/frozen" in problems
    assert "Server down: edge-down" in problems and "live/old" not in problems  # open alerts only
    assert "no video (0 fps)" in problems and "live/gym" not in problems
    live = html[html.index('id="fleet-live"') :]
    assert "live/hall" in live and "figures at the next poll" in live and "live/gym" in live and "0:01:15" in live
    assert "frontend/pages/fleet.js" in html


def test_overview_empty_state_says_what_to_do(admin, viewer):
    assert "add one</a>" in page(admin, "/")[1]
    html = page(viewer, "/")[1]
    assert "No servers yet" in html and "ask an admin" in html and "Nothing is live" in html


def test_overview_queries_do_not_grow_with_the_fleet(viewer, django_assert_max_num_queries):
    now = timezone.now()
    servers = [factories.make_server(f"s{i}") for i in range(100)]
    ServerStatus.objects.bulk_create(ServerStatus(server=s, health=Health.DOWN, last_error="x") for s in servers)
    Stream.objects.bulk_create(
        Stream(server=servers[i % 100], app="live", name=f"c{i}", live=True, first_seen=now, last_seen=now,
               live_since=now, latest={"fps": 0})
        for i in range(500)
    )  # fmt: skip
    client = Client()
    client.force_login(viewer)
    with django_assert_max_num_queries(17):  # a fixed number, whatever the fleet
        assert client.get("/").status_code == 200


def test_stream_page_shows_figures_publisher_key_sessions_and_charts(fleet, operator, viewer):
    response, html = page(operator, f"/streams/{fleet['good'].pk}/")
    assert response.status_code == 200
    assert "1.20 Mbps" in html and "198.51.100.7" in html and "obs-studio/30.1" in html
    assert "Hall camera" in html and 'data-testid="kick"' in html
    assert f'action="/sessions/{fleet["session"].pk}/kick/"' in html
    assert f"/api/v1/streams/{fleet['good'].pk}/history/" in html
    assert "vendor/plotly.min.js" in html and "frontend/pages/stream.js" in html
    assert 'data-range="7d"' in html and 'id="chart-bitrate"' in html
    viewer_html = page(viewer, f"/streams/{fleet['good'].pk}/")[1]
    assert 'data-testid="kick"' not in viewer_html and "Kick" not in viewer_html
    assert page(viewer, "/streams/999999/")[0].status_code == 404


def test_streams_page_lists_callback_publishes_and_filters_stream_problems(fleet, viewer):
    html = page(viewer, "/streams/")[1]
    assert "3 live streams" in html and "hall" in html and "publishing (callback from 198.51.100.8)" in html
    problems = page(viewer, "/streams/?health=problem")[1]
    assert "1 live stream" in problems and "frozen" in problems and ">gym<" not in problems


def test_plotly_is_served_locally(viewer):
    client = Client()
    response = client.get("/static/vendor/plotly.min.js")
    assert response.status_code == 200
    assert b"plotly.js" in b"".join(response.streaming_content)[:2000]


def test_a_stream_left_on_the_old_worker_by_a_reload_is_pre_reload_not_dropped(fleet, viewer):
    from streams.models import ConfigRevision

    now = timezone.now()
    up = fleet["up"]
    missing = dict(server=up, app="live", live=True, first_seen=now, last_seen=now, missing_since=now,
                   latest={"bitrate_in_kbps": 900.0, "fps": 25.0})  # fmt: skip
    old = Stream.objects.create(name="before-reload", live_since=now - timedelta(minutes=10), **missing)
    Stream.objects.create(name="vanished", live_since=now - timedelta(seconds=5), **missing)
    ConfigRevision.objects.create(server=up, number=1, text="x", sha256="0" * 64, status="applied")
    ConfigRevision.objects.filter(server=up).update(created=now - timedelta(minutes=1))
    problems = page(viewer, "/")[1]
    problems = problems[problems.index('id="fleet-problems"') : problems.index('id="fleet-live"')]
    assert re.search(r"live/before-reload</a> on edge-up —\s*pre-reload \(on the old worker\)", problems)
    assert re.search(r"live/vanished</a> on edge-up —\s*missing from /stat: ", problems)  # live after the reload
    assert "pre-reload (on the old worker)" in page(viewer, "/streams/?health=problem")[1]
    assert "pre-reload (on the old worker)" in page(viewer, f"/streams/{old.pk}/")[1]
    assert "pre-reload (on the old worker)" in page(viewer, f"/servers/{up.pk}/")[1]
