"""Real nginx-rtmp and ffmpeg processes for tests, owned by PID (never pkill/killall).

``NginxProcess`` runs ``nginx -g 'daemon off;'`` in its own prefix and process group, so ``stop()`` can end
the master *and* its workers without touching anything else. ``FfmpegPublisher`` is the lab's low-CPU
synthetic encoder; ``FfmpegPlayer`` reads a stream and counts the frames it decoded.

Use the fixtures by importing them into a test module (``from tests.nginx import nginx_factory``) and
requesting them as arguments; they stop every process they started at teardown.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

NGINX = "/usr/sbin/nginx"
FFMPEG = "ffmpeg"
HOST = "127.0.0.1"


class ProcessError(RuntimeError):
    """A helper process refused its config, failed to start or exited early; the message has its output."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _end_process(
    process: subprocess.Popen[bytes], steps: list[tuple[signal.Signals, float]], *, group: bool = False
) -> int:
    """Send each (signal, grace) in turn to ``process`` until it exits, then SIGKILL it.

    With ``group``, the final SIGKILL goes to the process group ``process`` leads (made with
    ``process_group=0``), so workers of a master that had to be killed do not outlive it.
    """
    for sig, grace_s in steps:
        if process.poll() is not None:
            return process.returncode
        try:
            process.send_signal(sig)
            return process.wait(timeout=grace_s)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            continue
    if process.poll() is None:
        try:
            # While any member is alive the group id cannot be reused, so this reaches only our processes.
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        except ProcessLookupError:
            pass
    return process.wait(timeout=10)


def _let_workers_in(prefix: Path) -> None:
    """As root, nginx's workers run as ``nobody``: let them reach the prefix and write tmp/ and media/.

    pytest makes its temp dirs 0700, so like tests/bin/pg_ctl this adds o+x (traverse, not list) to the
    prefix and each ancestor that lacks it.
    """
    for sub in ("tmp", "media"):
        (prefix / sub).chmod(0o777)
    for directory in (prefix, *prefix.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def terminate(process: subprocess.Popen[bytes], grace_s: float = 10) -> int:
    """SIGTERM a process we started, then SIGKILL it if it is still there after ``grace_s``."""
    return _end_process(process, [(signal.SIGTERM, grace_s)])


def _parent_pid(pid: int) -> int | None:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat_line.rsplit(")", 1)[1].split()[1])


def wait_until(check: Callable[[], bool], timeout_s: float = 20, interval_s: float = 0.05) -> bool:
    """True as soon as ``check()`` is; False after ``timeout_s`` (a bound on waiting, not a speed assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return check()


class NginxProcess:
    """One nginx master (plus its worker) serving ``config`` from ``prefix``, with stat on ``http_port``.

    The prefix gets ``conf/nginx.conf``, ``logs/``, ``tmp/`` and ``media/`` (for hls/record paths). The
    config must use prefix-relative ``pid``/``error_log``/temp paths (``render_origin_config`` does) and
    serve ``/stat`` and ``/control`` on 127.0.0.1:``http_port``. Started by the constructor.
    """

    def __init__(
        self, config: str, prefix: Path, *, http_port: int, rtmp_port: int, start_timeout_s: float = 15,
        has_stat: bool = True,
    ) -> None:  # fmt: skip
        self.prefix = prefix
        self.http_port = http_port
        self.rtmp_port = rtmp_port
        self.stat_url = f"http://{HOST}:{http_port}/stat"
        self.control_url = f"http://{HOST}:{http_port}/control"
        for sub in ("conf", "logs", "tmp", "media"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _let_workers_in(prefix)
        self.write_config(config)
        self.test_config()
        self._stderr = (prefix / "logs" / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            [*self._base_args(), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            process_group=0,  # its own group: stop() can reach the workers even if the master is gone
        )
        if has_stat:
            self._wait_for_stat(start_timeout_s)
        elif not wait_until(self._rtmp_answers, start_timeout_s):  # a TCP proxy: no /stat, only its listener
            self.stop(grace_s=1)
            raise ProcessError(
                f"nginx did not listen on {HOST}:{rtmp_port} within {start_timeout_s}s:\n{self.error_log()}"
            )

    def _rtmp_answers(self) -> bool:
        if not self.alive():
            raise ProcessError(f"nginx exited with rc {self.process.returncode}:\n{self.error_log()}")
        try:
            with socket.create_connection((HOST, self.rtmp_port), timeout=1):
                return True
        except OSError:
            return False

    @property
    def pid(self) -> int:
        return self.process.pid

    def rtmp_url(self, app: str, name: str | None = None) -> str:
        base = f"rtmp://{HOST}:{self.rtmp_port}/{app}"
        return f"{base}/{name}" if name else base

    def stat_xml(self, timeout_s: float = 5) -> bytes:
        with urllib.request.urlopen(self.stat_url, timeout=timeout_s) as response:
            return bytes(response.read())

    def control(self, action: str, timeout_s: float = 5, **params: str) -> int:
        """GET /control/ACTION?params (e.g. ``control("drop/publisher", app="live", name="s1")``): sessions hit."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.control_url}/{action}?{query}", timeout=timeout_s) as response:
            body = response.read().decode().strip()
        return int(body or 0)

    def write_config(self, config: str) -> None:
        (self.prefix / "conf" / "nginx.conf").write_text(config)

    def test_config(self) -> None:
        """Run ``nginx -t`` on the prefix; raise ProcessError with nginx's stderr when it fails."""
        result = subprocess.run([*self._base_args(), "-t"], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise ProcessError(f"nginx -t failed (rc {result.returncode}):\n{result.stderr}")

    def reload(self, config: str | None = None) -> None:
        """Optionally write a new config, then ``nginx -s reload``; raise ProcessError if nginx refuses it.

        Live sessions stay in the old worker after a reload (lab README section 7).
        """
        if config is not None:
            self.write_config(config)
            self.test_config()
        result = subprocess.run([*self._base_args(), "-s", "reload"], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise ProcessError(f"nginx -s reload failed (rc {result.returncode}):\n{result.stderr}")

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = 5) -> int:
        """SIGQUIT the master, then SIGTERM, then SIGKILL its process group, ``grace_s`` apart; its exit code.

        A graceful quit (SIGQUIT) waits for RTMP sessions to close; the fast shutdown (SIGTERM) cuts them.
        """
        try:
            steps = [(signal.SIGQUIT, grace_s), (signal.SIGTERM, grace_s)]
            return _end_process(self.process, steps, group=True)
        finally:
            self._stderr.close()

    def _base_args(self) -> list[str]:
        return [NGINX, "-p", f"{self.prefix}/", "-c", "conf/nginx.conf", "-e", "logs/error.log"]

    def _stat_answers(self) -> bool:
        if not self.alive():
            self._stderr.close()
            output = (self.prefix / "logs" / "stderr.log").read_text(errors="replace")
            raise ProcessError(f"nginx exited with rc {self.process.returncode}:\n{output}\n{self.error_log()}")
        try:
            xml = self.stat_xml(timeout_s=1)
        except (urllib.error.URLError, OSError):
            return False
        # Only our worker counts: another process on the port (a stale nginx) must not pass for ours.
        match = re.search(rb"<pid>(\d+)</pid>", xml)
        return bool(match) and _parent_pid(int(match.group(1))) == self.process.pid

    def _wait_for_stat(self, timeout_s: float) -> None:
        if not wait_until(self._stat_answers, timeout_s):
            self.stop(grace_s=1)
            raise ProcessError(f"nginx did not answer {self.stat_url} within {timeout_s}s:\n{self.error_log()}")


class _FfmpegProcess:
    """An ffmpeg subprocess with its stderr in a file; the shared half of publisher and player."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.process = subprocess.Popen(
            [FFMPEG, "-hide_banner", "-nostdin", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout_s: float) -> int:
        """The exit code; raises subprocess.TimeoutExpired if ffmpeg is still running after ``timeout_s``."""
        return self.process.wait(timeout=timeout_s)

    def stderr_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def _stop(self, first: signal.Signals, grace_s: float) -> int:
        try:
            return _end_process(self.process, [(first, grace_s)])
        finally:
            self._log.close()


class FfmpegPublisher(_FfmpegProcess):
    """The lab's low-CPU synthetic encoder (160x120, 10 fps, sine tone) publishing to ``url`` in real time."""

    def __init__(self, url: str, log_path: Path, *, video_kbps: int = 100, duration_s: float | None = None) -> None:
        rate = f"{video_kbps}k"
        args = ["-loglevel", "warning", "-re"]
        args += ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10"]
        args += ["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100"]
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
        args += ["-b:v", rate, "-maxrate", rate, "-bufsize", rate, "-g", "20", "-pix_fmt", "yuv420p"]
        args += ["-c:a", "aac", "-b:a", "32k", "-ar", "44100"]
        args += ["-t", str(duration_s)] if duration_s is not None else []
        super().__init__([*args, "-f", "flv", url], log_path)
        self.url = url

    def stop(self, grace_s: float = 3) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
        return self._stop(signal.SIGTERM, grace_s)

    def kill(self) -> int:
        """SIGKILL at once: the encoder dies without closing its stream (a crash, a pulled cable)."""
        return self._stop(signal.SIGKILL, 1)


class FfmpegPlayer(_FfmpegProcess):
    """Reads ``url`` for ``seconds`` of media into the null muxer; ``frames()`` counts decoded video frames.

    ``-rw_timeout`` (5 s) makes a player of a missing stream give up instead of hanging, and the frame count
    comes from ffmpeg's ``-progress`` key=value file.
    """

    def __init__(self, url: str, log_path: Path, *, seconds: float = 3) -> None:
        self.progress_path = log_path.with_suffix(".progress")
        args = ["-loglevel", "warning", "-progress", str(self.progress_path), "-stats_period", "0.5"]
        args += ["-rw_timeout", "5000000", "-i", url, "-t", str(seconds), "-f", "null", "-"]
        super().__init__(args, log_path)
        self.url = url

    def frames(self) -> int:
        """Video frames decoded so far (the last ``frame=`` of the progress file; 0 before any)."""
        if not self.progress_path.exists():
            return 0
        counts = [
            line.split("=", 1)[1] for line in self.progress_path.read_text().splitlines() if line.startswith("frame=")
        ]
        return int(counts[-1]) if counts and counts[-1].strip().isdigit() else 0

    def received_frames(self) -> bool:
        return self.frames() > 0

    def stop(self) -> int:
        """SIGKILL (a player waiting for a stream ignores SIGINT and often SIGTERM); returns the exit code."""
        return self._stop(signal.SIGKILL, 10)


class FfmpegFactory:
    """Starts publishers and players under one log directory and stops them all on ``stop_all()``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[FfmpegPublisher | FfmpegPlayer] = []

    def publisher(self, url: str, *, video_kbps: int = 100, duration_s: float | None = None) -> FfmpegPublisher:
        log = self._log_path("publisher")
        proc = FfmpegPublisher(url, log, video_kbps=video_kbps, duration_s=duration_s)
        self.started.append(proc)
        return proc

    def player(self, url: str, *, seconds: float = 3) -> FfmpegPlayer:
        proc = FfmpegPlayer(url, self._log_path("player"), seconds=seconds)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()

    def _log_path(self, kind: str) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{kind}-{len(self.started) + 1}.log"


NginxFactory = Callable[..., NginxProcess]


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[NginxFactory]:
    """``start(config, *, http_port, rtmp_port, prefix=None)`` -> a running NginxProcess; all stopped at teardown.

    ``prefix`` defaults to ``tmp_path/nginx-N``; pass one to render hls/record paths under ``PREFIX/media``
    before starting.
    """
    started: list[NginxProcess] = []

    def start(
        config: str, *, http_port: int, rtmp_port: int, prefix: Path | None = None, start_timeout_s: float = 15,
        has_stat: bool = True,
    ) -> NginxProcess:  # fmt: skip
        prefix = prefix or tmp_path / f"nginx-{len(started) + 1}"
        nginx = NginxProcess(config, prefix, http_port=http_port, rtmp_port=rtmp_port,
                             start_timeout_s=start_timeout_s, has_stat=has_stat)  # fmt: skip
        started.append(nginx)
        return nginx

    yield start
    for nginx in reversed(started):
        nginx.stop()


@pytest.fixture
def ffmpeg_factory(tmp_path: Path) -> Iterator[FfmpegFactory]:
    """An FfmpegFactory logging under ``tmp_path/ffmpeg``; every publisher and player is stopped at teardown."""
    factory = FfmpegFactory(tmp_path / "ffmpeg")
    yield factory
    factory.stop_all()
