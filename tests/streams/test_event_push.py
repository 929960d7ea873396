"""Publish-control events reach both the fleet and the server's group, complete and in order, whether
one comes alone or a burst arrives while the push thread is busy (it sends them in batches)."""

import asyncio

from channels.layers import channel_layers

from console import push
from streams import events

SERVER_ID = 987_654  # no other test's events carry it (they may still be on their way to the fleet group)


async def receive_ours(layer, channel):
    while True:
        message = (await asyncio.wait_for(layer.receive(channel), timeout=5))["message"]
        if message.get("server") == SERVER_ID:
            return message


async def test_a_burst_of_events_reaches_both_groups_in_order():
    # A layer instance of its own for receiving: other tests cancel receives on the shared instance from
    # other event loops, which channels_redis does not recover from within one process.
    layer = channel_layers.make_backend("default")
    fleet, server = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(events.FLEET_GROUP, fleet)
    await layer.group_add(f"server.{SERVER_ID}", server)
    try:
        events.publish_rejected(SERVER_ID, "live", "203.0.113.1", "unknown_key")  # alone: goes out at once
        first = await receive_ours(layer, fleet)
        assert first == {"type": "publish.rejected", "server": SERVER_ID, "app": "live", "addr": "203.0.113.1",
                         "reason": "unknown_key"}  # fmt: skip
        assert await receive_ours(layer, server) == first

        for n in range(30):  # faster than one batch goes out
            events.publish_rejected(SERVER_ID, "live", f"203.0.113.{n}", "unknown_key")
        assert await asyncio.to_thread(push.flush)
        for channel in (fleet, server):
            received = [(await receive_ours(layer, channel))["addr"] for _ in range(30)]
            assert received == [f"203.0.113.{n}" for n in range(30)]
    finally:
        await layer.group_discard(events.FLEET_GROUP, fleet)
        await layer.group_discard(f"server.{SERVER_ID}", server)
