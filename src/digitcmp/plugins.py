"""``--plugin``: the only way user code is imported. A plugin is a module name or a path to a
``.py`` file; its import registers models.

The working directory is never put on ``sys.path`` (a ``PIL/`` folder or a ``tomllib.py`` there
would shadow the real libraries): a module name is first imported normally, and only if that
fails is the working directory searched, for that one module. Each plugin is resolved to what a
fresh worker process can import (a module name, or an absolute file path) and stored so in the
config, so every worker loads the same code.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

from .errors import ConfigError


def resolve_plugin(spec: str) -> str:
    """Import plugin ``spec`` (once per process) and return its resolved form."""
    if spec.endswith(".py") or os.sep in spec or (os.altsep and os.altsep in spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"--plugin {spec}: no such file")
        _load_file(path, spec)
        return str(path)
    if not _valid_name(spec):
        raise ConfigError(f"--plugin {spec}: not a module name or a path to a .py file")
    if spec in sys.modules:
        return spec
    try:
        installed = importlib.util.find_spec(spec) is not None
    except (ImportError, ValueError):
        installed = False
    if installed:
        _run(lambda: importlib.import_module(spec), spec)
        return spec
    found = importlib.machinery.PathFinder.find_spec(spec, [os.getcwd()]) if "." not in spec else None
    if found is None or found.origin is None:
        raise ConfigError(f"--plugin {spec}: no module of that name (give a module name, or a path "
                          "to a .py file)")
    path = Path(found.origin).resolve()
    _load_file(path, spec, name=spec)
    return str(path)


def load_plugins(specs: list[str]) -> None:
    """Import resolved plugins, e.g. in a fresh worker (each at most once per process)."""
    for spec in specs:
        resolve_plugin(spec)


def _valid_name(spec: str) -> bool:
    return all(part.isidentifier() for part in spec.split("."))


def _load_file(path: Path, spec: str, name: str | None = None) -> None:
    name = name or path.stem
    module = sys.modules.get(name)
    if module is not None and Path(getattr(module, "__file__", None) or "").resolve() == path:
        return  # loaded already
    if path.name == "__init__.py":
        loc = importlib.util.spec_from_file_location(name, path,
                                                     submodule_search_locations=[str(path.parent)])
    else:
        loc = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loc)
    sys.modules[name] = module
    try:
        _run(lambda: loc.loader.exec_module(module), spec)
    except ConfigError:
        del sys.modules[name]
        raise


def _run(load, spec: str) -> None:
    """Run a plugin's import, turning whatever it raises into one line naming the plugin."""
    try:
        load()
    except ConfigError:
        raise
    except SyntaxError as e:
        raise ConfigError(f"--plugin {spec}: syntax error in {e.filename}, line {e.lineno}: {e.msg}") from e
    except Exception as e:
        raise ConfigError(f"--plugin {spec}: importing it failed: {type(e).__name__}: {e}") from e
