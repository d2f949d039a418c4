"""Writing outputs atomically: data goes to a hidden temporary beside its final name (same file
system), is fsynced, and is renamed into place only when complete. Shared by the export sinks
(:mod:`mementos_fast.export.sinks`), ``ray-export`` (:mod:`mementos_fast.integrations`) and
``analyze``'s report folder (``cli.OutputDir``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any


def umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes the renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_file(beside: Path) -> tuple[Path, IO[bytes]]:
    """A new hidden file ``.NAME.tmp-*`` beside ``beside``, opened for binary writing, with the
    permissions of an ordinary file (mkstemp makes 0600)."""
    fd, name = tempfile.mkstemp(prefix=f".{beside.name}.tmp-", dir=beside.parent)
    os.chmod(fd, 0o666 & ~umask())
    return Path(name), os.fdopen(fd, "wb")


def temp_dir(beside: Path) -> Path:
    """A new hidden directory ``.NAME.tmp-*`` beside ``beside``, with ordinary permissions."""
    path = Path(tempfile.mkdtemp(prefix=f".{beside.name}.tmp-", dir=beside.parent))
    os.chmod(path, 0o777 & ~umask())
    return path


def replace(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst`` and fsync ``dst``'s directory.

    An existing directory ``dst`` is first moved aside (``os.replace`` cannot replace a non-empty
    directory), then removed once ``src`` has taken its name: at every moment either the old or
    the new output is under the final name."""
    if dst.exists() and dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
    fsync_path(dst.parent)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file, fsync, rename)."""
    tmp, f = temp_file(path)
    try:
        with f:
            f.write(json.dumps(obj, indent=2).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
