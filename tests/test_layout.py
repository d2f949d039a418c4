"""The package's layout holds: no module that ``mementos_fast/__init__.py`` imports reaches back into
the package ``__init__`` (no import cycle), and every name importable from the former
single-module ``mementos_fast.export`` and public still is."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import mementos_fast

PACKAGE = Path(mementos_fast.__file__).parent


def _imports_of_init(path: Path) -> set[str]:
    """The ``mementos_fast.*`` modules a module imports at its top level or in functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mementos_fast")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mementos_fast"):
            if node.module == "mementos_fast":  # `from mementos_fast import x`: a submodule or a name of __init__
                out |= {f"mementos_fast.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


def _module_path(name: str) -> Path | None:
    rel = name.split(".")[1:]
    for cand in (PACKAGE.joinpath(*rel).with_suffix(".py"), PACKAGE.joinpath(*rel, "__init__.py")):
        if cand.is_file():
            return cand
    return None


def test_no_import_cycle_through_the_package_init():
    """Walk what ``__init__`` imports; none of those modules may import ``mementos_fast`` itself or a
    name defined in ``__init__`` (``import mementos_fast as mf``, ``from mementos_fast import parse_batch``)."""
    init_names = {n for n in vars(mementos_fast) if not n.startswith("__")}
    seen: set[str] = set()
    todo = sorted(m for m in _imports_of_init(PACKAGE / "__init__.py") if m != "mementos_fast")
    offenders = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_path(name)
        if path is None:  # the compiled _core, or a name of __init__ (checked below)
            continue
        for dep in _imports_of_init(path):
            leaf = dep.rsplit(".", 1)[-1]
            if dep == "mementos_fast" or (
                dep.count(".") == 1 and _module_path(dep) is None and leaf in init_names and leaf != "_core"
            ):
                offenders.append(f"{name} imports {dep}")
            elif dep not in seen:
                todo.append(dep)
    assert "mementos_fast.export.api" in seen and "mementos_fast.tokens" in seen
    assert not offenders, offenders


def test_export_package_keeps_the_former_names():
    """The public names of the single-module export stay importable from the package; its private
    helpers are imported from their module."""
    ex = importlib.import_module("mementos_fast.export")
    for name in (
        "FORMATS",
        "OUTPUTS",
        "METADATA",
        "MEMENTO_CHAT_TEMPLATE",
        "SEGMENTS",
        "SEG",
        "DELIMITERS",
        "IGNORE_INDEX",
        "EVICT_NEVER",
        "STAGE2_DEFAULTS",
        "ExportSink",
        "export_sft",
        "transform_table",
        "render_chatml",
        "dense_mask",
        "stage2_mask",
        "exporter",
        "jsonl_bytes",
    ):
        assert hasattr(ex, name), name
        assert name in ex.__all__, name
    for sub in ("formats", "labels", "sinks", "api"):
        importlib.import_module(f"mementos_fast.export.{sub}")


def test_the_options_import_nothing_of_the_export():
    """``ExportOptions`` checks itself and ``export`` builds on it: ``options.py`` imports no export
    module, not even inside a function (the former lazy ``export._check`` import was a cycle)."""
    deps = _imports_of_init(PACKAGE / "options.py")
    assert deps, "options.py imports nothing of the package?"
    assert not [d for d in deps if d == "mementos_fast.export" or d.startswith("mementos_fast.export.")], deps
