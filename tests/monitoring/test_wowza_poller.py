"""WowzaPoller against the live stand-in (basic and digest), on recorded bodies, and on hostile input.

The stand-in's own answers are checked against the contract in test_wowza_contract.py; here it plays a
server whose streams come and go. Expected figures come from the stand-in's settings: a stream of
``bitrate_kbps`` reports ``bytesInRate`` = kbps × 125 bytes/s, which the poller turns back into kbps.
Pure tests: no database (``Server`` objects are built, never saved).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from monitoring.pollers import PollError, get_poller
from monitoring.pollers.wowza import BUNDLE_FORMAT, MAX_BUNDLE_BYTES, WowzaPoller, parse_bundle
from monitoring.snapshots import ServerSnapshot, StreamSnapshot
from tests.monitoring.polls import fetch
from tests.wowza_standin import (
    VHOST_PATH,
    WowzaStandin,
    load_recorded,
    wowza_standin,  # noqa: F401
    wowza_standin_factory,  # noqa: F401
)

TAKEN_AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
STATUS = "/v2/servers/_defaultServer_/status"
APPS = f"{VHOST_PATH}/applications"
LIVE = f"{APPS}/live"
CAM1_STATS = f"{LIVE}/instances/_definst_/incomingstreams/cam1/monitoring/current"
Factory = Callable[..., WowzaStandin]


def make_server(standin: WowzaStandin, **fields: Any) -> Any:
    from streams.models import Server

    values = {"name": "wowza-1", "kind": "wowza", "host": "127.0.0.1", "wowza_api_url": standin.url,
              "wowza_username": standin.username, "wowza_password": standin.password,
              "wowza_auth": standin.auth if standin.auth != "none" else "digest"}  # fmt: skip
    values.update(fields)
    return Server(**values)


def poll(server: Any, poller: WowzaPoller | None = None) -> ServerSnapshot:
    """fetch + parse the way the poll loop does: a ``PollError`` becomes an unreachable snapshot."""
    poller = poller or WowzaPoller()
    try:
        raw = fetch(server, poller)
    except PollError as exc:
        return ServerSnapshot.unreachable(7, TAKEN_AT, str(exc))
    return poller.parse(raw, TAKEN_AT, server_id=7)


def by_name(snapshot: ServerSnapshot) -> dict[str, StreamSnapshot]:
    assert snapshot.reachable, snapshot.error
    return {stream.name: stream for stream in snapshot.streams}


def assert_near(value: float | None, expected: float, tolerance: float = 0.2) -> None:
    assert value is not None
    assert abs(value - expected) <= tolerance * expected, f"{value} is not within {tolerance:.0%} of {expected}"


# --- a live stand-in ---------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["digest", "basic"])
def test_a_stream_shows_up_with_its_figures(wowza_standin_factory: Factory, auth: str) -> None:  # noqa: F811
    standin = wowza_standin_factory(auth=auth)
    standin.add_stream("live", "cam1", "192.0.2.10", bitrate_kbps=2500, viewers=3)
    standin.advance(42)

    snapshot = poll(make_server(standin))

    assert snapshot.reachable and snapshot.error == ""
    assert (snapshot.server_id, snapshot.taken_at) == (7, TAKEN_AT)
    assert snapshot.version == "Wowza/4.7.0 (build 20186)"
    assert snapshot.worker_pid is None
    assert 42 <= snapshot.uptime_s < 60
    assert snapshot.connections == 4  # the publisher and three players
    assert_near(snapshot.bandwidth_in_kbps, 2500)
    assert_near(snapshot.bandwidth_out_kbps, 3 * 2500)
    cam1 = by_name(snapshot)["cam1"]
    assert (cam1.app, cam1.publishing, cam1.active) == ("live", True, True)
    assert_near(cam1.bitrate_in_kbps, 2500)
    assert_near(cam1.bitrate_out_kbps, 3 * 2500)
    assert cam1.viewers == 3
    assert cam1.publisher_address == "192.0.2.10"
    assert 42 <= cam1.uptime_s < 60
    assert_near(cam1.bytes_in, 2500 * 125 * 42)
    assert cam1.relays is None and cam1.publisher_client_id is None and cam1.video_codec is None


def test_counters_move_between_polls(wowza_standin: WowzaStandin) -> None:  # noqa: F811
    wowza_standin.add_stream("live", "cam1", "wowz://198.51.100.7:39369", bitrate_kbps=800)
    server = make_server(wowza_standin)
    first = by_name(poll(server))["cam1"]
    wowza_standin.advance(10)
    wowza_standin.set_viewers("live", "cam1", 2)
    second = by_name(poll(server))["cam1"]
    assert first.publisher_address == "198.51.100.7"
    assert second.uptime_s - first.uptime_s >= 10
    assert_near(second.bytes_in - first.bytes_in, 800 * 125 * 10)
    assert (first.viewers, second.viewers) == (0, 2)


def test_a_removed_stream_leaves_the_next_snapshot(wowza_standin: WowzaStandin) -> None:  # noqa: F811
    standin = wowza_standin
    standin.add_stream("live", "cam1", "192.0.2.10")
    standin.add_stream("live", "cam2", "192.0.2.11", instance="backup")
    standin.add_stream("events", "stage", "2001:db8::5", bitrate_kbps=600)
    server = make_server(standin)
    assert {(s.app, s.name) for s in poll(server).streams} == {("live", "cam1"), ("live/backup", "cam2"),
                                                              ("events", "stage")}  # fmt: skip
    standin.remove_stream("live", "cam1")
    after = poll(server)
    assert set(by_name(after)) == {"cam2", "stage"}
    assert by_name(after)["stage"].publisher_address == "2001:db8::5"
    standin.remove_stream("events", "stage")
    assert set(by_name(poll(server))) == {"cam2"}


def test_an_idle_server(wowza_standin: WowzaStandin) -> None:  # noqa: F811
    snapshot = poll(make_server(wowza_standin))
    assert snapshot.reachable and snapshot.streams == ()
    assert (snapshot.connections, snapshot.bandwidth_in_kbps, snapshot.bytes_in) == (0, 0.0, 0)


def test_a_server_without_rest_authentication(wowza_standin_factory: Factory) -> None:  # noqa: F811
    standin = wowza_standin_factory(auth="none")
    standin.add_stream("live", "cam1", "192.0.2.10")
    server = make_server(standin, wowza_username="", wowza_password="")
    assert set(by_name(poll(server))) == {"cam1"}


def test_an_app_or_stream_that_vanishes_during_the_poll(wowza_standin: WowzaStandin) -> None:  # noqa: F811
    """A 404 on a per-application or per-stream call is the race of a poll, not an error."""
    standin = wowza_standin
    standin.add_stream("live", "cam1", "192.0.2.10")
    standin.add_stream("events", "stage", "192.0.2.12")
    standin.inject(CAM1_STATS, status=404, body=load_recorded("error-404"))
    standin.inject(f"{APPS}/events/instances", status=404, body=load_recorded("error-404"))
    snapshot = poll(make_server(standin))
    cam1 = by_name(snapshot)["cam1"]
    assert set(by_name(snapshot)) == {"cam1"}
    assert (cam1.publishing, cam1.bitrate_in_kbps, cam1.uptime_s, cam1.publisher_address) == (
        True, None, None, "192.0.2.10")  # fmt: skip


def test_the_registry_serves_wowza() -> None:
    assert isinstance(get_poller("wowza"), WowzaPoller)


# --- hostile servers ---------------------------------------------------------------------------------

HTML = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>proxy login</body></html>"
TRUNCATED = json.dumps(load_recorded("getApplicationsConfig"))[:300]
HOSTILE = [
    ("html status", STATUS, {"body": HTML, "content_type": "text/html"}, "server status: not Wowza JSON (got HTML)"),
    ("html everywhere", "*", {"body": HTML, "content_type": "text/html"}, "not Wowza JSON (got HTML)"),
    ("xml", STATUS, {"body": "<Root><Uptime>3</Uptime></Root>", "content_type": "application/xml"}, "got XML"),
    ("500 status", STATUS, {"status": 500, "body": ""}, "server status request failed: HTTP 500"),
    ("503 instances", f"{LIVE}/instances", {"status": 503}, "instances of 'live' request failed: HTTP 503"),
    ("truncated apps", APPS, {"body": TRUNCATED}, "application list: invalid JSON"),
    ("truncated instances", f"{LIVE}/instances", {"body": '{"instanceList": [{"incomingStr'},
     "instances of 'live': invalid JSON"),
    ("empty status", STATUS, {"body": ""}, "server status: empty response"),
    ("status is an array", STATUS, {"body": []}, "server status: expected a JSON object, got an array"),
    ("apps wrong type", APPS, {"body": {"applications": "live"}},
     "application list: 'applications' is a string, expected an array"),
    ("instances wrong type", f"{LIVE}/instances", {"body": {"instanceList": {"name": "_definst_"}}},
     "instances of 'live': 'instanceList' is an object, expected an array"),
    ("instances missing", f"{LIVE}/instances", {"body": {"serverName": "_defaultServer_"}},
     "instances of 'live': 'instanceList' is missing"),
    ("error body with 200", STATUS, {"body": load_recorded("error-404")}, "server status: Wowza error 404"),
    ("slow status", STATUS, {"delay_s": 5.0}, "server status request failed: timed out after 0.5 s"),
    ("slow stream stats", CAM1_STATS, {"delay_s": 5.0}, "statistics of stream 'cam1' request failed: timed out"),
    ("huge body", APPS, {"body": b"[" + b"0," * 100_000 + b"0]"}, "response too large"),
    ("huge unannounced body", APPS, {"body": b" " * 300_000, "announce_length": False}, "response too large"),
    ("wrong base URL", STATUS, {"status": 404, "body": load_recorded("error-404")}, "check the REST API base URL"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "fault", "reason"), [case[1:] for case in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_answers_give_an_unreachable_snapshot(
    wowza_standin_factory: Factory,  # noqa: F811
    path: str,
    fault: dict[str, Any],
    reason: str,
) -> None:
    hostile, healthy = wowza_standin_factory(), wowza_standin_factory(auth="basic")
    for standin in (hostile, healthy):
        standin.add_stream("live", "cam1", "192.0.2.10", bitrate_kbps=1500)
    hostile.inject(path, **fault)
    poller = WowzaPoller(call_timeout_s=0.5, max_response_bytes=64 * 1024)

    snapshot = poll(make_server(hostile), poller)

    assert not snapshot.reachable
    assert reason in snapshot.error
    assert snapshot.streams == () and snapshot.version is None
    assert_near(by_name(poll(make_server(healthy), poller))["cam1"].bitrate_in_kbps, 1500)


def test_bad_credentials_give_an_unreachable_snapshot(wowza_standin_factory: Factory) -> None:  # noqa: F811
    digest, basic = wowza_standin_factory(), wowza_standin_factory(auth="basic")
    for standin in (digest, basic):
        standin.add_stream("live", "cam1", "192.0.2.10")
        snapshot = poll(make_server(standin, wowza_password="wrong"))
        assert not snapshot.reachable
        assert "refused the credentials (HTTP 401 Unauthorized on server status)" in snapshot.error
        assert f"auth method ({standin.auth})" in snapshot.error and "wrong" not in snapshot.error
    # a basic-auth server polled as digest (and the other way round) is refused the same way
    assert "HTTP 401" in poll(make_server(basic, wowza_auth="digest")).error
    assert "HTTP 401" in poll(make_server(digest, wowza_auth="basic")).error
    assert set(by_name(poll(make_server(digest)))) == {"cam1"}


def test_a_slow_server_does_not_hold_up_a_healthy_one(wowza_standin_factory: Factory) -> None:  # noqa: F811
    slow, healthy = wowza_standin_factory(), wowza_standin_factory()
    slow.inject(STATUS, delay_s=10.0)
    healthy.add_stream("live", "cam1", "192.0.2.10", bitrate_kbps=1000, viewers=1)
    poller = get_poller("wowza")
    assert isinstance(poller, WowzaPoller)
    fast_poller = WowzaPoller(call_timeout_s=1.0)
    with ThreadPoolExecutor(max_workers=2) as pool:
        stuck = pool.submit(poll, make_server(slow), fast_poller)
        fine = pool.submit(poll, make_server(healthy), poller)
        assert by_name(fine.result())["cam1"].viewers == 1
        assert "timed out" in stuck.result().error


def test_fetch_errors_say_whether_a_retry_can_help(wowza_standin_factory: Factory) -> None:  # noqa: F811
    standin = wowza_standin_factory()
    poller = WowzaPoller(call_timeout_s=0.5)
    cases = [
        (make_server(standin, wowza_password="wrong"), None, True),
        (make_server(standin, wowza_api_url=standin.url + "/v2"), None, True),
        (make_server(standin), {"status": 500}, False),
        (make_server(standin), {"delay_s": 3.0}, False),
        (make_server(standin, wowza_api_url=""), None, True),
    ]
    for server, fault, permanent in cases:
        standin.clear_faults()
        if fault:
            standin.inject(STATUS, **fault)
        with pytest.raises(PollError) as excinfo:
            fetch(server, poller)
        assert excinfo.value.permanent is permanent, str(excinfo.value)
    standin.stop()
    with pytest.raises(PollError) as excinfo:
        fetch(make_server(standin), poller)
    assert excinfo.value.permanent is False and "cannot connect" in str(excinfo.value)


def test_the_poll_budget_bounds_a_long_series_of_calls(wowza_standin: WowzaStandin) -> None:  # noqa: F811
    for index in range(3):
        wowza_standin.add_stream("live", f"cam{index}", "192.0.2.10")
        wowza_standin.inject(f"{LIVE}/instances/_definst_/incomingstreams/cam{index}/monitoring/current", delay_s=0.3)
    snapshot = poll(make_server(wowza_standin), WowzaPoller(call_timeout_s=1.0, poll_budget_s=0.5))
    assert not snapshot.reachable
    assert "poll took longer than 0.5 s" in snapshot.error or "timed out" in snapshot.error


def test_digest_is_challenged_once_per_poll(wowza_standin: WowzaStandin) -> None:  # noqa: F811
    """Digest calls go one at a time: the stand-in refuses a nonce count that arrives out of order."""
    for app in ("live", "events"):
        for index in range(3):
            wowza_standin.add_stream(app, f"{app}{index}", "192.0.2.10")
    wowza_standin.clear_exchanges()
    snapshot = poll(make_server(wowza_standin))
    assert len(snapshot.streams) == 6 and all(stream.bitrate_in_kbps for stream in snapshot.streams)
    statuses = [exchange.status for exchange in wowza_standin.exchanges]
    assert statuses[0] == 401 and set(statuses[1:]) == {200}, statuses


# --- parse on bundles built by hand ------------------------------------------------------------------


def entry(body: Any, status: int = 200) -> dict[str, Any]:
    return {"status": status, "body": body if isinstance(body, str) else json.dumps(body)}


def recorded_bundle() -> dict[str, Any]:
    """A bundle of real WSE 4.7.0 bodies: my_app with the two streams of the recorded instance list."""
    instances = load_recorded("getInstancesConfig")
    stats = load_recorded("getCurrentIncomingStreamStatistics")
    return {
        "format": BUNDLE_FORMAT,
        "server_status": entry(load_recorded("getServerStatusConfig")),
        "machine": entry("", 404),
        "applications": entry(load_recorded("getApplicationsConfig")),
        "apps": [
            {
                "id": "my_app",
                "monitoring": entry(load_recorded("getCurrentApplicationStatistics")),
                "instances": entry(instances),
                "streams": [
                    {"instance": "_definst_", "name": name, "monitoring": entry({**stats, "name": name})}
                    for name in ("myStr", "myStream")
                ],
            }
        ],
    }


def parse(bundle: Any) -> ServerSnapshot:
    raw = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
    return parse_bundle(raw, TAKEN_AT, server_id=3)


def test_parse_recorded_bodies() -> None:
    snapshot = parse(recorded_bundle())
    assert snapshot.reachable, snapshot.error
    assert snapshot.version == "Wowza/4.7.0 (build 20186)"
    assert (snapshot.uptime_s, snapshot.connections) == (3296.008, 0)
    assert (snapshot.bandwidth_in_kbps, snapshot.bandwidth_out_kbps, snapshot.bytes_in, snapshot.bytes_out) == (
        0.0, 0.0, 0, 0)  # fmt: skip
    assert snapshot.streams == (
        StreamSnapshot(app="my_app", name="myStr", publishing=True, active=True, bitrate_in_kbps=0.0,
                       bitrate_out_kbps=0.0, bytes_in=0, bytes_out=0, viewers=0, uptime_s=0.0,
                       publisher_address="192.168.3.32"),
        StreamSnapshot(app="my_app", name="myStream", publishing=True, active=True, bitrate_in_kbps=0.0,
                       bitrate_out_kbps=0.0, bytes_in=0, bytes_out=0, viewers=0, uptime_s=0.0,
                       publisher_address="192.168.3.152"),
    )  # fmt: skip
    assert ServerSnapshot.from_json(json.loads(json.dumps(snapshot.to_json()))) == snapshot


def test_parse_units_and_fallbacks() -> None:
    bundle = recorded_bundle()
    status = load_recorded("getServerStatusConfig")
    del status["timeRunning"], status["currentConnections"], status["serverBuild"]
    bundle["server_status"] = entry(status)
    bundle["machine"] = entry({"serverUptime": 77, "connectionCount": 5})
    stream = bundle["apps"][0]["streams"][0]
    stream["monitoring"] = entry({"bytesInRate": 312500, "bytesOutRate": 625000.0, "uptime": 61, "bytesIn": 10**12,
                                  "connectionCount": {"RTMP": 1, "CUPERTINO": 2}})  # fmt: skip
    snapshot = parse(bundle)
    assert (snapshot.version, snapshot.uptime_s, snapshot.connections) == ("Wowza/4.7.0", 77.0, 5)
    my_str = by_name(snapshot)["myStr"]
    assert (my_str.bitrate_in_kbps, my_str.bitrate_out_kbps, my_str.uptime_s) == (2500.0, 5000.0, 61.0)
    assert (my_str.bytes_in, my_str.viewers) == (10**12, 3)  # viewers from connectionCount without a total


def test_parse_a_garbled_stream_or_field_blanks_only_that() -> None:
    bundle = recorded_bundle()
    streams = bundle["apps"][0]["streams"]
    streams[0]["monitoring"] = entry('{"bytesInRate": 3125')
    streams[1]["monitoring"] = entry({"bytesInRate": "312500", "uptime": True, "totalConnections": None,
                                      "bytesIn": 1.5, "bytesOut": float("nan"), "connectionCount": {"RTMP": "2"}})  # fmt: skip
    bundle["apps"][0]["instances"] = entry(
        {
            "instanceList": [
                {
                    "name": "_definst_",
                    "incomingStreams": [
                        {"name": "myStr", "sourceIp": "rtsp://admin:hunter2@cam.local:554/live", "isConnected": "yes"},
                        {"name": "myStream", "sourceIp": 17},
                        {"name": ""},
                        {"sourceIp": "x"},
                        "junk",
                    ],
                },
                5,
            ]
        }
    )
    bundle["apps"][0]["monitoring"] = entry({"bytesInRate": "fast"})
    snapshot = parse(bundle)
    assert snapshot.reachable, snapshot.error
    assert (snapshot.bandwidth_in_kbps, snapshot.bytes_in) == (None, None)
    my_str, my_stream = snapshot.streams
    # Only the host of a pulled source's URL is kept: its credentials stay out of the snapshot.
    assert (my_str.name, my_str.publishing, my_str.bitrate_in_kbps, my_str.publisher_address) == (
        "myStr", False, None, "cam.local")  # fmt: skip
    assert (my_stream.bitrate_in_kbps, my_stream.uptime_s, my_stream.viewers, my_stream.bytes_in,
            my_stream.bytes_out) == (None, None, None, None, None)  # fmt: skip
    assert my_stream.publisher_address is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not a Wowza poll bundle"),
        (b"<html><body>hi</body></html>", "not a Wowza poll bundle"),
        (b"[1, 2]", "not a Wowza poll bundle"),
        (b'{"format": "tally.nginx/1"}', "not a Wowza poll bundle"),
        (b"{" * 100_000, "not a Wowza poll bundle"),
        (json.dumps({"format": BUNDLE_FORMAT}).encode(), "malformed Wowza poll bundle (server status missing)"),
        (json.dumps({"format": BUNDLE_FORMAT, "server_status": entry({})}).encode(), "application list missing"),
        (b" " * (MAX_BUNDLE_BYTES + 1), "Wowza poll bundle too large"),
    ],
    ids=["empty", "html", "array", "other format", "deep nesting", "no status", "no apps", "huge"],
)
def test_parse_rejects_what_is_not_a_bundle(raw: bytes, reason: str) -> None:
    snapshot = parse(raw)
    assert not snapshot.reachable and reason in snapshot.error
    assert (snapshot.server_id, snapshot.taken_at, snapshot.streams) == (3, TAKEN_AT, ())


def test_parse_never_raises_on_mangled_bundles() -> None:
    raw = json.dumps(recorded_bundle()).encode()
    rng = random.Random(20260302)
    for _ in range(300):
        mangled = bytearray(raw[: rng.randrange(len(raw) + 1)] if rng.random() < 0.3 else raw)
        for _ in range(rng.randrange(1, 6)):
            if mangled:
                mangled[rng.randrange(len(mangled))] = rng.choice(b'{}[]",:0a\\ -.e')
        snapshot = parse(bytes(mangled))
        assert isinstance(snapshot, ServerSnapshot)
        assert snapshot.reachable or snapshot.error
