"""The servers list and a server's page: polled figures with units, live streams, poll errors, config
revision, a fixed number of queries whatever the fleet size, hostile parameters, and no admin controls
for viewers."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.template.defaultfilters import date
from django.utils import timezone

from monitoring.models import Health, HealthTransition, ServerStatus, Stream
from streams import rendering
from streams.models import PublishSession, Server
from tests import factories
from tests.factories import logged_in
from tests.frontend.browser import browser, live_console, log_in  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

WAIT_MS = 30_000  # a bound against hanging, not a speed target
ADMIN_CONTROLS = ("Add server", ">Edit<", ">Delete<", "Add application", "Rotate callback secret", "/config/")


def snapshot(now, **figures):
    return {"server_id": None, "taken_at": now.isoformat(), "reachable": True, "error": "", "version": "1.2.7",
            "worker_pid": 4242, "uptime_s": 3723.0, "connections": 17, "bandwidth_in_kbps": 1200.0,
            "bandwidth_out_kbps": 850.0, "streams": [], **figures}  # fmt: skip


def up(server, now, **figures):
    return ServerStatus.objects.create(
        server=server, health=Health.UP, health_since=now - timedelta(hours=2), last_poll_at=now, last_ok_at=now,
        last_poll_ms=12.3, polls_total=100, poll_errors_total=3, snapshot=snapshot(now, **figures),
    )  # fmt: skip


def down(server, now, error="connection refused (http://127.0.0.1:8080/stat)"):
    return ServerStatus.objects.create(
        server=server, health=Health.DOWN, health_since=now - timedelta(minutes=5), last_poll_at=now,
        last_ok_at=now - timedelta(minutes=6), consecutive_failures=4, polls_total=50, poll_errors_total=4,
        last_error=error, snapshot=snapshot(now - timedelta(minutes=6), version="1.2.6"),
    )  # fmt: skip


def live_stream(server, name, now, app="live", **latest):
    return Stream.objects.create(
        server=server, app=app, name=name, live=True, live_since=now - timedelta(seconds=61), first_seen=now,
        last_seen=now, latest={"bitrate_in_kbps": 2500.0, "fps": 30.0, "width": 1920, "height": 1080,
                               "video_codec": "H264", "audio_codec": "AAC", "viewers": 4, **latest},
    )  # fmt: skip


def rows(html):
    """Server names in table order."""
    return re.findall(r'<tr data-server="\d+">\s*<td><a href="/servers/\d+/">([^<]+)</a>', html)


# --- the list ------------------------------------------------------------------------------------------


def test_list_shows_health_kind_role_version_uptime_streams_bandwidth_and_last_error(viewer):
    now = timezone.now()
    origin = factories.make_server("origin-a")
    edge = factories.make_server("edge-b", role=Server.Role.EDGE, host="192.0.2.7")
    wowza = factories.make_server("wowza-c", kind=Server.Kind.WOWZA, stat_url="",
                                  wowza_api_url="http://192.0.2.9:8087/")  # fmt: skip
    factories.make_server("proxy-d", role=Server.Role.PROXY, stat_url="")
    up(origin, now)
    down(edge, now)
    live_stream(origin, "cam-1", now)
    live_stream(origin, "cam-2", now)
    Stream.objects.create(server=origin, app="live", name="old", live=False, first_seen=now, last_seen=now)
    PublishSession.objects.create(server=edge, app_name="live", public_name="new-cam", client_id="9")

    html = logged_in(viewer).get("/servers/").content.decode()
    assert rows(html) == ["edge-b", "origin-a", "proxy-d", "wowza-c"]
    origin_row = html[html.index(f'data-server="{origin.pk}"') :].split("</tr>")[0]
    assert 'class="health health-up">up<' in origin_row and "nginx-rtmp · Origin" in origin_row
    assert "1.2.7" in origin_row and ">1:02:03<" in origin_row  # uptime h:mm:ss, ticking from data-since
    assert f'data-since="{date(now - timedelta(seconds=3723), "c")}"' in origin_row
    assert "1.20 Mbps / 850 kbps" in origin_row  # bandwidth with units
    assert f'<a href="/streams/?server={origin.pk}">2</a>' in origin_row  # live streams, not the stopped one
    edge_row = html[html.index(f'data-server="{edge.pk}"') :].split("</tr>")[0]
    assert 'class="health health-down">down<' in edge_row and "Origin" not in edge_row and "Edge" in edge_row
    assert "connection refused (http://127.0.0.1:8080/stat)" in edge_row  # the last poll error
    assert "— / —" in edge_row and "1.2.6" in edge_row  # a failing server's figures are unknown
    assert f'<a href="/streams/?server={edge.pk}">1</a>' in edge_row  # a publish no poll has shown yet
    wowza_row = html[html.index(f'data-server="{wowza.pk}"') :].split("</tr>")[0]
    assert "Wowza Streaming Engine" in wowza_row and "not polled yet" in wowza_row
    assert "a TCP proxy has no stat page" in html
    assert f'<time datetime="{date(now, "c")}">' in html  # the last poll, localized by live.js
    assert "frontend/pages/servers.js" in html and 'id="server-table" data-live-region' in html


def test_two_hundred_servers_in_a_fixed_number_of_queries(viewer, django_assert_max_num_queries):
    now = timezone.now()
    servers = Server.objects.bulk_create(
        Server(name=f"edge-{i:03d}", host="127.0.0.1", stat_url="http://127.0.0.1:8080/stat") for i in range(200)
    )
    ServerStatus.objects.bulk_create(
        ServerStatus(server=s, health=Health.UP, last_poll_at=now, last_ok_at=now,
                     snapshot=snapshot(now, bandwidth_in_kbps=1000.0 + i, streams=[{"name": "x"}] * 50))
        for i, s in enumerate(servers)
    )  # fmt: skip
    Stream.objects.bulk_create(
        Stream(server=servers[i % 200], app="live", name=f"cam-{i}", live=True, first_seen=now, last_seen=now)
        for i in range(600)
    )
    client = logged_in(viewer)
    with django_assert_max_num_queries(6):  # session, user, role, servers with status, two counts
        html = client.get("/servers/").content.decode()
    assert len(rows(html)) == 200 and "200 servers" in html
    assert f'<a href="/streams/?server={servers[199].pk}">3</a>' in html
    assert "1.20 Mbps" in html and "1.00 Mbps" in html
    with django_assert_max_num_queries(6):
        ordered = rows(client.get("/servers/?sort=-bandwidth").content.decode())
    assert ordered[:2] == ["edge-199", "edge-198"]


def test_filters_and_sorting(viewer):
    now = timezone.now()
    a, b, c, _ = (factories.make_server(name) for name in ("alpha", "bravo", "charlie", "delta"))  # delta: no poll
    up(a, now, bandwidth_in_kbps=100.0, bandwidth_out_kbps=0.0)
    down(b, now)
    up(c, now, bandwidth_in_kbps=5000.0)
    ServerStatus.objects.filter(server=c).update(warning="several nginx workers answer /stat")
    live_stream(a, "one", now)
    client = logged_in(viewer)
    assert rows(client.get("/servers/?health=down").content.decode()) == ["bravo"]
    assert rows(client.get("/servers/?health=problem").content.decode()) == ["bravo", "charlie"]
    assert rows(client.get("/servers/?health=unknown").content.decode()) == ["delta"]
    assert rows(client.get("/servers/?sort=health").content.decode()) == ["bravo", "delta", "alpha", "charlie"]
    assert rows(client.get("/servers/?sort=-bandwidth").content.decode()) == ["charlie", "alpha", "bravo", "delta"]
    assert rows(client.get("/servers/?sort=-streams").content.decode())[:2] == ["alpha", "bravo"]
    assert rows(client.get("/servers/?q=RAV").content.decode()) == ["bravo"]
    assert rows(client.get("/servers/?kind=wowza").content.decode()) == []
    empty = client.get("/servers/?q=nothing-like-this").content.decode()
    assert "No server matches these filters" in empty and "No servers yet" not in empty
    assert "several nginx workers answer /stat" in client.get("/servers/").content.decode()


@pytest.mark.parametrize(
    "query", ["q=%00", "q=" + "x" * 5000, "health=;drop", "health=%00", "sort=__class__", "sort=-", "kind=%00",
              "kind[]=wowza", "q=%F0%9F%92%A5", "page=-1"],
)  # fmt: skip
def test_hostile_parameters_still_answer(viewer, query):
    up(factories.make_server(), timezone.now())
    response = logged_in(viewer).get(f"/servers/?{query}")
    assert response.status_code == 200


def test_empty_list_says_what_to_do(viewer, admin):
    assert "ask an admin to add one" in logged_in(viewer).get("/servers/").content.decode()
    html = logged_in(admin).get("/servers/").content.decode()
    assert "No servers yet" in html and 'href="/servers/new/">add one</a>' in html


# --- a server's page ---------------------------------------------------------------------------------------


def test_server_page_shows_status_streams_applications_polls_and_revision(viewer):
    now = timezone.now()
    server = factories.make_server("origin-a", host="192.0.2.10")
    factories.make_application(server, "live")
    factories.make_application(server, "school")
    up(server, now, connections=23)
    live_stream(server, "cam-1", now, bitrate_in_kbps=3400.0)
    stalled = live_stream(server, "cam-2", now, app="school", fps=0)
    PublishSession.objects.create(server=server, app_name="live", public_name="just-started", client_id="7",
                                  publisher_addr="198.51.100.4")  # fmt: skip
    HealthTransition.objects.create(server=server, at=now - timedelta(hours=3), from_health="up",
                                    to_health="degraded", reason="timeout after 5.0 s")  # fmt: skip
    HealthTransition.objects.create(server=server, at=now - timedelta(hours=2), from_health="degraded",
                                    to_health="up")  # fmt: skip

    html = logged_in(viewer).get(f"/servers/{server.pk}/").content.decode()
    assert '<span class="health-up">up</span>' in html
    for text in ("1.20 Mbps", "850 kbps", "<b>23</b>", ">1:02:03<", "1.2.7", "<b>3</b><span>live streams"):
        assert text in html, text
    stream_row = html[html.index(f'data-stream="{stalled.pk}"') :].split("</tr>")[0]
    assert f'href="/streams/{stalled.pk}/">cam-2</a>' in stream_row and "no video" in stream_row
    assert "3.40 Mbps" in html and "1920×1080" in html and "H264 / AAC" in html and ">0:01:01<" in html
    assert "just-started" in html and "callback from 198.51.100.4" in html
    apps = html[html.index('id="server-apps"') : html.index('id="server-polls"')]
    assert re.findall(r">(live|school)</a></td><td>Live</td><td>0</td><td>(\d)</td>", apps) == [
        ("live", "1"),
        ("school", "1"),
    ]
    polls = html[html.index('id="server-polls"') :]
    assert "100, of which 3 failed" in polls and "(12 ms)" in polls and "none: the last poll answered" in polls
    assert "timeout after 5.0 s" in polls
    assert polls.index('degraded</span> → <span class="health-up">up') < polls.index("timeout after 5.0 s")
    config = rendering.render_server_config(server, callback_base_url=settings.CALLBACK_BASE_URL)
    revision = hashlib.sha256(config.encode()).hexdigest()[:12]
    assert f"rendered config sha256:{revision}</span> (no deploys recorded yet)" in html
    assert f'data-server="{server.pk}" data-history-url="/api/v1/servers/{server.pk}/history/"' in html
    assert 'id="chart-bandwidth"' in html and 'id="chart-connections"' in html and 'data-range="24h"' in html
    assert html.index("vendor/plotly.min.js") < html.index("frontend/pages/server.js")
    for region in ("server-status", "server-streams", "server-apps", "server-polls"):
        assert f'id="{region}" data-live-region' in html


def test_a_failing_server_shows_its_error_and_no_stale_figures(viewer):
    now = timezone.now()
    server = factories.make_server("edge-b", role=Server.Role.EDGE)
    down(server, now, error="HTTP 502 from http://127.0.0.1:8080/stat")
    html = logged_in(viewer).get(f"/servers/{server.pk}/").content.decode()
    assert '<span class="health-down">down</span>' in html
    assert "Last poll failed: HTTP 502 from http://127.0.0.1:8080/stat" in html
    assert "the last 4 in a row" in html and "1.20 Mbps" not in html and "<b>—</b><span>bandwidth in" in html
    assert "figures are unknown until a poll answers again" in html


def test_server_page_empty_states(viewer, admin):
    server = factories.make_server("fresh")
    html = logged_in(viewer).get(f"/servers/{server.pk}/").content.decode()
    assert "Not polled yet: the first poll comes within 5 s" in html
    assert "Nothing is live on this server" in html and "it needs an application first" in html
    assert "No applications yet" in html and "ask an admin to add one" in html
    assert "No polls yet, so no poll errors." in html and "No health changes recorded yet" in html
    wowza = factories.make_server("wz", kind=Server.Kind.WOWZA, stat_url="", wowza_api_url="http://192.0.2.9:8087/")
    html = logged_in(admin).get(f"/servers/{wowza.pk}/").content.decode()
    assert "applications and publishers through the REST API" in html and "/config/" not in html
    assert f"/servers/{wowza.pk}/deploys/" in html
    proxy = factories.make_server("px", role=Server.Role.PROXY, stat_url="")
    assert "a TCP proxy has no stat page" in logged_in(viewer).get(f"/servers/{proxy.pk}/").content.decode()


def test_server_page_caps_live_streams_and_queries(viewer, django_assert_max_num_queries):
    now = timezone.now()
    server = factories.make_server()
    for i in range(20):
        factories.make_application(server, f"app-{i:02d}")
    factories.make_application(server, "live")
    up(server, now)
    Stream.objects.bulk_create(
        Stream(server=server, app="live", name=f"cam-{i:03d}", live=True, first_seen=now, last_seen=now,
               latest={"bitrate_in_kbps": 900.0})
        for i in range(150)
    )  # fmt: skip
    client = logged_in(viewer)
    with django_assert_max_num_queries(13):  # not per stream or application (+subscription, deployed revision, pool)
        html = client.get(f"/servers/{server.pk}/").content.decode()
    assert html.count("<tr data-stream=") == 100
    assert f'And 50 more: <a href="/streams/?server={server.pk}">' in html and "<b>150</b>" in html


def test_unknown_server_is_404(viewer):
    client = logged_in(viewer)
    assert client.get("/servers/999999/").status_code == 404
    assert client.get("/servers/99999999999999999999/").status_code == 404


# --- roles -------------------------------------------------------------------------------------------------


def test_viewer_sees_no_admin_controls(viewer, operator):
    server = factories.make_server()
    factories.make_application(server)
    up(server, timezone.now())
    for user in (viewer, operator):
        client = logged_in(user)
        for url in ("/servers/", f"/servers/{server.pk}/"):
            html = client.get(url).content.decode()
            assert client.get(url).status_code == 200
            for control in ADMIN_CONTROLS:
                assert control not in html, (user.username, url, control)
        assert "rendered config sha256:" in html  # the revision itself is not a secret


def test_admin_sees_the_controls(admin):
    server = factories.make_server()
    factories.make_application(server)
    client = logged_in(admin)
    assert "Add server" in client.get("/servers/").content.decode()
    html = client.get(f"/servers/{server.pk}/").content.decode()
    for control in ADMIN_CONTROLS[1:]:
        assert control in html, control


def test_outsider_is_refused(outsider):
    server = factories.make_server()
    client = logged_in(outsider)
    assert client.get("/servers/").status_code == 403
    assert client.get(f"/servers/{server.pk}/").status_code == 403


# --- live, in a real browser ----------------------------------------------------------------------------


@pytest.mark.browser
def test_server_pages_follow_a_real_origin_in_place(live_console, nginx_factory, ffmpeg_factory, browser):  # noqa: F811
    """daphne polling a real nginx-rtmp every second: both pages follow its health, figures and streams
    over the websocket without a reload (a marker on ``window`` would be gone), the charts take live points."""
    server, http_port = factories.make_loopback_server("gym-origin", poll_interval_s=1)
    app = factories.make_application(server, "live")
    config = rendering.render_origin_config(server, [app], callback_base_url=live_console.base)
    nginx = nginx_factory(config, http_port=http_port, rtmp_port=server.rtmp_port)
    issued = factories.issue_key(app, "Gym camera")
    factories.make_user("watcher", "viewer")
    row = f"tr[data-server='{server.pk}']"

    def open_live(path):
        page = browser()
        log_in(page, live_console.base, "watcher", path)
        page.wait_for_selector("#live-status[data-state=live]", timeout=WAIT_MS)
        page.evaluate("window.tallyNoReload = true")
        return page

    listing, page = open_live("/servers/"), open_live(f"/servers/{server.pk}/")
    page.wait_for_selector("[data-testid=tile-health] .health-up", timeout=WAIT_MS)
    listing.wait_for_selector(f"{row} .health-up", timeout=WAIT_MS)
    assert page.get_attribute("[data-testid=tile-health] time", "title")  # localized, ISO kept in the title
    page.wait_for_function("document.querySelector('#chart-bandwidth').dataset.points !== undefined", timeout=WAIT_MS)
    points = int(page.get_attribute("#chart-bandwidth", "data-points"))
    page.wait_for_function(
        f"Number(document.querySelector('#chart-bandwidth').dataset.points) >= {points + 2}", timeout=WAIT_MS
    )  # one point per poll from server.status

    publisher = ffmpeg_factory.publisher(nginx.rtmp_url("live", issued.secret))
    page.wait_for_selector("#server-streams a:has-text('gym-camera')", timeout=WAIT_MS)
    listing.wait_for_selector(f"{row} a:has-text('1')", timeout=WAIT_MS)
    page.wait_for_function(
        "/^[1-9][0-9.]* (kbps|Mbps)$/.test(document.querySelector('[data-testid=tile-in] b').textContent)",
        timeout=WAIT_MS,
    )
    publisher.stop()
    page.wait_for_selector("#server-streams >> text=Nothing is live on this server", timeout=WAIT_MS)

    nginx.stop()
    page.wait_for_selector("#server-status >> text=Last poll failed", timeout=WAIT_MS)
    listing.wait_for_selector(f"{row} .error", timeout=WAIT_MS)
    page.wait_for_selector("#server-polls >> text=→", timeout=WAIT_MS)  # the health change, with its error
    assert listing.evaluate("window.tallyNoReload === true") and page.evaluate("window.tallyNoReload === true")

    page.focus("button[data-range='1h']")
    page.keyboard.press("Enter")
    page.wait_for_selector("button[data-range='1h'][aria-pressed='true']", timeout=WAIT_MS)
