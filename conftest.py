"""Root pytest configuration.

The default run is sized for a laptop (minutes, under 3 GB of RSS): tests marked ``slow`` (long
property and differential runs) are skipped unless ``MEMENTOS_SLOW_TESTS=1`` is set or ``-m slow``
selects them; CI runs them as a separate step. Big inputs live in the benchmarks.

A plain `pytest` runs every benchmark once as a test (benchmarks disabled, small inputs);
`pytest --benchmark-only` (or `--benchmark-enable`) measures them on large inputs. This replaces a
`--benchmark-disable` in addopts, which pytest-benchmark refuses to combine with `--benchmark-only`.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    if hasattr(opt, "benchmark_disable") and not (
        getattr(opt, "benchmark_only", False) or getattr(opt, "benchmark_enable", False)
    ):
        opt.benchmark_disable = True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MEMENTOS_SLOW_TESTS") == "1" or "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="long-running: set MEMENTOS_SLOW_TESTS=1 or pass -m slow (CI runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
