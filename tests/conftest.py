"""Shared fixtures: the real traces under ../shared/data/real (read in place, never copied)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _real_dir() -> Path:
    """$MEMENTOS_REAL_DATA, else ../shared/data/real beside the checkout, else the workspace's."""
    candidates = [
        os.environ.get("MEMENTOS_REAL_DATA"),
        REPO.parent / "shared" / "data" / "real",
        "/work/shared/data/real",
    ]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return REPO.parent / "shared" / "data" / "real"


REAL_DIR = _real_dir()


def real_rows() -> list[dict]:
    """Every row of every JSONL file in ../shared/data/real (empty when the folder is absent)."""
    rows: list[dict] = []
    if REAL_DIR.is_dir():
        for path in sorted(REAL_DIR.glob("*.jsonl")):
            with path.open(encoding="utf-8") as f:
                rows.extend(json.loads(line) for line in f if line.strip())
    return rows


@pytest.fixture(scope="session")
def real() -> list[dict]:
    rows = real_rows()
    if not rows:
        pytest.skip(f"no real traces at {REAL_DIR}")
    return rows


@pytest.fixture(scope="session")
def real_dir(real) -> Path:
    """The folder of real traces (skips when absent)."""
    return REAL_DIR
