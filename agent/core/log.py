"""Loggers that load ``logging`` only when something is logged.

A steady one-shot ``giter-agent sync`` logs nothing at the default level (WARNING), yet
``import logging`` and what it pulls in (traceback, textwrap, string, threading,
weakref) cost about 3.5 ms of its start, more on a Pi Zero. ``get_logger(name)`` gives a
proxy with the methods the agent uses: while ``logging`` is not imported, it decides
from the level the command line set (``configure``; WARNING until then, as the root
logger's default) whether a call would be emitted, and returns at once if not. No other
level can have been set then: every other way to set one needs ``logging`` itself.

Once ``logging`` is in ``sys.modules`` - something was emitted, a test runs under
pytest's caplog, the daemon set up its handlers, a library (dulwich) imported it - the
proxy defers every call to ``logging.getLogger(name)``: handlers, levels and records are
exactly those of a plain logger (the record names the proxy's caller, as it would).

``configure`` does what ``logging.basicConfig(level=..., format=...)`` did at start, at
the moment ``logging`` is first imported, by whoever imports it: a one-shot finder on
``sys.meta_path`` runs it right after the module is loaded, so the root logger has the
same handler, format and level before anything can log through it or add handlers.
``on_load`` does the same for any set-up (the daemon's pass worker installs its logfmt
handler that way: ``daemon.logs``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import partialmethod
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50

# The root logger's level while ``logging`` is not imported (its own default until
# ``configure``), and the set-up waiting for it to be (called with the module).
_threshold = WARNING
_pending: Callable[[ModuleType], None] | None = None


class Logger:
    """A ``logging.Logger`` stand-in for one name (see the module's docstring)."""

    __slots__ = ("_real", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._real: logging.Logger | None = None

    def real(self) -> logging.Logger:
        """``logging.getLogger(name)``, importing ``logging`` (and so configuring it)."""
        if self._real is None:
            import logging

            self._real = logging.getLogger(self.name)
        return self._real

    def isEnabledFor(self, level: int) -> bool:
        if "logging" in sys.modules:
            return self.real().isEnabledFor(level)
        return level >= _threshold

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= _threshold or "logging" in sys.modules:
            # One stack level more, so that the record names the caller, not this module
            # (the named methods below are partials: C calls, no frame of their own).
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
            self.real().log(level, msg, *args, **kwargs)

    debug = partialmethod(log, DEBUG)
    info = partialmethod(log, INFO)
    warning = partialmethod(log, WARNING)
    error = partialmethod(log, ERROR)
    exception = partialmethod(log, ERROR, exc_info=True)  # as logging's: error + traceback
    critical = partialmethod(log, CRITICAL)


def get_logger(name: str) -> Logger:
    """The logger for ``name``: ``logging.getLogger(name)`` once something needs it."""
    return Logger(name)


def configure(level: int, fmt: str) -> None:
    """``logging.basicConfig(level=level, format=fmt)``, now if ``logging`` is loaded,
    else right after it is (and ``level`` decides what is emitted until then).

    Like ``basicConfig``, only the first call does anything."""
    if "logging" not in sys.modules and _pending is not None:
        return
    on_load(level, lambda logging: logging.basicConfig(level=level, format=fmt))


def on_load(level: int, apply: Callable[[ModuleType], None]) -> None:
    """``apply(logging)`` now if ``logging`` is loaded, else right after it is, in place
    of any set-up still waiting; until then ``level`` decides what is emitted, so
    ``apply`` must leave the root logger at that level."""
    global _threshold, _pending
    logging = sys.modules.get("logging")
    if logging is not None:
        apply(logging)
        return
    if _pending is None:
        sys.meta_path.insert(0, _ConfigureOnImport())
    _pending = apply
    _threshold = level


def flush() -> None:
    """Flush the root logger's handlers, if ``logging`` was ever loaded (before an
    ``exec``: nothing can be waiting in a handler that was never made)."""
    logging = sys.modules.get("logging")
    if logging is None:
        return
    import contextlib

    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # a broken handler must not stop the exec
            handler.flush()


def _apply(logging: ModuleType) -> None:
    global _pending
    apply, _pending = _pending, None
    if apply is not None:
        apply(logging)


class _ConfigureOnImport:
    """A meta path finder that answers for ``logging`` alone, once: it finds the module
    as the finders after it do and loads it through ``_Then``, which configures it."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> Any:
        if name != "logging":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Then(spec.loader)
                return spec
        return None


class _Then:
    """A loader that loads as ``loader`` does, then applies the pending configuration."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        module: ModuleType | None = self.loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its own loader (linecache asks it for the source).
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _apply(module)
