"""The .pyi stubs of the compiled module agree with the binary (mypy.stubtest), and the public
package exports exactly what ``__all__`` says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mementos_fast as mf


def test_stubtest_core_module(tmp_path):
    pytest.importorskip("mypy")
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nignore_missing_imports = True\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "mementos_fast._core",
            "--mypy-config-file",
            str(config),
            "--allowlist",
            str(Path(__file__).with_name("stubtest_allowlist.txt")),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_all_is_explicit_and_importable():
    assert len(mf.__all__) == len(set(mf.__all__))
    for name in mf.__all__:
        assert hasattr(mf, name), name


def test_exception_hierarchy():
    for exc in (mf.MementoFormatError, mf.MementoTypeError, mf.MementoValueError, mf.MementoInternalError):
        assert issubclass(exc, mf.MementoError)
    assert issubclass(mf.MementoFormatError, ValueError)
    assert issubclass(mf.MementoTypeError, TypeError)
    import pickle

    e = pickle.loads(pickle.dumps(mf.MementoFormatError(3, 17, "nested_block", "detail")))
    assert (e.row, e.offset, e.status) == (3, 17, "nested_block")


def test_release_build_does_not_warn():
    # The CI and README install in release mode; a debug build would warn at import.
    assert mf._core.BUILD_PROFILE == "release"
