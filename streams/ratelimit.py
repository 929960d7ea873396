"""Brute-force protection for publish callbacks: too many failed publishes from one address in a
window block that address for a cool-down, answered without a database lookup.

The state lives in the process that serves the callbacks (no Redis: the callbacks must not depend on
it). With several web processes each keeps its own count, so an attacker gets at most
``limit × processes`` tries per window.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class BlockedAddress:
    addr: str
    failures_in_window: int
    blocked_for_s: float


class FailureLimiter:
    """Counts failures per address in a sliding window; blocks an address that reaches ``limit``."""

    def __init__(self, limit: int, window_s: float, block_s: float, max_tracked: int = 100_000) -> None:
        self.limit, self.window_s, self.block_s, self.max_tracked = limit, window_s, block_s, max_tracked
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def is_blocked(self, addr: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        until = self._blocked_until.get(addr)
        if until is None:
            return False
        if until > now:
            return True
        with self._lock:
            self._blocked_until.pop(addr, None)
        return False

    def record_failure(self, addr: str, now: float | None = None) -> bool:
        """Count a failure; True when this failure starts a block."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) >= self.max_tracked and addr not in self._failures:
                self._evict(now)
            window = self._failures.setdefault(addr, deque())
            window.append(now)
            while window and window[0] <= now - self.window_s:
                window.popleft()
            if len(window) >= self.limit:
                self._blocked_until[addr] = now + self.block_s
                window.clear()
                return True
        return False

    def unblock(self, addr: str) -> bool:
        with self._lock:
            self._failures.pop(addr, None)
            return self._blocked_until.pop(addr, None) is not None

    def blocked(self, now: float | None = None) -> list[BlockedAddress]:
        """Addresses blocked right now (for the admin API)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return sorted(
                (
                    BlockedAddress(addr, len(self._failures.get(addr, ())), round(until - now, 1))
                    for addr, until in self._blocked_until.items()
                    if until > now
                ),
                key=lambda b: b.addr,
            )

    def _evict(self, now: float) -> None:
        stale = [a for a, w in self._failures.items() if not w or w[-1] <= now - self.window_s]
        for addr in stale or list(self._failures)[: self.max_tracked // 10]:
            del self._failures[addr]

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self._blocked_until.clear()


publish_failures = FailureLimiter(
    limit=settings.PUBLISH_FAIL_LIMIT, window_s=settings.PUBLISH_FAIL_WINDOW_S, block_s=settings.PUBLISH_BLOCK_S
)
