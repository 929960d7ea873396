"""The live dashboards in a real headless Chromium, against a live console (daphne on PostgreSQL + Redis)
called back by a real nginx-rtmp that Tally configured, with real ffmpeg publishers.

Waits are bounded (so a broken page fails instead of hanging), never speed assertions; the measured
latencies are printed (``-s``) and reported in the README. "Without a reload" is checked with a marker
set on the page's ``window``: a reload would drop it.
"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import Health, ServerStatus, Stream
from streams.rendering import render_origin_config
from tests import factories
from tests.frontend.browser import browser, live_console, log_in  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser
WAIT_MS = 30_000  # a bound against hanging, not a speed target
MARKER = "window.tallyNoReload"


@pytest.fixture
def origin(live_console, nginx_factory):  # noqa: F811
    server, http_port = factories.make_loopback_server("gym-origin", poll_interval_s=1)
    app = factories.make_application(server, "live")
    nginx = nginx_factory(
        render_origin_config(server, [app], callback_base_url=live_console.base), http_port=http_port,
        rtmp_port=server.rtmp_port,
    )  # fmt: skip
    for role in ("admin", "operator", "viewer"):
        factories.make_user(role, role)
    return server, app, nginx


def open_live(new_page, base, username, path):
    page = new_page()
    log_in(page, base, username, path)
    page.wait_for_selector("#live-status[data-state=live]", timeout=WAIT_MS)
    page.evaluate(f"{MARKER} = true")
    return page


def not_reloaded(page):
    return page.evaluate(f"{MARKER} === true")


def test_a_real_publish_shows_live_everywhere_and_its_drop_too(live_console, origin, ffmpeg_factory, browser):  # noqa: F811
    server, app, nginx = origin
    issued = factories.issue_key(app, "Gym camera")
    base = live_console.base
    fleet = open_live(browser, base, "operator", "/")
    streams = open_live(browser, base, "operator", "/streams/")
    assert "Nothing is live" in fleet.inner_text("#fleet-live")

    started = time.monotonic()
    publisher = ffmpeg_factory.publisher(nginx.rtmp_url("live", issued.secret))
    fleet.wait_for_selector("#fleet-live >> text=live/gym-camera", timeout=WAIT_MS)
    on_fleet = time.monotonic() - started
    streams.wait_for_selector("#stream-table >> text=gym-camera", timeout=WAIT_MS)
    on_streams = time.monotonic() - started
    print(f"\npublish visible: fleet page {on_fleet:.2f} s, streams page {on_streams:.2f} s after ffmpeg started")
    assert not_reloaded(fleet) and not_reloaded(streams)
    assert issued.secret not in fleet.content() + streams.content()

    # The polls add figures: the row becomes a link to the stream's page.
    link = streams.wait_for_selector("#stream-table a:has-text('gym-camera')", timeout=WAIT_MS)
    stream_page = open_live(browser, base, "operator", link.get_attribute("href"))
    chart = "#chart-bitrate"
    stream_page.wait_for_function(f"document.querySelector('{chart}').dataset.points !== undefined", timeout=WAIT_MS)
    first = int(stream_page.get_attribute(chart, "data-points"))
    stream_page.wait_for_function(
        f"Number(document.querySelector('{chart}').dataset.points) >= {first + 2}", timeout=WAIT_MS
    )
    assert not_reloaded(stream_page)
    assert "127.0.0.1" in stream_page.inner_text("#stream-facts") and stream_page.is_visible("[data-testid=kick]")

    viewer = browser()
    log_in(viewer, base, "viewer", link.get_attribute("href"))
    assert viewer.locator("[data-testid=kick]").count() == 0 and "Gym camera" in viewer.content()
    viewer.goto(f"{base}/servers/{server.pk}/")
    assert viewer.locator("text=Edit").count() == 0 and viewer.locator("text=Add application").count() == 0

    stopped = time.monotonic()
    publisher.stop()
    fleet.wait_for_selector("#fleet-live >> text=live/gym-camera", state="detached", timeout=WAIT_MS)
    streams.wait_for_selector("#stream-table >> text=gym-camera", state="detached", timeout=WAIT_MS)
    stream_page.wait_for_selector("[data-testid=stream-state]:has-text('offline')", timeout=WAIT_MS)
    print(f"drop visible on both pages {time.monotonic() - stopped:.2f} s after ffmpeg stopped")
    assert not_reloaded(fleet) and not_reloaded(streams) and not_reloaded(stream_page)
    assert "Nothing is live" in fleet.inner_text("#fleet-live")


def test_a_thousand_live_streams_page_stays_usable(live_console, origin, browser):  # noqa: F811
    now = timezone.now()
    archive = factories.make_server("simulated-edge", enabled=False)  # not polled: its streams stay as made
    ServerStatus.objects.create(server=archive, health=Health.UP)
    Stream.objects.bulk_create(
        Stream(server=archive, app="live", name=f"cam-{i:04d}", live=True, live_since=now - timedelta(seconds=i),
               first_seen=now, last_seen=now, latest={"bitrate_in_kbps": 400.0 + i, "fps": 25.0, "viewers": i % 5})
        for i in range(1000)
    )  # fmt: skip
    page = open_live(browser, live_console.base, "viewer", "/streams/?sort=-bitrate")
    assert page.locator("#stream-table tbody tr").count() == 50
    assert "1000 live streams" in page.inner_text("#stream-table")
    assert page.inner_text("#stream-table tbody tr:first-child").count("cam-0999") == 1
    page.keyboard.press("Tab")  # keyboard: the skip link comes first
    assert page.evaluate("document.activeElement.className") == "skip"
    page.click("text=Next")
    assert "Page 2 of 20" in page.inner_text("#stream-table")
