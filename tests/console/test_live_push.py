"""The websocket forwards what ``monitoring.live.publish`` sends, through the real Redis channel layer."""

import pytest
from asgiref.sync import sync_to_async

from monitoring import live
from tests.console.test_role_matrix import make_persona, ws_connect


@pytest.mark.django_db(transaction=True)
async def test_published_events_reach_subscribed_sockets():
    user = await sync_to_async(make_persona)("viewer")
    communicator, connected, _ = await ws_connect(user)
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["type"] == "hello"

    await sync_to_async(live.publish)(live.FLEET_GROUP, "stream.started", {"server": 1, "name": "gym"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "stream.started", "server": 1, "name": "gym"}

    await communicator.send_json_to({"type": "subscribe", "group": "stream.7"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "subscribed", "group": "stream.7"}
    await sync_to_async(live.publish)(live.stream_group(7), "stream.sample", {"bitrate_in_kbps": 2500})
    assert (await communicator.receive_json_from(timeout=5))["bitrate_in_kbps"] == 2500

    for bad in ({"type": "subscribe", "group": "fleet; drop"}, {"type": "nope"}, ["not", "a", "dict"]):
        await communicator.send_json_to(bad)
        assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
    await communicator.send_to(text_data="{not json")
    assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
    await communicator.disconnect()
