"""The one outbound-HTTP seam: every request Tally makes to another system goes through here.

Each call has a timeout (per phase, plus an overall deadline while the body streams in) and a body
size cap, and fails with ``HttpError`` whose ``permanent`` flag says whether retrying can help.
Redirects are not followed: a monitored URL that redirects is a configuration error to show.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

USER_AGENT = "Tally/0.1"
Auth = httpx.Auth | tuple[str, str] | None

_shared: tuple[int, httpx.Client] | None = None
_shared_lock = threading.Lock()


class HttpError(Exception):
    """An outbound request failed. ``permanent`` is True when the same request would fail again
    (4xx, redirect, oversized body, bad URL) and False when a later retry may work (timeout, 5xx,
    connection refused). ``status`` is the HTTP status code when the server answered, else ``None``."""

    def __init__(self, message: str, *, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


def build_auth(method: str, username: str, password: str) -> Auth:
    """Return the auth for ``method`` ("basic", "digest" or "none"); ``None`` when there are no credentials.

    A ``DigestAuth`` remembers the last challenge, so reusing one object for a series of calls to the same
    server answers later calls in one round trip instead of two.
    """
    if method == "none" or not (username or password):
        return None
    if method == "basic":
        return httpx.BasicAuth(username, password)
    if method == "digest":
        return httpx.DigestAuth(username, password)
    raise ValueError(f"unknown HTTP auth method {method!r}")


def make_client() -> httpx.Client:
    """Return a new sync client with Tally's defaults (no redirects, our User-Agent)."""
    return httpx.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT})


def make_async_client(*, max_connections: int | None = None) -> httpx.AsyncClient:
    """Return a new async client with Tally's defaults. The caller owns it (``async with``), so one
    client, and its connection pool, can serve many ``aget_bytes`` calls on one event loop.

    ``max_connections`` sizes the pool for a fan-out (many hosts, a request or a few each) and turns
    keep-alive off: httpcore re-scans the whole pool for every idle connection on every request event, so
    a pool filling up with idle connections makes a cycle of N polls cost O(N³) CPU, while a poll reuses
    few connections anyway. ``None`` keeps httpx's defaults (100 open, 20 kept alive).
    """
    limits = httpx.Limits()
    if max_connections is not None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=0)
    return httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": USER_AGENT}, limits=limits)


def _shared_client() -> httpx.Client:
    """Return this process's sync client, created on first use (and again after a fork)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared[0] != os.getpid():
            _shared = (os.getpid(), make_client())
        return _shared[1]


def get_bytes(
    url: str, *, timeout_s: float, max_bytes: int, auth: Auth = None, headers: Mapping[str, str] | None = None
) -> bytes:
    """GET ``url`` and return the body of a 2xx answer; raise ``HttpError`` otherwise.

    ``timeout_s`` bounds each phase (connect, each read) and, checked between chunks, the whole
    transfer, so a trickling server is cut off after at most about twice ``timeout_s``. The transfer
    stops as soon as the body passes ``max_bytes`` (decoded size: a gzip bomb is cut off too).
    """
    deadline = time.monotonic() + timeout_s
    client = _shared_client()
    with _translate_errors(timeout_s):
        request = client.build_request("GET", url, headers=headers, timeout=timeout_s)
        response = client.send(request, auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT, stream=True)
        try:
            _check_response(response, max_bytes)
            return _collect(response.iter_bytes(), deadline, timeout_s, max_bytes)
        finally:
            response.close()


def call(
    method: str,
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    json_body: object = None,
    auth: Auth = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """Send one request (a write to a management API) and return ``(status, body)`` whatever the status:
    the caller decides what a 404 or 409 means. Transport failures, timeouts, redirects and bodies over
    ``max_bytes`` raise ``HttpError`` as ``get_bytes`` does.
    """
    deadline = time.monotonic() + timeout_s
    client = _shared_client()
    with _translate_errors(timeout_s):
        request = client.build_request(method, url, headers=headers, json=json_body, timeout=timeout_s)
        response = client.send(request, auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT, stream=True)
        try:
            if 300 <= response.status_code < 400:
                _check_response(response, max_bytes)  # redirects are errors here too
            _check_length(response, max_bytes)
            return response.status_code, _collect(response.iter_bytes(), deadline, timeout_s, max_bytes)
        finally:
            response.close()


async def aget_bytes(
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    auth: Auth = None,
    headers: Mapping[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> bytes:
    """Async ``get_bytes``: same contract, except that the whole transfer (waiting for a pooled
    connection included) is held to ``timeout_s`` exactly, so a trickling server cannot stretch it.
    Pass a ``make_async_client()`` client to reuse connections; without one, a client is created for
    this call only."""
    if client is None:
        async with make_async_client() as own:
            return await aget_bytes(
                url, timeout_s=timeout_s, max_bytes=max_bytes, auth=auth, headers=headers, client=own
            )
    deadline = time.monotonic() + timeout_s
    with _translate_errors(timeout_s):
        async with asyncio.timeout(timeout_s):
            request = client.build_request("GET", url, headers=headers, timeout=timeout_s)
            response = await client.send(
                request, auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT, stream=True
            )
            try:
                _check_response(response, max_bytes)
                chunks = bytearray()
                async for chunk in response.aiter_bytes():
                    _append(chunks, chunk, deadline, timeout_s, max_bytes)
                return bytes(chunks)
            finally:
                await response.aclose()


def _check_response(response: httpx.Response, max_bytes: int) -> None:
    """Raise for a non-2xx status or an announced body larger than ``max_bytes``."""
    status = response.status_code
    if not 200 <= status < 300:
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        if 300 <= status < 400:
            reason += f" (redirect to {response.headers.get('location', '?')[:200]})"
        raise HttpError(reason, permanent=status < 500 and status not in {408, 429}, status=status)
    _check_length(response, max_bytes)


def _check_length(response: httpx.Response, max_bytes: int) -> None:
    """Raise for an announced body larger than ``max_bytes``."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise HttpError(f"response too large ({int(length)} bytes, limit {max_bytes})", permanent=True)


def _collect(chunks: Iterator[bytes], deadline: float, timeout_s: float, max_bytes: int) -> bytes:
    """Join streamed ``chunks``, enforcing the overall deadline and the size cap."""
    body = bytearray()
    for chunk in chunks:
        _append(body, chunk, deadline, timeout_s, max_bytes)
    return bytes(body)


def _append(body: bytearray, chunk: bytes, deadline: float, timeout_s: float, max_bytes: int) -> None:
    body += chunk
    if len(body) > max_bytes:
        raise HttpError(f"response too large (more than {max_bytes} bytes)", permanent=True)
    if time.monotonic() > deadline:
        raise HttpError(f"timed out after {timeout_s:g} s (body still arriving)")


@contextmanager
def _translate_errors(timeout_s: float) -> Iterator[None]:
    """Turn httpx exceptions raised inside the block into ``HttpError`` with a short, human reason."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise HttpError(f"timed out after {timeout_s:g} s ({type(exc).__name__})")
    except TimeoutError:  # the overall deadline of aget_bytes
        raise HttpError(f"timed out after {timeout_s:g} s (no complete answer)")
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise HttpError(f"invalid URL: {exc}", permanent=True)
    except httpx.ConnectError as exc:
        raise HttpError(f"cannot connect: {exc}")
    except httpx.HTTPError as exc:
        raise HttpError(f"HTTP request failed: {type(exc).__name__}: {exc}")
