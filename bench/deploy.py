"""Benchmark: one config deploy (render + validate + apply + verify) while publishers are live.

Starts what ``make demo`` starts (the console on the embedded default, a local nginx-rtmp whose config Tally
rendered, 3 ffmpeg publishers through Tally's callbacks) plus tally-agent beside nginx. Then deploys the
server's config DEPLOYS times from this process (``streams.deploys.deploy``, graceful mode, as the API
does), adding or removing an application each time so that every deploy changes the file and reloads
nginx. ``deploy_s`` is the median wall time of one deploy: rendering, the diff against the live file,
``nginx -t`` on the host, the atomic replace, the reload and the agent's check that /stat answers from a
new worker. ``dropped_publishers`` counts the ffmpeg publishers that died during the deploys.

Run from the repo root: ``.venv/bin/python bench/deploy.py``. Last line: one JSON object.
Targets: deploy_s ≤ 1, dropped_publishers = 0.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # before bench/: "deploy" is then the package deploy/, not this file

from deploy.demo import APP_NAME, FLAPPING, STEADY, Demo  # noqa: E402
from tests.nginx import NGINX, free_port, terminate, wait_until  # noqa: E402

DEPLOYS = 10
NAMES = (*STEADY, FLAPPING)
AGENT = ROOT / "deploy" / "agent" / "tally_agent.py"


def start_agent(demo: Demo, token: str) -> tuple[subprocess.Popen[bytes], str]:
    assert demo.nginx is not None
    port = free_port()
    token_file = demo.tmp / "agent.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    args = [sys.executable, str(AGENT), "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file),
            "--nginx-bin", NGINX, "--nginx-prefix", f"{demo.nginx.prefix}/", "--nginx-conf", "conf/nginx.conf",
            "--nginx-error-log", "logs/error.log", "--stat-url", demo.nginx.stat_url,
            "--state-dir", str(demo.tmp / "agent-state")]  # fmt: skip
    log = (demo.tmp / "agent.log").open("wb")
    agent = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        request = urllib.request.Request(f"{url}/v1/status", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # http://127.0.0.1 only
                return response.status == 200
        except OSError:
            return False

    assert wait_until(answers, timeout_s=30), (demo.tmp / "agent.log").read_text()
    return agent, url


def main() -> None:
    demo = Demo(argparse.Namespace(port=free_port(), seconds=0, flap_every=0))
    agent = None
    durations = []
    try:
        demo.prepare_environment()
        demo.set_up_database()
        demo.start_console()
        demo.start_nginx()
        for name in NAMES:
            demo.start_publisher(name)
        token = secrets.token_urlsafe(24)
        agent, agent_url = start_agent(demo, token)

        from console import audit
        from streams import deploys
        from streams.models import Application, PublishSession, Server

        server = Server.objects.get(name="demo")
        server.agent_url, server.agent_token, server.nginx_prefix_paths = agent_url, token, True
        server.save()
        assert wait_until(lambda: PublishSession.objects.filter(ended__isnull=True).count() == len(NAMES),
                          timeout_s=60), "the publishers did not go live"  # fmt: skip
        for index in range(DEPLOYS):
            extra = Application.objects.filter(server=server, name="extra").first()
            if extra is None:
                Application.objects.create(server=server, name="extra")
            else:
                extra.delete()
            started = time.monotonic()
            result = deploys.deploy(server, audit.Actor.system(), mode=Server.ReloadMode.GRACEFUL)
            durations.append(time.monotonic() - started)
            assert result.revision is not None and result.revision.status == "applied", result.agent
            print(f"deploy {index + 1}: {durations[-1] * 1000:.0f} ms", flush=True)
        time.sleep(2)  # a publisher cut by a reload would have exited by now
        dropped = sum(not demo.publishers[name].alive() for name in NAMES)
        live = PublishSession.objects.filter(ended__isnull=True, app_name=APP_NAME).count()
        print(f"publishers alive after {DEPLOYS} graceful deploys: {len(NAMES) - dropped} of {len(NAMES)};"
              f" open sessions: {live}", flush=True)  # fmt: skip
    finally:
        if agent is not None:
            terminate(agent)
        demo.shutdown()
    print(json.dumps({"deploy_s": round(statistics.median(durations), 3), "max_s": round(max(durations), 3),
                      "deploys": DEPLOYS, "dropped_publishers": dropped}))  # fmt: skip


if __name__ == "__main__":
    main()
