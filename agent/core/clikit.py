"""What ``giter-agent`` and ``giter-bundle`` share on the command line.

Both build their subcommands from a package with one module per command (``HELP``,
``add_arguments``, ``run``) and turn every typed error into one line on stderr and an
exit code; this is that one implementation.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from giter_agent.core import log
from giter_agent.core.errors import GiterError, UsageError


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter, without ``shutil``.

    argparse makes a formatter for every ``add_argument`` (to check its metavar), and
    its own asks ``shutil.get_terminal_size`` for the width: ``shutil`` loads ``bz2``,
    ``lzma`` and ``zlib``, about 0.6 MiB that would stay in ``giter-agent run``, the
    long-lived daemon. The width is found the same way (``COLUMNS``, else the
    terminal's, else 80) with ``os`` alone.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width=terminal_columns() - 2 if width is None else width)


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, without importing ``shutil``."""
    import contextlib
    import os

    columns = 0
    with contextlib.suppress(ValueError):
        columns = int(os.environ.get("COLUMNS", "0"))
    if columns <= 0 and sys.__stdout__ is not None:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def add_commands(p: argparse.ArgumentParser, package: str, names: Iterable[str],
                 module_name: Callable[[str], str]) -> None:
    """A subparser per command, from ``<package>.<module_name(command)>`` (help text
    formatted by ``Formatter``)."""
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in names:
        module = importlib.import_module(f"{package}.{module_name(name)}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                             formatter_class=Formatter)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)


def run(prog: str, args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run the chosen command: one line per error, 2 for a ``UsageError``, 1 for the rest.

    A permission problem is one of those lines too: the file, its owner and the command
    to run instead (``giter_agent.core.access``); ``argv`` is the command line it repeats."""
    log.configure(log.INFO if args.verbose else log.WARNING,
                  f"{prog} %(levelname)s %(name)s: %(message)s")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except GiterError as exc:
        print(f"{prog}: {exc.reason}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except PermissionError as exc:
        from giter_agent.core.access import explain

        err = explain(exc, prog, args.argv)
        print(f"{prog}: {err.reason}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # A file the command was pointed at is missing, unreadable or on a full disk:
        # one line that names it, never a traceback (the commands type what they expect).
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{prog}: {type(exc).__name__}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


OUTPUT_FORMATS = ("text", "json", "yaml")


def add_output_option(p: argparse.ArgumentParser) -> None:
    """``-o json|yaml`` as kubectl has it, and the older ``--json`` (same as ``-o json``)."""
    p.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text",
                   dest="output_format", metavar="FORMAT",
                   help="text (default), json or yaml")
    p.add_argument("--json", action="store_const", const="json", dest="output_format",
                   help="same as -o json")


def emit(doc: Any, fmt: str) -> None:
    """Print ``doc`` as JSON or YAML (keys sorted, so output diffs cleanly)."""
    if fmt == "yaml":
        import yaml

        print(yaml.safe_dump(doc, sort_keys=True, default_flow_style=False,
                             allow_unicode=True), end="")
    else:
        import json

        print(json.dumps(doc, indent=2, sort_keys=True))
