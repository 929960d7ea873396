"""The fleet in Prometheus text format (version 0.0.4), from the stored live state: one query per table."""

from __future__ import annotations

from collections.abc import Iterable

from monitoring.models import Health, ServerStatus, Stream
from streams.models import Server

_SERVER_METRICS = (
    ("tally_server_up", "gauge", "1 when the server's health is up, else 0."),
    ("tally_server_health", "gauge", "1 for the server's current health state."),
    ("tally_server_live_streams", "gauge", "Live streams on the server."),
    ("tally_server_connections", "gauge", "Connections the server reported at the last poll."),
    ("tally_poll_duration_seconds", "gauge", "Duration of the server's last poll."),
    ("tally_polls_total", "counter", "Polls of the server."),
    ("tally_poll_errors_total", "counter", "Failed polls of the server."),
)
_STREAM_METRICS = (
    ("tally_stream_bitrate_in_kbps", "gauge", "Incoming bitrate of a live stream (kbit/s).", "bitrate_in_kbps"),
    ("tally_stream_bitrate_out_kbps", "gauge", "Outgoing bitrate of a live stream (kbit/s).", "bitrate_out_kbps"),
    ("tally_stream_viewers", "gauge", "Viewers of a live stream.", "viewers"),
)


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}"


def _number(value: float | int) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render() -> str:
    """The whole exposition, one ``# HELP``/``# TYPE`` block per metric."""
    servers = list(Server.objects.order_by("pk").values_list("pk", "name", "kind", "enabled"))
    statuses = {s.server_id: s for s in ServerStatus.objects.all()}
    live = list(Stream.objects.filter(live=True).order_by("pk").values_list("server_id", "app", "name", "latest"))
    live_per_server: dict[int, int] = {}
    for server_id, *_ in live:
        live_per_server[server_id] = live_per_server.get(server_id, 0) + 1
    names = {pk: name for pk, name, _, _ in servers}
    samples: dict[str, list[str]] = {name: [] for name, _, _ in _SERVER_METRICS}
    for pk, name, kind, enabled in servers:
        if not enabled:
            continue
        status = statuses.get(pk)
        health = status.health if status else Health.UNKNOWN
        base = _labels(server=name, id=pk, kind=kind)
        samples["tally_server_up"].append(f"tally_server_up{base} {int(health == Health.UP)}")
        for state in Health.values:
            labels = _labels(server=name, id=pk, kind=kind, health=state)
            samples["tally_server_health"].append(f"tally_server_health{labels} {int(health == state)}")
        samples["tally_server_live_streams"].append(f"tally_server_live_streams{base} {live_per_server.get(pk, 0)}")
        if status is None:
            continue
        connections = (status.snapshot or {}).get("connections")
        if isinstance(connections, int) and status.health != Health.DOWN:
            samples["tally_server_connections"].append(f"tally_server_connections{base} {connections}")
        if status.last_poll_ms is not None:
            seconds = _number(round(status.last_poll_ms / 1000, 4))
            samples["tally_poll_duration_seconds"].append(f"tally_poll_duration_seconds{base} {seconds}")
        samples["tally_polls_total"].append(f"tally_polls_total{base} {status.polls_total}")
        samples["tally_poll_errors_total"].append(f"tally_poll_errors_total{base} {status.poll_errors_total}")
    lines = list(_blocks(((name, kind, text, samples[name]) for name, kind, text in _SERVER_METRICS)))
    for metric, kind, text, field in _STREAM_METRICS:
        rows = []
        for server_id, app, stream_name, latest in live:
            value = (latest or {}).get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                labels = _labels(server=names.get(server_id, server_id), app=app, stream=stream_name)
                rows.append(f"{metric}{labels} {_number(value)}")
        lines += _blocks([(metric, kind, text, rows)])
    return "\n".join(lines) + "\n"


def _blocks(metrics: Iterable[tuple[str, str, str, list[str]]]) -> Iterable[str]:
    for name, kind, text, rows in metrics:
        yield f"# HELP {name} {text}"
        yield f"# TYPE {name} {kind}"
        yield from rows
