"""Root pytest configuration.

A plain `pytest` runs every benchmark once as a test (benchmarks disabled, small inputs);
`pytest --benchmark-only` (or `--benchmark-enable`) measures them on large inputs. This replaces a
`--benchmark-disable` in addopts, which pytest-benchmark refuses to combine with `--benchmark-only`.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    if hasattr(opt, "benchmark_disable") and not (
        getattr(opt, "benchmark_only", False) or getattr(opt, "benchmark_enable", False)
    ):
        opt.benchmark_disable = True
