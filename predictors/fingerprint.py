"""Code fingerprints: a short hash of the source that produces a predictor's forecasts.

The forecast cache and the trial ledger key on it, so that editing a predictor's code
(same class name, same parameters) is a cache miss and a new trial.

What is hashed, for a predictor class ``C``:

- the module file of ``C`` and of every class it inherits from (``Predictor`` in
  ``predictors/base.py`` included; the standard library and ``object`` left out);
- transitively, the module files those modules use (``from x import y`` or ``import x``)
  **inside the same top-level package**, or inside ``predictors/`` — e.g. the Chronos
  plugin's ``predictors/_torch.py`` sampler and ``predictors/hub.py``;
- for built-in predictors (modules inside ``predictors/``), the project version from
  ``pyproject.toml`` as well;
- the modules a tracked module names in a global ``FINGERPRINT_LAZY`` (a tuple of module names):
  those it imports only inside functions, e.g. to keep torch out of ``import predictors``
  (``predictors/kronos.py`` and its architecture, ``predictors/kronos_model.py``), hashed from
  their source files without importing them.

Not hashed: third-party packages (torch, transformers: pin them; the model's revision is
in the predictor's parameters), files a plugin reads at run time, and modules of other
packages it imports. A class without a source file (defined in ``exec`` or a REPL) gets a
token unique to the process, so its forecasts are never reused by another process.

The hash of a class is taken once per class object and then kept: a file edited after
its module was imported does not describe the code that runs, so it is not re-read until
the module is imported again (a new process or ``importlib.reload``).

This module imports nothing from the engine, feeds or strategies (see DESIGN.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
import tomllib
import types
import uuid
from pathlib import Path

__all__ = ["code_fingerprint", "project_version", "source_modules"]

log = logging.getLogger(__name__)

_PREDICTORS_DIR = Path(__file__).resolve().parent
_PROJECT_ROOT = _PREDICTORS_DIR.parent
_PROCESS_TOKEN = uuid.uuid4().hex
_CACHE: dict[type, str] = {}


def project_version() -> str:
    """``project.version`` of the repository's ``pyproject.toml`` (``"unknown"`` if unreadable)."""
    try:
        data = tomllib.loads((_PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        return str(data["project"]["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "unknown"


def _module_file(module: types.ModuleType) -> Path | None:
    name = getattr(module, "__file__", None)
    if not name or not name.endswith(".py"):
        return None
    path = Path(name).resolve()
    return path if path.is_file() else None


def _is_stdlib(module_name: str) -> bool:
    return module_name.split(".")[0] in sys.stdlib_module_names or module_name == "builtins"


def _tracked(module_name: str, roots: set[str]) -> bool:
    return module_name.split(".")[0] in roots


def _used_modules(module: types.ModuleType) -> set[str]:
    """Names of modules a module's globals refer to: imported modules, and the modules
    that define imported classes and functions."""
    used: set[str] = set()
    for value in vars(module).values():
        if isinstance(value, types.ModuleType):
            used.add(value.__name__)
        elif isinstance(value, (type, types.FunctionType)):
            owner = getattr(value, "__module__", None)
            if isinstance(owner, str):
                used.add(owner)
    return used


def source_modules(cls: type) -> list[str]:
    """Sorted names of the modules whose source :func:`code_fingerprint` hashes for ``cls``.

    Start: the modules of ``cls`` and its base classes (not the standard library). Then,
    transitively, modules they use within their own top-level packages or ``predictors``.
    """
    start = [k.__module__ for k in inspect.getmro(cls) if k is not object and not _is_stdlib(k.__module__)]
    roots = {name.split(".")[0] for name in start} | {"predictors"}
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen or not _tracked(name, roots):
            continue
        seen.add(name)
        module = sys.modules.get(name)
        if module is not None:
            todo.extend(_used_modules(module) - seen)
            todo.extend(set(getattr(module, "FINGERPRINT_LAZY", ())) - seen)
    return sorted(seen)


def _source_file(name: str) -> Path | None:
    """The ``.py`` file of module ``name``: from ``sys.modules``, else found without importing it."""
    module = sys.modules.get(name)
    if module is not None:
        return _module_file(module)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec is not None else None
    return Path(origin).resolve() if origin and origin.endswith(".py") and Path(origin).is_file() else None


def _is_builtin(cls: type) -> bool:
    module = sys.modules.get(cls.__module__)
    path = _module_file(module) if module is not None else None
    return path is not None and path.parent == _PREDICTORS_DIR


def _compute(cls: type) -> str:
    digest = hashlib.sha256()
    digest.update(f"{cls.__module__}.{cls.__qualname__}\n".encode())
    if _is_builtin(cls):
        digest.update(f"version {project_version()}\n".encode())
    for name in source_modules(cls):
        path = _source_file(name)
        if path is None:
            if name == cls.__module__:
                log.warning(
                    "predictor %s.%s has no source file; its forecasts are cached for this process only",
                    cls.__module__, cls.__qualname__,
                )
                digest.update(f"{name} untraceable {_PROCESS_TOKEN}\n".encode())
            continue
        digest.update(f"{name}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def code_fingerprint(cls: type) -> str:
    """16 hex digits identifying the source code of predictor class ``cls`` (see the module
    docstring for what is hashed). Computed once per class object."""
    if not isinstance(cls, type):
        raise TypeError(f"code_fingerprint takes a class, got {cls!r}")
    found = _CACHE.get(cls)
    if found is None:
        found = _CACHE[cls] = _compute(cls)
    return found
