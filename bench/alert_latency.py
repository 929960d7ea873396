"""Benchmark: from killing a publisher to its "stream dropped" e-mail arriving, with the default 15 s grace.

Starts what ``make demo`` starts (the console on the embedded default: daphne, SQLite, the in-process timer
evaluating alerts every TALLY_ALERT_TICK_S = 2 s; a local nginx-rtmp whose config Tally rendered; ffmpeg
publishers) plus an SMTP server on loopback (aiosmtpd) that the console sends to. Each run SIGKILLs one
publisher (no clean close: nginx notices the dead connection) and waits for the e-mail naming its stream.

Run from the repo root: ``.venv/bin/python bench/alert_latency.py``. Last line: one JSON object.
Target: drop_to_email_s ≤ grace_s + 5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.demo import FLAPPING, STEADY, Demo  # noqa: E402
from tests.nginx import free_port, wait_until  # noqa: E402
from tests.receivers import SmtpServer  # noqa: E402

GRACE_S = 15  # the default rule's grace period, left as shipped
NAMES = (*STEADY, FLAPPING)  # one run per publisher
BOUND_S = 120


def publishing(demo: Demo, token: str, name: str) -> bool:
    """The stream is live in the console (a callback opened its session and a poll saw it)."""
    request = urllib.request.Request(f"{demo.base}/api/v1/streams/?live=true&name={name}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:  # http://127.0.0.1 only
        return bool(json.loads(response.read())["results"])


def main() -> None:
    smtp = SmtpServer().start()
    os.environ.update(
        TALLY_EMAIL_HOST="127.0.0.1", TALLY_EMAIL_PORT=str(smtp.port), TALLY_ALERT_EMAILS="noc@bench.test"
    )
    demo = Demo(argparse.Namespace(port=free_port(), seconds=0, flap_every=0))
    latencies = []
    try:
        demo.prepare_environment()
        _, token = demo.set_up_database()
        demo.start_console()
        demo.start_nginx()
        for name in NAMES:
            demo.start_publisher(name)
        for name in NAMES:
            went_live = wait_until(lambda name=name: publishing(demo, token, name), timeout_s=BOUND_S)
            assert went_live, f"{name} never went live"
        for name in NAMES:
            subject = f"Stream dropped: live/{name} "
            killed = time.monotonic()
            demo.publishers[name].kill()
            arrived = wait_until(lambda s=subject: any(s in t for t in smtp.inbox.texts()), timeout_s=BOUND_S,
                                 interval_s=0.05)  # fmt: skip
            assert arrived, f"no e-mail for {name}; see {demo.tmp}/console.log"
            latencies.append(round(time.monotonic() - killed, 2))
            print(f"{name}: e-mail {latencies[-1]:.2f} s after the kill (grace {GRACE_S} s)", flush=True)
    finally:
        demo.shutdown()
        smtp.stop()
    result = {"grace_s": GRACE_S, "drop_to_email_s": statistics.median(latencies), "max_s": max(latencies),
              "runs": latencies}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
