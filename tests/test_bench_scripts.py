"""Every benchmark's imports resolve the way ``python bench/NAME.py`` runs it: with bench/ first on
sys.path, where the benchmark bench/deploy.py could stand in for the repository's deploy/ package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(path.name for path in BENCH.glob("[!_]*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_imports_resolve_as_a_script(script: str) -> None:
    # run_path with another run_name executes the module's imports and definitions, not its main().
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(BENCH)!r}); "
        f"runpy.run_path({str(BENCH / script)!r}, run_name='bench_import_check')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
