"""Non-blocking push to the channel layer, for code that must never wait on Redis.

nginx-rtmp blocks a publish on its callback, and a failing callback drops live streams, so the
callback views hand events to this in-process queue and answer at once; a daemon thread forwards them
to the channel layer. If Redis is down the events are dropped (after a log line), never the callback.
``monitoring.live`` owns the payload types and wraps this.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# Channels group events are dispatched to the consumer method named by "type" (dots become "_").
FORWARD_EVENT = "live.forward"
QUEUE_SIZE = 10_000
MAX_BATCH = 100
# Under load, the longest a message waits behind the previous batch before it goes out.
GATHER_S = 0.02

_queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=QUEUE_SIZE)
_lock = threading.Lock()
_thread: threading.Thread | None = None


def send_now(group: str, message: dict[str, Any]) -> None:
    """Blocking send of one message to a group (for worker code that may wait)."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, {"type": FORWARD_EVENT, "message": message})


def _drain() -> None:
    # One event loop for the thread's life: a new loop per message costs milliseconds of CPU that
    # the callback views would feel.
    loop = asyncio.new_event_loop()
    while True:
        batch = [_queue.get()]  # when idle, the first message goes out at once
        while len(batch) < MAX_BATCH:
            try:
                batch.append(_queue.get_nowait())
            except queue.Empty:
                break
        pending = collections.deque(batch)
        for attempt in (1, 2):
            # A pooled Redis connection the server has closed (restart, idle timeout) fails once, then
            # the pool reconnects: retry what was not sent yet, once.
            try:
                loop.run_until_complete(_send_batch(pending))
                break
            except Exception as exc:  # push is best effort; the state is in the database
                if attempt == 2:
                    log.warning("live push of %d message(s) dropped: %s", len(pending), exc)
        # Under load, let the next messages gather: one wake-up of this thread per burst instead of one
        # per message, each of which takes the GIL from the request being served.
        time.sleep(GATHER_S)


async def _send_batch(pending: collections.deque[tuple[str, dict[str, Any]]]) -> None:
    """Send and remove messages from the front of ``pending``; what is left on an error was not sent."""
    layer = get_channel_layer()
    if layer is None:
        pending.clear()
        return
    while pending:
        group, message = pending[0]
        await layer.group_send(group, {"type": FORWARD_EVENT, "message": message})
        pending.popleft()


def send_soon(group: str, message: dict[str, Any]) -> None:
    """Queue a message for ``group`` and return at once. Drops (with a log line) when the queue is full."""
    global _thread
    if _thread is None or not _thread.is_alive():
        with _lock:
            if _thread is None or not _thread.is_alive():
                _thread = threading.Thread(target=_drain, name="tally-push", daemon=True)
                _thread.start()
    try:
        _queue.put_nowait((group, message))
    except queue.Full:
        log.warning("live push queue full; dropped a %s message", message.get("type"))


def flush(timeout_s: float = 5.0) -> bool:
    """Wait until the queue is empty (tests, graceful shutdown). True when it drained in time."""
    deadline = time.monotonic() + timeout_s
    while not _queue.empty():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
