"""The live streams page with 1,000 live streams: one page of 50, a fixed number of queries whatever the
fleet size, search, filters, sorting, units, and hostile parameters."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from monitoring.models import Health, ServerStatus, Stream
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet():
    """1,000 live streams on four servers (one down), plus one stream that stopped."""
    now = timezone.now()
    servers = [factories.make_server(f"edge-{i}") for i in range(4)]
    ServerStatus.objects.bulk_create(
        ServerStatus(server=s, health=Health.DOWN if i == 3 else Health.UP) for i, s in enumerate(servers)
    )
    Stream.objects.bulk_create(
        Stream(server=servers[i % 4], app="live" if i % 2 else "school", name=f"cam-{i:04d}", live=True,
               live_since=now - timedelta(seconds=3723 + i), first_seen=now, last_seen=now,
               latest={"bitrate_in_kbps": 500.0 + i, "viewers": i % 7, "fps": 25.0, "width": 1280, "height": 720,
                       "video_codec": "H264", "audio_codec": "AAC"})
        for i in range(1000)
    )  # fmt: skip
    Stream.objects.create(server=servers[0], app="live", name="gone", live=False, first_seen=now, last_seen=now)
    return servers


def names(html):
    return re.findall(r'<td class="mono">(?:<a [^>]*>)?([^<]+)<', html)


def test_a_thousand_live_streams_in_pages_with_fixed_queries(fleet, viewer, django_assert_max_num_queries):
    client = Client()
    client.force_login(viewer)
    with django_assert_max_num_queries(10):  # session, user, count, one page, server list: not per stream
        response = client.get("/streams/")
    html = response.content.decode()
    assert response.status_code == 200 and "1000 live streams" in html
    assert names(html)[:3] == ["cam-0000", "cam-0001", "cam-0002"] and len(names(html)) == 50
    assert "gone" not in names(html)
    assert "500 kbps" in html and "1280×720" in html and "1:02:03" in html  # units: kbps, hh:mm:ss
    with django_assert_max_num_queries(10):
        last = client.get("/streams/?page=20").content.decode()
    assert names(last)[-1] == "cam-0999"


def test_search_filters_and_sorting(fleet, viewer):
    client = Client()
    client.force_login(viewer)
    assert names(client.get("/streams/?q=cam-099").content.decode()) == [f"cam-099{i}" for i in range(10)]
    top = names(client.get("/streams/?sort=-bitrate").content.decode())
    assert top[:2] == ["cam-0999", "cam-0998"]
    assert "2.00 Mbps" not in client.get("/streams/?sort=-bitrate").content.decode()  # 1,499 kbps at most
    assert "1.50 Mbps" in client.get("/streams/?sort=-bitrate").content.decode()
    down = client.get("/streams/?health=down").content.decode()
    assert "250 live streams" in down and all(int(n[-4:]) % 4 == 3 for n in names(down))
    one_server = client.get(f"/streams/?server={fleet[1].pk}&app=live").content.decode()
    assert "250 live streams" in one_server and all(int(n[-4:]) % 4 == 1 for n in names(one_server))
    empty = client.get("/streams/?q=nothing-like-this").content.decode()
    assert "No live stream matches these filters" in empty


@pytest.mark.parametrize(
    "query", ["page=abc", "page=-1", "page=99999", "server=abc", "server=99999999999999999999", "sort=;drop",
              "health=sideways", "q=" + "x" * 5000, "app=%00", "server=%C2%B2"],
)  # fmt: skip
def test_hostile_parameters_still_answer(fleet, viewer, query):
    client = Client()
    client.force_login(viewer)
    assert client.get(f"/streams/?{query}").status_code == 200


def test_empty_state_and_roles(db, viewer, outsider):
    client = Client()
    client.force_login(viewer)
    assert "add a server" in client.get("/streams/").content.decode()
    other = Client()
    other.force_login(outsider)
    assert other.get("/streams/").status_code == 403
    assert Client().get("/streams/").status_code == 302  # to the login page


def test_audit_filters_with_a_nul_answer(admin):
    client = Client()
    client.force_login(admin)
    assert client.get("/audit/?actor_name=%00&action=x%00y").status_code == 200
