"""parse_stat on real nginx-rtmp captures (tests/fixtures/nginx_rtmp) and on hostile input.

Expected values are read off the fixture files by hand: bw_* bits/s become kbps (/1000), stream
``time`` ms becomes seconds, the server ``uptime`` is already seconds. Pure tests: no database.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitoring.pollers import PollError, get_poller, registry
from monitoring.pollers.nginx_rtmp import MAX_STAT_BYTES, NginxRtmpPoller, parse_stat
from monitoring.snapshots import ServerSnapshot, StreamSnapshot
from tests.monitoring.polls import fetch

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nginx_rtmp"
TAKEN_AT = datetime(2025, 11, 25, 14, 0, 0, tzinfo=UTC)
FFMPEG = "FMLE/3.0 (compatible; Lavf59.27"


def load(name: str) -> bytes:
    return (FIXTURES / f"stat-{name}.xml").read_bytes()


def parse(name: str) -> ServerSnapshot:
    snapshot = parse_stat(load(name), TAKEN_AT, server_id=7)
    assert snapshot.reachable, snapshot.error
    assert snapshot.error == ""
    return snapshot


def by_name(snapshot: ServerSnapshot) -> dict[str, StreamSnapshot]:
    return {stream.name: stream for stream in snapshot.streams}


# --- fixtures ---------------------------------------------------------------------------------------


def test_idle() -> None:
    snapshot = parse("idle")
    assert snapshot.server_id == 7
    assert snapshot.taken_at == TAKEN_AT
    assert snapshot.version == "nginx/1.22.1"
    assert snapshot.worker_pid == 8716
    assert snapshot.uptime_s == 4.0
    assert snapshot.connections == 0
    assert snapshot.bandwidth_in_kbps == 0.0
    assert snapshot.bandwidth_out_kbps == 0.0
    assert snapshot.bytes_in == 0
    assert snapshot.streams == ()


def test_one_publisher() -> None:
    snapshot = parse("one-publisher")
    assert snapshot.worker_pid == 8716
    assert snapshot.uptime_s == 27.0
    assert snapshot.connections == 1
    assert snapshot.bandwidth_in_kbps == pytest.approx(2801.624)
    assert snapshot.bandwidth_out_kbps == pytest.approx(0.32)
    assert (snapshot.bytes_in, snapshot.bytes_out) == (4006468, 409)
    (stream,) = snapshot.streams
    assert stream.to_json() == {
        "app": "live",
        "name": "stream1",
        "publishing": True,
        "active": True,
        "bitrate_in_kbps": pytest.approx(2795.592),
        "bitrate_out_kbps": 0.0,
        "video_kbps": pytest.approx(2726.608),
        "audio_kbps": pytest.approx(68.976),
        "bytes_in": 3997941,
        "bytes_out": 0,
        "viewers": 0,
        "relays": 0,
        "video_codec": "H264",
        "video_profile": "High",
        "audio_codec": "AAC",
        "width": 1280,
        "height": 720,
        "fps": 30.0,
        "uptime_s": pytest.approx(12.165),
        "publisher_address": "127.0.0.1",
        "publisher_client_id": "4",
        "publisher_flashver": FFMPEG,
        "dropped_frames": 0,
        "avsync_ms": -12,
    }


def test_three_publishers_two_players() -> None:
    snapshot = parse("three-publishers-two-players")
    assert snapshot.uptime_s == 43.0
    assert snapshot.connections == 5
    assert snapshot.bandwidth_out_kbps == pytest.approx(835.008)
    streams = by_name(snapshot)
    assert list(streams) == ["stream1", "stream2", "stream3"]
    one, two, three = streams["stream1"], streams["stream2"], streams["stream3"]
    assert (one.viewers, two.viewers, three.viewers) == (1, 1, 0)
    assert (one.publisher_client_id, two.publisher_client_id, three.publisher_client_id) == ("4", "12", "11")
    assert (one.width, one.height, one.fps) == (1280, 720, 30.0)
    assert (two.width, two.height, two.fps) == (640, 360, 25.0)
    assert (three.width, three.height, three.fps) == (320, 240, 15.0)
    assert two.bitrate_in_kbps == pytest.approx(964.496)
    assert two.bitrate_out_kbps == pytest.approx(600.792)
    assert two.video_kbps == pytest.approx(894.752)
    assert two.audio_kbps == pytest.approx(69.736)
    assert two.uptime_s == pytest.approx(11.652)
    assert (one.avsync_ms, two.avsync_ms, three.avsync_ms) == (-9, -7, -13)
    assert three.bitrate_out_kbps == 0.0


def test_after_drop_the_dropped_stream_is_gone() -> None:
    snapshot = parse("after-drop")
    assert snapshot.uptime_s == 49.0
    assert snapshot.connections == 4
    streams = by_name(snapshot)
    assert set(streams) == {"stream1", "stream2"}
    assert streams["stream1"].bitrate_out_kbps == pytest.approx(2829.296)
    assert streams["stream1"].uptime_s == pytest.approx(34.259)
    assert streams["stream2"].avsync_ms == -15


def test_twenty_publishers_and_an_empty_second_app() -> None:
    snapshot = parse("20-publishers")
    assert snapshot.worker_pid == 17280
    assert snapshot.uptime_s == 41.0
    assert snapshot.connections == 20
    assert snapshot.bandwidth_in_kbps == pytest.approx(2766.304)
    assert [stream.name for stream in snapshot.streams] == [f"cam{i:02d}" for i in range(1, 21)]
    assert {stream.app for stream in snapshot.streams} == {"live"}
    assert all(s.publishing and s.active and s.viewers == 0 for s in snapshot.streams)
    assert {(s.width, s.height, s.fps, s.video_profile) for s in snapshot.streams} == {(160, 120, 10.0, "Baseline")}
    first, last = snapshot.streams[0], snapshot.streams[-1]
    assert (first.publisher_client_id, first.bitrate_in_kbps) == ("303", pytest.approx(181.984))
    assert (last.publisher_client_id, last.bitrate_in_kbps) == ("362", pytest.approx(185.096))
    assert last.uptime_s == pytest.approx(14.026)


def test_player_waiting_for_a_missing_publisher() -> None:
    snapshot = parse("player-waiting-no-publisher")
    assert snapshot.connections == 3
    waiting = by_name(snapshot)["stream2"]
    assert (waiting.publishing, waiting.active) == (False, False)
    assert waiting.viewers == 1
    assert waiting.publisher_client_id is None
    assert waiting.publisher_address is None
    assert waiting.avsync_ms is None
    # No <meta>: codec, size and frame rate are unknown, not zero.
    assert (waiting.video_codec, waiting.width, waiting.height, waiting.fps) == (None, None, None, None)
    assert waiting.bitrate_in_kbps == pytest.approx(193.12)
    assert waiting.uptime_s == pytest.approx(44.679)
    assert by_name(snapshot)["stream1"].publishing is True


def test_edge_push_relays_are_not_viewers() -> None:
    snapshot = parse("edge-push")
    assert snapshot.worker_pid == 13415
    assert snapshot.uptime_s == 9.0
    assert snapshot.connections == 3
    (stream,) = snapshot.streams
    assert stream.name == "edgecam"
    assert (stream.viewers, stream.relays) == (0, 2)
    assert stream.publisher_client_id == "1"
    assert stream.publisher_flashver == FFMPEG
    assert (stream.width, stream.height, stream.fps, stream.video_profile) == (320, 240, 15.0, "Baseline")
    # The first 10 s window: bw_* read 0 while bytes already flowed.
    assert stream.bitrate_in_kbps == 0.0
    assert stream.bytes_in == 424184


def test_origin_receiving_a_push() -> None:
    snapshot = parse("origin-receiving-push")
    assert snapshot.uptime_s == 266.0
    (stream,) = snapshot.streams
    assert stream.viewers == 1
    assert stream.relays == 0
    assert stream.publisher_client_id == "170"
    assert stream.publisher_flashver == "LNX.11,1,102,55"  # nginx's push client, as the origin sees it
    assert stream.uptime_s == pytest.approx(8.811)


def test_right_after_reload_shows_the_new_worker() -> None:
    snapshot = parse("right-after-reload")
    assert snapshot.worker_pid == 14629
    assert snapshot.uptime_s == 0.0
    assert snapshot.connections == 0
    assert snapshot.streams == ()


def test_worker_pid_tells_workers_apart() -> None:
    pids = {parse(name).worker_pid for name in ("one-publisher", "right-after-reload", "edge-push")}
    assert pids == {8716, 14629, 13415}


# --- hostile and broken input -------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE rtmp [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rtmp><nginx_version>&lol9;</nginx_version><server><application><name>live</name><live>
<stream><name>&lol9;</name></stream></live></application></server></rtmp>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE rtmp [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<rtmp><pid>1</pid><server><application><name>live</name><live>
<stream><name>&xxe;</name><publishing/></stream></live></application></server></rtmp>
"""

# nginx's own error page, as a misrouted stat URL or a dead upstream returns it.
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
)


def assert_rejected(raw: bytes, *reason_parts: str) -> ServerSnapshot:
    snapshot = parse_stat(raw, TAKEN_AT, server_id=7)
    assert snapshot.reachable is False
    assert snapshot == ServerSnapshot.unreachable(7, TAKEN_AT, snapshot.error)
    for part in reason_parts:
        assert part in snapshot.error
    assert "root:" not in json.dumps(snapshot.to_json())
    return snapshot


def hide_prolog_from_sniffing(document: bytes) -> bytes:
    """Put "<x" in a comment before the DOCTYPE, so only the post-parse check can catch it."""
    return document.replace(b"<!DOCTYPE", b"<!-- <x> -->\n<!DOCTYPE", 1)


def test_billion_laughs_is_rejected() -> None:
    assert_rejected(BILLION_LAUGHS, "DTD and entity declarations are not allowed")


def test_billion_laughs_past_the_byte_check_is_rejected_without_expansion() -> None:
    assert_rejected(hide_prolog_from_sniffing(BILLION_LAUGHS), "invalid stat XML")


def test_billion_laughs_in_utf16_is_rejected() -> None:
    raw = BILLION_LAUGHS.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
    assert_rejected(raw, "invalid stat XML")


@pytest.mark.parametrize("raw", [XXE, hide_prolog_from_sniffing(XXE)], ids=["plain", "past-byte-check"])
def test_external_entity_is_never_read(raw: bytes) -> None:
    assert_rejected(raw, "invalid stat XML")


def test_oversized_body_is_rejected_before_parsing() -> None:
    raw = load("one-publisher").replace(b"<server>", b"<server>" + b" " * MAX_STAT_BYTES)
    assert len(raw) > MAX_STAT_BYTES
    assert_rejected(raw, "too large", str(MAX_STAT_BYTES))


def test_body_of_exactly_the_limit_is_parsed() -> None:
    raw = load("one-publisher")
    chunk = b"<pad>" + b" " * (1 << 20) + b"</pad>"  # many text nodes: each stays under libxml2's 10 MB limit
    padding = chunk * ((MAX_STAT_BYTES - len(raw)) // len(chunk))
    raw = raw.replace(b"<server>", b"<server>" + padding + b" " * (MAX_STAT_BYTES - len(raw) - len(padding)))
    assert len(raw) == MAX_STAT_BYTES
    assert parse_stat(raw, TAKEN_AT).streams[0].name == "stream1"


def test_huge_text_node_under_the_cap_is_refused() -> None:
    raw = load("one-publisher").replace(b"<name>stream1</name>", b"<name>" + b"a" * 12_000_000 + b"</name>")
    assert_rejected(raw, "invalid stat XML", "Text node too long")


def test_truncated_xml() -> None:
    raw = load("three-publishers-two-players")
    assert_rejected(raw[: len(raw) // 2], "invalid stat XML")


@pytest.mark.parametrize(
    "raw",
    [
        NGINX_502,
        b"<!DOCTYPE html>\n<html><head><title>Login</title></head><body><p>Sign in</body></html>",
        b"<?xml version='1.0'?>\n<!-- " + b"x" * 1000 + b" -->\n<html><body>500</body></html>",
    ],
    ids=["nginx-502", "html5", "xhtml-after-long-comment"],
)
def test_html_error_page(raw: bytes) -> None:
    snapshot = assert_rejected(raw)
    assert snapshot.error == "not nginx-rtmp stat XML (got HTML)"


@pytest.mark.parametrize("raw", [b"", b"   \r\n\t "], ids=["empty", "whitespace"])
def test_empty_body(raw: bytes) -> None:
    snapshot = assert_rejected(raw)
    assert snapshot.error == "empty stat response"


def test_unexpected_root() -> None:
    snapshot = assert_rejected(b'<?xml version="1.0"?><status><ok/></status>')
    assert snapshot.error == "not nginx-rtmp stat XML (root element <status>, expected <rtmp>)"


@pytest.mark.parametrize(
    "raw", [b"\x00\xff\xfe garbage \x89PNG", b"Bad Gateway", b'{"error": "nope"}', b"<rtmp><pid>1</pid>"]
)
def test_garbage(raw: bytes) -> None:
    assert_rejected(raw, "invalid stat XML")


def test_wrong_types_become_unknown() -> None:
    raw = (
        load("one-publisher")
        .replace(b"<pid>8716</pid>", b"<pid>eight</pid>")
        .replace(b"<uptime>27</uptime>", b"<uptime>nan</uptime>")
        .replace(b"<bw_in>2801624</bw_in>", b"<bw_in>2.8 Mbps</bw_in>")
        .replace(b"<bw_in>2795592</bw_in>", b"<bw_in></bw_in>")
        .replace(b"<bytes_in>3997941</bytes_in>", b"<bytes_in>-</bytes_in>")
        .replace(b"<width>1280</width>", b"<width>wide</width>")
        .replace(b"<frame_rate>30</frame_rate>", b"<frame_rate>inf</frame_rate>")
        .replace(b"<time>12165</time>", b"<time>1e999999</time>")
        .replace(b"<avsync>-12</avsync>", b"<avsync><b>x</b></avsync>")
        .replace(b"<nclients>1</nclients>\r\n</live>", b"<nclients>many</nclients>\r\n</live>")
    )
    assert b"<nclients>many</nclients>" in raw
    snapshot = parse_stat(raw, TAKEN_AT)
    assert snapshot.reachable
    assert (snapshot.worker_pid, snapshot.uptime_s, snapshot.bandwidth_in_kbps) == (None, None, None)
    assert snapshot.connections is None
    assert snapshot.bytes_in == 4006468  # untouched fields still parse
    (stream,) = snapshot.streams
    assert (stream.bitrate_in_kbps, stream.bytes_in, stream.width, stream.fps, stream.uptime_s) == (None,) * 5
    assert stream.avsync_ms is None
    assert (stream.height, stream.publisher_client_id) == (720, "4")
    json.dumps(snapshot.to_json(), allow_nan=False)


def test_missing_fields_become_unknown() -> None:
    raw = b"<rtmp><server><application><live><stream><client><publishing/></client></stream></live></application></server></rtmp>"
    snapshot = parse_stat(raw, TAKEN_AT)
    assert snapshot.reachable
    assert (snapshot.version, snapshot.worker_pid, snapshot.uptime_s, snapshot.connections) == (None,) * 4
    (stream,) = snapshot.streams
    assert (stream.app, stream.name, stream.publishing, stream.active) == ("", "", False, False)
    assert (stream.viewers, stream.relays, stream.dropped_frames) == (0, 0, None)
    assert (stream.bitrate_in_kbps, stream.publisher_client_id, stream.uptime_s) == (None, None, None)


def test_streams_are_read_by_path_only() -> None:
    # A <stream> outside server/application/live, and a <name> at the wrong level, are ignored.
    raw = (
        b"<rtmp><stream><name>stray</name></stream><server><application><name>live</name>"
        b"<stream><name>also-stray</name></stream><live><name>not-a-stream</name>"
        b"<stream><name>real</name></stream></live></application></server></rtmp>"
    )
    snapshot = parse_stat(raw, TAKEN_AT)
    assert [(s.app, s.name) for s in snapshot.streams] == [("live", "real")]


def test_mangled_fixtures_never_raise() -> None:
    """Cut and splice real captures at random points: each result is a snapshot, never an exception."""
    rng = random.Random(1935)
    sources = [path.read_bytes() for path in sorted(FIXTURES.glob("stat-*.xml"))]
    for _ in range(500):
        raw = rng.choice(sources)
        start, end = sorted(rng.randrange(len(raw) + 1) for _ in range(2))
        mangled = raw[:start] + rng.choice([b"", b"<", b"</stream>", b"<client>", b"&amp;", b"\x00"]) + raw[end:]
        snapshot = parse_stat(mangled, TAKEN_AT)
        assert snapshot.reachable or snapshot.error
        json.dumps(snapshot.to_json(), allow_nan=False)


# --- the snapshot type and the poller registry ----------------------------------------------------------


@pytest.mark.parametrize("name", ["three-publishers-two-players", "player-waiting-no-publisher", "idle"])
def test_json_round_trip(name: str) -> None:
    snapshot = parse(name)
    data = json.loads(json.dumps(snapshot.to_json(), allow_nan=False))
    assert data["taken_at"] == "2025-11-25T14:00:00+00:00"
    assert ServerSnapshot.from_json(data) == snapshot


def test_unreachable_round_trip() -> None:
    snapshot = ServerSnapshot.unreachable(3, TAKEN_AT, "stat request failed: HTTP 500 Internal Server Error")
    assert snapshot.reachable is False
    assert (snapshot.worker_pid, snapshot.connections, snapshot.streams) == (None, None, ())
    assert ServerSnapshot.from_json(json.loads(json.dumps(snapshot.to_json()))) == snapshot


def test_taken_at_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ServerSnapshot.unreachable(1, datetime(2025, 11, 25, 14, 0), "x")


def test_registry_has_a_poller_per_server_kind() -> None:
    from monitoring.pollers.wowza import WowzaPoller
    from streams.models import Server

    assert set(registry) == {kind.value for kind in Server.Kind}
    poller = get_poller(Server.Kind.NGINX_RTMP)
    assert isinstance(poller, NginxRtmpPoller)
    assert isinstance(get_poller(Server.Kind.WOWZA), WowzaPoller)
    assert poller.parse(load("idle"), TAKEN_AT, server_id=2).worker_pid == 8716
    with pytest.raises(PollError) as excinfo:
        get_poller("flussonic")
    assert excinfo.value.permanent is True


def test_fetch_without_stat_url_is_a_permanent_error() -> None:
    from streams.models import Server

    with pytest.raises(PollError) as excinfo:
        fetch(Server(name="edge1", host="127.0.0.1", stat_url=""), NginxRtmpPoller())
    assert excinfo.value.permanent is True
    assert "no stat URL" in str(excinfo.value)
