"""Serve plotly.js from the installed ``plotly`` package as ``vendor/plotly.min.js`` (no CDN, no copy in the repo).

A staticfiles finder, so ``runserver``/whitenoise find it in development and ``collectstatic`` copies it
in production, like any app's static file. Only that one file is exposed, not the package's data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
PLOTLY_FILE = "plotly.min.js"
PREFIX = "vendor"


class PlotlyFinder(BaseFinder):
    storage = FileSystemStorage(location=str(PLOTLY_DIR))

    def __init__(self) -> None:
        self.storage.prefix = PREFIX  # type: ignore[attr-defined]  # read by collectstatic

    def check(self, **kwargs: Any) -> list[Any]:
        return []

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> Any:  # str | None, or a list
        found = path == f"{PREFIX}/{PLOTLY_FILE}" and (PLOTLY_DIR / PLOTLY_FILE).is_file()
        match = str(PLOTLY_DIR / PLOTLY_FILE) if found else None
        if find_all or kwargs.get("all"):
            return [match] if match else []
        return match

    def list(self, ignore_patterns: Any) -> Iterator[tuple[str, FileSystemStorage]]:
        yield PLOTLY_FILE, self.storage
