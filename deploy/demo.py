"""A self-contained Tally demo: the console, a local nginx-rtmp it configured, and three synthetic encoders.

``make demo`` (or ``.venv/bin/python deploy/demo.py``) starts, all on 127.0.0.1:

1. the console on the embedded default (SQLite, no broker: polling runs in-process), served by daphne as
   ``make run`` does, with an admin account and an API token (both printed);
2. an nginx-rtmp whose config Tally rendered (``render_origin_config``) for a Server and an Application
   ``live`` created here, run like tests/nginx.py's ``NginxProcess`` (own prefix in a temp dir);
3. three publish keys issued through Tally and three low-CPU ffmpeg test-pattern publishers, one of which
   drops and reconnects every ``--flap-every`` seconds.

It runs until Ctrl-C (or SIGTERM, or ``--seconds N``), then stops every process it started, by PID, and
removes its temp dir. nginx, ffmpeg and console logs go to files in that temp dir. The database lives in
the temp dir too, unless TALLY_VAR_DIR is set (then it is kept there).

Needs what ``make test`` installs: nginx with libnginx-mod-rtmp, and ffmpeg.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.nginx import (  # noqa: E402 - needs ROOT on sys.path
    HOST,
    FfmpegPublisher,
    NginxProcess,
    ProcessError,
    free_port,
    terminate,
    wait_until,
)

SERVER_NAME = "demo"
APP_NAME = "live"
APP_SETTINGS = {"on_update_interval_s": 5}
SERVER_POLL_INTERVAL_S = 2
STEADY = ("cam1", "cam2")
FLAPPING = "flappy"
MAX_DOWN_S = 10  # how long the flapping publisher stays away each time
RESTART_AFTER_S = 3  # a publisher that died by itself is started again after this
# Variables that would take the console out of the embedded default.
NOT_EMBEDDED = ("DATABASE_URL", "DATABASE_URL_FILE", "REDIS_URL", "REDIS_URL_FILE", "TALLY_PRODUCTION",
                "TALLY_BACKGROUND_IN_PROCESS", "DJANGO_SETTINGS_MODULE")  # fmt: skip


class Stop(Exception):
    """SIGINT/SIGTERM arrived while starting up."""


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop_requested = False
        self.tmp = Path(tempfile.mkdtemp(prefix="tally-demo-"))
        self.console: subprocess.Popen[bytes] | None = None
        self.console_log: IO[bytes] | None = None
        self.nginx: NginxProcess | None = None
        self.publishers: dict[str, FfmpegPublisher] = {}
        self.secrets: dict[str, str] = {}
        self.down_since: dict[str, float] = {}  # name -> when it stopped (flap or crash), while it is down
        self.rtmp_port = free_port()
        self.http_port = free_port()
        self.base = f"http://{HOST}:{args.port}"

    # -- signals -------------------------------------------------------------------------------------

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def check_stop(self) -> None:
        if self.stop_requested:
            raise Stop

    # -- setup ---------------------------------------------------------------------------------------

    def prepare_environment(self) -> tuple[Path, str]:
        """Embedded-default settings for this process and the console; returns (var dir, admin password)."""
        for name in NOT_EMBEDDED:
            os.environ.pop(name, None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "console.settings"
        var_dir = Path(os.environ.get("TALLY_VAR_DIR") or self.tmp / "var")
        os.environ["TALLY_VAR_DIR"] = str(var_dir)
        os.environ["TALLY_CALLBACK_BASE_URL"] = self.base
        os.environ.setdefault("TALLY_POLL_INTERVAL_S", "1")
        password = os.environ.get("TALLY_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        os.environ["TALLY_ADMIN_PASSWORD"] = password
        return var_dir, password

    def set_up_database(self) -> tuple[str, str]:
        """Migrate, make the admin, the server, its application and the keys; render the nginx config.

        Returns (admin username, API token). Runs Django in this process, then closes its connections:
        from here on only the console process uses the database.
        """
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connections

        from console import audit, tokens
        from streams import keys
        from streams.models import Application, Server, StreamKey
        from streams.rendering import render_origin_config

        call_command("migrate", interactive=False, verbosity=0)
        call_command("bootstrap_admin", stdout=io.StringIO())
        username = os.environ.get("TALLY_ADMIN_USERNAME") or "admin"
        admin = get_user_model().objects.get(username=username)
        actor = audit.Actor(user=admin)

        server = Server.objects.filter(name=SERVER_NAME).first() or Server(name=SERVER_NAME)
        server.kind, server.role, server.host = Server.Kind.NGINX_RTMP, Server.Role.ORIGIN, HOST
        server.rtmp_port = self.rtmp_port
        server.stat_url = f"http://{HOST}:{self.http_port}/stat"
        server.control_url = f"http://{HOST}:{self.http_port}/control"
        server.poll_interval_s = SERVER_POLL_INTERVAL_S
        server.enabled = True
        audit.save_audited(server, actor)
        app = Application.objects.filter(server=server, name=APP_NAME).first() or Application(
            server=server, name=APP_NAME
        )
        app.settings = dict(APP_SETTINGS)
        audit.save_audited(app, actor)

        for name in (*STEADY, FLAPPING):
            existing = StreamKey.objects.filter(application=app, public_name=name).first()
            if existing is not None and existing.state() == StreamKey.State.ACTIVE:  # a kept TALLY_VAR_DIR
                issued = keys.rotate_key(existing, actor, grace=timedelta(0))
            else:
                issued = keys.issue_key(app, label=f"Demo {name}", public_name=name, actor=actor)
            self.secrets[name] = issued.secret
        token = tokens.issue_token(admin, "demo", "admin", audit.Actor.system()).secret

        config = render_origin_config(
            server,
            [app],
            callback_base_url=self.base,
            record_path=str(self.tmp / "nginx" / "media" / "record"),
            hls_path=str(self.tmp / "nginx" / "media" / "hls"),
        )
        (self.tmp / "nginx.conf").write_text(config)
        connections.close_all()
        return username, token

    def start_console(self) -> None:
        """daphne ``console.asgi:application`` as ``make run`` serves it, its output in console.log."""
        self.console_log = (self.tmp / "console.log").open("wb")
        self.console = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(self.args.port), "console.asgi:application"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.console_log,
            stderr=self.console_log,
            process_group=0,  # Ctrl-C reaches only this script, which stops the console last
        )
        console = self.console

        def answers() -> bool:
            self.check_stop()
            if console.poll() is not None:
                raise ProcessError(f"the console exited with rc {console.returncode}:\n{self.log_tail('console.log')}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as response:  # noqa: S310 - http://127.0.0.1
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        if not wait_until(answers, timeout_s=60, interval_s=0.2):
            raise ProcessError(f"the console did not answer {self.base}/healthz:\n{self.log_tail('console.log')}")

    def start_nginx(self) -> None:
        config = (self.tmp / "nginx.conf").read_text()
        self.nginx = NginxProcess(config, self.tmp / "nginx", http_port=self.http_port, rtmp_port=self.rtmp_port)

    def start_publisher(self, name: str) -> None:
        assert self.nginx is not None
        url = self.nginx.rtmp_url(APP_NAME, self.secrets[name])
        self.publishers[name] = FfmpegPublisher(url, self.tmp / f"ffmpeg-{name}.log")
        self.down_since.pop(name, None)

    # -- running -------------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)
        try:
            port_free(self.args.port)
            var_dir, password = self.prepare_environment()
            print(f"Setting up Tally in {var_dir} ...", flush=True)
            username, token = self.set_up_database()
            self.check_stop()
            self.start_console()
            self.start_nginx()
            self.check_stop()
            for name in (*STEADY, FLAPPING):
                self.start_publisher(name)
            self.print_banner(username, password, token)
            self.loop()
            return 0
        except Stop:
            return 0
        except (ProcessError, OSError, ValueError) as exc:
            print(f"demo: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.shutdown()

    def loop(self) -> None:
        started = time.monotonic()
        flap_every = self.args.flap_every
        down_s = min(MAX_DOWN_S, flap_every / 2)
        next_flap = started + flap_every
        while not self.stop_requested:
            now = time.monotonic()
            if self.args.seconds and now - started >= self.args.seconds:
                print(f"--seconds {self.args.seconds} reached.", flush=True)
                return
            if self.console is not None and self.console.poll() is not None:
                raise ProcessError(f"the console exited (rc {self.console.returncode}); see {self.tmp}/console.log")
            if self.nginx is not None and not self.nginx.alive():
                raise ProcessError(f"nginx exited (rc {self.nginx.process.returncode}); see {self.tmp}/nginx/logs")
            if flap_every > 0 and now >= next_flap and FLAPPING not in self.down_since:
                self.publishers[FLAPPING].stop()
                self.down_since[FLAPPING] = now
                next_flap = now + down_s + flap_every
                print(f"[{clock()}] {FLAPPING}: dropped, reconnecting in {down_s:g} s", flush=True)
            for name, publisher in self.publishers.items():
                since = self.down_since.get(name)
                if since is None and not publisher.alive():
                    rc = publisher.process.returncode
                    print(f"[{clock()}] {name}: ffmpeg exited (rc {rc}), restarting; see {publisher.log_path}")
                    self.down_since[name] = now
                elif since is not None and now - since >= (down_s if name == FLAPPING else RESTART_AFTER_S):
                    self.start_publisher(name)
                    print(f"[{clock()}] {name}: publishing again", flush=True)
            time.sleep(0.2)

    def print_banner(self, username: str, password: str, token: str) -> None:
        assert self.nginx is not None
        live_api = f"{self.base}/api/v1/streams/?live=true"
        flap = f"drops every {self.args.flap_every:g} s" if self.args.flap_every > 0 else "does not flap"
        lines = [
            "",
            "Tally demo is running.",
            f"  Console:     {self.base}/",
            f"  Log in as:   {username}",
            f"  Password:    {password}",
            f"  API token:   {token}",
            f"  Live API:    {live_api}",
            f"               curl -H 'Authorization: Bearer {token}' '{live_api}'",
            f"  nginx-rtmp:  {self.nginx.rtmp_url(APP_NAME)} (stat {self.nginx.stat_url}, pid {self.nginx.pid})",
            f"  Publishers:  {', '.join(STEADY)} and {FLAPPING} ({flap}); play one with",
            f"               ffplay {self.nginx.rtmp_url(APP_NAME, STEADY[0])}",
            f"  Logs:        {self.tmp} (removed on exit)",
            "Polling shows the streams within a few seconds. Press Ctrl-C to stop.",
            "",
        ]
        print("\n".join(lines), flush=True)

    # -- teardown ------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop what was started, by PID: publishers, then nginx, then the console; remove the temp dir."""
        print("Stopping the demo ...", flush=True)
        for publisher in self.publishers.values():
            publisher.stop()
        if self.nginx is not None:
            self.nginx.stop()
        if self.console is not None:
            terminate(self.console)
        if self.console_log is not None:
            self.console_log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        print("Stopped.", flush=True)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.tmp / name
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def clock() -> str:
    return time.strftime("%H:%M:%S")


def port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as daphne binds: TIME_WAIT is no obstacle
        try:
            sock.bind((HOST, port))
        except OSError:
            raise OSError(f"port {port} on {HOST} is in use; pick another with --port") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8000, help="console port on 127.0.0.1 (default 8000)")
    parser.add_argument("--seconds", type=float, default=0, help="stop by itself after N seconds (0: run until Ctrl-C)")
    parser.add_argument(
        "--flap-every", type=float, default=60, help="seconds between drops of the flapping publisher (0: never)"
    )
    args: Any = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines show up at once, also through a pipe
    return Demo(args).run()


if __name__ == "__main__":
    sys.exit(main())
