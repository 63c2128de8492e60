"""Import the parts of gpiozero a process drives, not the whole library at once.

``import gpiozero`` runs gpiozero's ``__init__``, which imports every device it has
(boards, input devices, SPI devices, the internal devices with ``subprocess`` and
``datetime``, seven-segment fonts) and, for entry points and fonts,
``importlib.metadata`` and ``importlib.resources`` (with them ``email``, ``zipfile``,
``csv``, ``tempfile``, ``bz2``, ``lzma``). That is about 4 MiB that would stay in the
long-lived daemon, which drives LEDs and hands gpiozero its pin factory. Two things
keep it out, neither changing what gpiozero does:

- **The package's ``__init__`` runs on first use.** ``import_gpiozero`` registers the
  ``gpiozero`` package without running its ``__init__`` and imports the submodules
  the caller names (``gpiozero.output_devices``, a pin factory's module). The first
  read of any other name of the package (``gpiozero.Button``, ``from gpiozero import
  LED``) runs ``__init__`` then, once, and answers as ``import gpiozero`` would have.
  Submodule imports (``from gpiozero.output_devices import LED``) never need it.
- **The entry-point and font lookups import their library when first called.**
  gpiozero writes them ``try: import <backport> except ImportError: <stdlib>``
  (``importlib_metadata``, ``importlib_resources``). While gpiozero's modules are
  imported, two small modules stand under those backport names; they import the
  standard library's module when gpiozero first calls them, and hand the call on
  unchanged: a pin factory named in ``GPIOZERO_PIN_FACTORY`` is still found, fonts
  still read. They are gone from ``sys.modules`` as soon as the import is over (a
  real backport already loaded is left alone, and used).

Versions without these imports (gpiozero 1.6 reads entry points with ``pkg_resources``
when asked) simply never consult the stand-ins; the deferred ``__init__`` is the same
for every version (it only imports). Every gpiozero import in the agent's processes
comes after ``device.board.make_pin_factory``, which calls this first
(``tests/test_gpiozero_import.py``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

PACKAGE = "gpiozero"
# The backport names gpiozero tries before the standard library's modules.
_STAND_INS = {"importlib_metadata": "importlib.metadata",
              "importlib_resources": "importlib.resources"}
_lock = threading.RLock()


def _entry_points(**params: Any) -> Any:
    """``importlib.metadata.entry_points``, imported on the first call."""
    from importlib.metadata import entry_points

    return entry_points(**params)


def _stand_in(name: str, stdlib: str) -> types.ModuleType:
    """A module that stands for ``stdlib``: reading any of its names imports it."""
    module = types.ModuleType(name, f"{stdlib}, imported on first use")

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(stdlib), attr)

    vars(module)["__getattr__"] = __getattr__
    if stdlib == "importlib.metadata":
        # ``from importlib_metadata import entry_points`` reads the name at import.
        vars(module)["entry_points"] = _entry_points
    return module


@contextlib.contextmanager
def _deferred_lookups() -> Iterator[None]:
    """The stand-ins under the backport names, for the length of an import."""
    placed = {name: _stand_in(name, stdlib) for name, stdlib in _STAND_INS.items()
              if name not in sys.modules}
    sys.modules.update(placed)
    try:
        yield
    finally:
        for name, module in placed.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _register_package() -> None:
    """Put the ``gpiozero`` package in ``sys.modules`` with its ``__init__`` not yet
    run: it runs on the first read of a name the package does not have yet."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        importlib.import_module(PACKAGE)  # not a package we can defer: as usual
        return
    package = importlib.util.module_from_spec(spec)  # __path__, __spec__...: no code run
    loader = spec.loader

    def __getattr__(name: str) -> Any:
        with _lock:
            if vars(package).get("__getattr__") is __getattr__:
                del package.__getattr__
                try:
                    with _deferred_lookups():
                        loader.exec_module(package)
                except BaseException:
                    vars(package)["__getattr__"] = __getattr__  # the next read tries again
                    raise
        return getattr(package, name)

    vars(package)["__getattr__"] = __getattr__
    sys.modules[PACKAGE] = package


def import_gpiozero(*submodules: str) -> None:
    """Import the gpiozero ``submodules`` named (``gpiozero.output_devices``,
    ``gpiozero.pins.mock``...), the package's ``__init__`` deferred to its first use
    and the entry-point and font lookups to their first call. Call it before any
    other gpiozero import of the process; after one, it imports as ``import`` does."""
    names = ("gpiozero.devices", *submodules)  # the one that reads entry points
    with _lock:
        if PACKAGE in sys.modules:
            for name in names:
                importlib.import_module(name)
            return
        with _deferred_lookups():
            _register_package()
            for name in names:
                importlib.import_module(name)
