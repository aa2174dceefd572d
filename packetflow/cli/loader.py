"""Find the topology a user names on the command line: ``pkg.module``, ``module:attr`` or a file."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from packetflow.engine.topology import Topology


class LoadError(Exception):
    """The named topology cannot be loaded; the message says why in one line (the error
    that caused it, with its traceback, is the ``__cause__``: ``--debug`` shows it)."""


def _failed(spec: str, exc: BaseException) -> LoadError:
    """An error raised while importing a topology module, as one line naming where."""
    where = ""
    tb = exc.__traceback__
    while tb is not None:  # the innermost frame of the user's own files
        filename = tb.tb_frame.f_code.co_filename
        if "/packetflow/" not in filename and "importlib" not in filename:
            where = f" ({filename}:{tb.tb_lineno})"
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename}:{exc.lineno})"
        message = exc.msg
    else:
        message = str(exc).splitlines()[0] if str(exc) else ""
    return LoadError(f"{spec}: {type(exc).__name__}: {message}{where}")


def load_module(spec: str) -> ModuleType:
    """Import ``spec`` (dotted module or ``.py`` path), with the working directory on sys.path."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise LoadError(f"no such file: {spec}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise LoadError(f"cannot import {spec}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise _failed(spec, exc) from exc
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise LoadError(
                f"no module named {spec!r} (run from your project directory?)"
            ) from None
        raise _failed(spec, exc) from exc
    except Exception as exc:  # a syntax error, a bad declaration, anything the module raised
        raise _failed(spec, exc) from exc


def load_topology(spec: str) -> tuple[Topology, ModuleType]:
    """The topology in ``module`` (its ``topology`` attribute, or the only Topology in it)."""
    module_name, _, attr = spec.partition(":")
    module = load_module(module_name)
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, Topology):
            raise LoadError(f"{module_name} has no Topology named {attr!r}")
        return found, module
    if isinstance(getattr(module, "topology", None), Topology):
        return module.topology, module
    candidates = [v for v in vars(module).values() if isinstance(v, Topology)]
    if len(candidates) == 1:
        return candidates[0], module
    if not candidates:
        raise LoadError(f"{module_name} defines no Topology")
    raise LoadError(f"{module_name} defines several topologies: name one as {module_name}:NAME")
