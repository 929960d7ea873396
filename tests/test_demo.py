"""``make demo`` for real: deploy/demo.py starts the console, a Tally-rendered nginx-rtmp and three ffmpeg
publishers; polling lists the three live streams, the flapping one goes away and comes back, and SIGINT
stops everything the demo started."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from tests.console.test_modes import clean_env
from tests.nginx import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
ALL = {"cam1", "cam2", "flappy"}
WAIT_S = 90  # a bound on waiting for each step (the demo flaps every 20 s here), not a speed assertion


def live_names(base: str, token: str) -> set[str]:
    request = urllib.request.Request(f"{base}/api/v1/streams/?live=true")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        results = json.loads(response.read())["results"]
    assert {s["server_name"] for s in results} <= {"demo"}
    return {s["name"] for s in results}


def descendants(pid: int) -> set[int]:
    """PIDs of every process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_demo_serves_live_streams_flaps_and_stops_cleanly(tmp_path):
    port = free_port()
    env = clean_env(TALLY_VAR_DIR=str(tmp_path / "var"))
    args = ["deploy/demo.py", "--port", str(port), "--seconds", "60", "--flap-every", "20"]
    demo = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    lines: list[str] = []
    banner_done = threading.Event()

    def read_output():
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("Polling shows"):
                banner_done.set()
        banner_done.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        assert banner_done.wait(WAIT_S) and demo.poll() is None, "".join(lines)
        output = "".join(lines)
        token = re.search(r"API token:\s+(\S+)", output).group(1)
        rtmp_port, http_port = map(
            int, re.search(r"rtmp://127\.0\.0\.1:(\d+)/live \(stat http://127\.0\.0\.1:(\d+)/", output).groups()
        )
        temp_dir = Path(re.search(r"Logs:\s+(\S+)", output).group(1))
        assert temp_dir.is_dir()
        base = f"http://127.0.0.1:{port}"

        assert wait_until(lambda: live_names(base, token) == ALL, WAIT_S, 0.5), "".join(lines)
        children = descendants(demo.pid)
        assert len(children) >= 6  # console, nginx master + worker, three ffmpeg
        assert wait_until(lambda: live_names(base, token) == ALL - {"flappy"}, WAIT_S, 0.5), "".join(lines)
        assert "flappy: dropped" in "".join(lines)
        assert wait_until(lambda: live_names(base, token) == ALL, WAIT_S, 0.5), "".join(lines)
        assert "flappy: publishing again" in "".join(lines)
        children |= descendants(demo.pid)  # the flapping publisher's new ffmpeg

        if demo.poll() is None:  # unless --seconds already ran out on a slow machine
            demo.send_signal(signal.SIGINT)
        assert demo.wait(WAIT_S) == 0, "".join(lines)
        reader.join(WAIT_S)
        assert "Stopped." in "".join(lines)
        assert not [pid for pid in children if running(pid)], "".join(lines)
        assert not temp_dir.exists()
        assert refuses(port) and refuses(rtmp_port) and refuses(http_port)
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
