"""The live-state API and /metrics, over state applied from hand-made snapshots."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from console import audit, tokens
from monitoring import state
from monitoring.models import Stream
from monitoring.snapshots import ServerSnapshot, StreamSnapshot
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet():
    """Two servers: one up with a live stream (and a stream that stopped), one down."""
    now = timezone.now()
    up, down = factories.make_server("edge-a"), factories.make_server("edge-b")
    cam = StreamSnapshot(app="live", name='cam "1"', publishing=True, active=True, bitrate_in_kbps=2100.5,
                         bitrate_out_kbps=4200.0, viewers=2, video_codec="H264", width=1280, height=720, fps=30.0,
                         uptime_s=60, publisher_client_id="3")  # fmt: skip
    old = StreamSnapshot(app="live", name="old", publishing=True, active=True, publisher_client_id="4")
    for i, streams in enumerate([(cam, old), (cam,)]):
        at = now - timedelta(seconds=10 - 5 * i)
        answer = ServerSnapshot(server_id=up.pk, taken_at=at, reachable=True, connections=3, streams=streams)
        silence = ServerSnapshot.unreachable(down.pk, at, "timed out after 5 s")
        state.apply_cycle([(up.pk, answer, 9.0), (down.pk, silence, 5000.0)], at)
    for _ in range(3):
        state.apply_cycle([(down.pk, ServerSnapshot.unreachable(down.pk, now, "timed out after 5 s"), 5000.0)], now)
    return up, down


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_live_list_detail_and_status(fleet, viewer):
    up, down = fleet
    client = api(viewer)
    listed = client.get("/api/v1/streams/?live=true").json()["results"]
    assert [(s["name"], s["server_name"], s["health"]) for s in listed] == [('cam "1"', "edge-a", "up")]
    cam = listed[0]
    assert cam["figures"]["bitrate_in_kbps"] == 2100.5 and cam["figures"]["width"] == 1280
    assert cam["uptime_s"] >= 60
    assert client.get("/api/v1/streams/?live=false").json()["results"][0]["name"] == "old"
    detail = client.get(f"/api/v1/streams/{cam['id']}/").json()
    assert detail["figures"]["viewers"] == 2
    status = client.get(f"/api/v1/servers/{down.pk}/status/").json()
    assert status["health"] == "down" and status["last_error"] == "timed out after 5 s"
    assert [t["to"] for t in status["transitions"]] == ["down", "degraded"]
    assert client.get(f"/api/v1/servers/{up.pk}/status/").json()["latest"]["connections"] == 3
    assert client.get("/api/v1/servers/999999/status/").status_code == 404


def test_history_endpoints(fleet, viewer):
    up, _ = fleet
    cam = Stream.objects.get(name='cam "1"')
    client = api(viewer)
    points = client.get(f"/api/v1/streams/{cam.pk}/history/").json()["points"]
    assert [p["bitrate_in_kbps"] for p in points] == [2100.5, 2100.5]
    assert client.get(f"/api/v1/servers/{up.pk}/history/").status_code == 200


@pytest.mark.parametrize(
    "query",
    ["from=yesterday", "to=2026-13-45T00:00:00Z", "step=-5", "step=abc", "step=99999999999",
     "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from=1900-01-01T00:00:00Z"],
)  # fmt: skip
def test_history_rejects_bad_ranges_with_400(fleet, viewer, query):
    cam = Stream.objects.get(name='cam "1"')
    response = api(viewer).get(f"/api/v1/streams/{cam.pk}/history/?{query}")
    assert response.status_code == 400 and response.json(), response.content


def test_live_state_needs_a_role(fleet, outsider):
    assert api(outsider).get("/api/v1/streams/").status_code == 403
    assert APIClient().get("/api/v1/streams/").status_code in (401, 403)


def test_metrics_behind_a_token(fleet, viewer):
    issued = tokens.issue_token(viewer, "prometheus", "viewer", audit.Actor.system())
    assert Client().get("/metrics").status_code == 401
    client = Client()
    client.force_login(viewer)
    assert client.get("/metrics").status_code == 401  # a session is not enough: scrapers use a token
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    up, down = fleet
    assert f'tally_server_up{{server="edge-a",id="{up.pk}",kind="nginx-rtmp"}} 1' in text
    assert f'tally_server_up{{server="edge-b",id="{down.pk}",kind="nginx-rtmp"}} 0' in text
    assert 'tally_stream_bitrate_in_kbps{server="edge-a",app="live",stream="cam \\"1\\""} 2100.5' in text
    assert "# TYPE tally_poll_errors_total counter" in text
    assert 'tally_server_live_streams{server="edge-a"' in text
