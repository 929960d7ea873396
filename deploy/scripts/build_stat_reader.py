"""Build the compiled stat reader, monitoring/pollers/_stat_reader (Cython, against the installed lxml).

``make`` runs this after installing the venv; it does nothing when the module is newer than its source,
this script and the installed lxml. It needs Cython (in requirements.lock), a C compiler and Python's
headers. Without the module the console still works, with the slower Python reader
(see monitoring/pollers/nginx_rtmp.py): a failed build is a warning, unless ``--strict`` (the
production installer) makes it an error. ``make test`` fails on it anyway (tests/monitoring/test_stat_reader.py).

Usage: .venv/bin/python deploy/scripts/build_stat_reader.py [--force] [--strict]
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import lxml
import lxml.etree

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "monitoring" / "pollers" / "_stat_reader.pyx"
TARGET = SOURCE.with_name("_stat_reader" + sysconfig.get_config_var("EXT_SUFFIX"))


def up_to_date() -> bool:
    if not TARGET.exists():
        return False
    built = TARGET.stat().st_mtime
    inputs = (SOURCE, Path(__file__), Path(lxml.etree.__file__))
    return all(path.stat().st_mtime <= built for path in inputs)


def build() -> None:
    includes = [sysconfig.get_paths()["include"], *lxml.get_include()]
    with tempfile.TemporaryDirectory(prefix="tally-stat-reader-") as work:
        c_file = Path(work) / "_stat_reader.c"
        cython = [sys.executable, "-m", "cython", "-3", "--fast-fail", *[f"-I{path}" for path in lxml.get_include()]]
        subprocess.run([*cython, "-o", str(c_file), str(SOURCE)], check=True)
        partial = Path(work) / TARGET.name
        compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
        flags = ["-shared", "-fPIC", "-O2", "-fno-strict-aliasing", "-DNDEBUG", "-w"]
        subprocess.run([*compiler, *flags, *[f"-I{path}" for path in includes], str(c_file), "-o", str(partial)],
                       check=True)  # fmt: skip
        os.replace(partial, TARGET)  # processes that loaded the old one keep it mapped
    print(f"built {TARGET.relative_to(ROOT)} (lxml {lxml.__version__})")


if __name__ == "__main__":
    if "--force" in sys.argv[1:] or not up_to_date():
        try:
            build()
        except (OSError, subprocess.CalledProcessError) as exc:  # no compiler, no headers, a compile error
            if "--strict" in sys.argv[1:]:
                raise
            print(f"WARNING: compiled stat reader not built ({exc}); the Python reader is used", file=sys.stderr)
