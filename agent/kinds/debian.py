"""Debian's own tools, run for the ``Package`` kind: dpkg, dpkg-query, dpkg-deb, apt-get.

Called by ``kinds.package`` only. ``PackageTools`` holds the argv of each tool and
the database they work on, passed in through ``Context.package_tools``: the host's
(``PackageTools.host()``, ``/``) on a board, a private ``--root`` and ``--admindir``
in tests, so a test installs real packages with real dpkg without touching the
system. Versions are compared by ``dpkg --compare-versions`` (Debian's rules, epochs
and tildes included), never by Python.

dpkg unpacks a package before it finds that a dependency is missing and leaves it
half-configured, the old version gone; so ``unmet`` checks a ``.deb``'s ``Depends``
and ``Pre-Depends`` against the installed packages (and what they provide) first,
and nothing is unpacked when one is missing.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from giter_agent.core.durable import shown
from giter_agent.core.named_tuple import NamedTuple

_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
        "APT_LISTCHANGES_FRONTEND": "none", "HOME": "/"}
TAIL = 1024
# dpkg's status letters of an installed, configured package (triggers pending or awaited
# included: dpkg counts those as installed).
_CONFIGURED = ("i", "t", "W")
_ALTERNATIVE = re.compile(
    r"\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>|<|>)\s*([^)\s]+)\s*\))?"
    r"\s*(?:\[[^]]*\])?\s*")


class ToolFailed(Exception):
    """A tool exited non-zero (or could not run): its bounded, escaped output."""

    def __init__(self, what: str, output: str) -> None:
        super().__init__(f"{what}: {output}")
        self.what = what
        self.output = output


def _tail(data: bytes) -> str:
    text = shown(data.decode("utf-8", "replace").strip().replace("\n", " | "))
    return text if len(text) <= TAIL else "..." + text[-(TAIL - 3):]


class Installed(NamedTuple):
    """A package's state in the dpkg database."""

    version: str
    configured: bool  # "install ok installed"; False: unpacked, half-configured...


class PackageTools(NamedTuple):
    """The argv of each tool (options that pick the database included), a timeout and
    the environment they run in (None: ``_ENV``)."""

    dpkg: tuple[str, ...] = ("dpkg",)
    dpkg_query: tuple[str, ...] = ("dpkg-query",)
    dpkg_deb: tuple[str, ...] = ("dpkg-deb",)
    apt_get: tuple[str, ...] = ("apt-get",)
    timeout: float = 900.0
    env: Mapping[str, str] | None = None

    @classmethod
    def host(cls) -> PackageTools:
        """The board's own dpkg database and apt sources."""
        return cls()

    @classmethod
    def private(cls, root: Path, sources: str | None = None) -> PackageTools:
        """dpkg on a private tree (``--root``; its database in ``root/var/lib/dpkg``),
        made if missing. apt too when ``sources`` (a sources.list) is given, with its
        lists, cache and configuration under ``root/apt`` and dpkg on the same root;
        without it apt is ``false`` (it would reach the network)."""
        admin = root / "var/lib/dpkg"
        for sub in ("updates", "info"):
            (admin / sub).mkdir(parents=True, exist_ok=True)
        for name in ("status", "available"):
            (admin / name).touch()
        dpkg_options = (f"--root={root}", "--force-not-root", "--force-script-chrootless",
                        "--log=/dev/null")
        apt_get: tuple[str, ...] = ("false",)
        env = dict(_ENV)
        if sources is not None:
            apt = root / "apt"
            for sub in ("etc/apt/apt.conf.d", "etc/apt/preferences.d",
                        "etc/apt/sources.list.d", "var/lib/apt/lists/partial",
                        "var/cache/apt/archives/partial", "var/log/apt"):
                (apt / sub).mkdir(parents=True, exist_ok=True)
            (apt / "etc/apt/sources.list").write_text(sources)
            (apt / "apt.conf").write_text("")
            env["APT_CONFIG"] = str(apt / "apt.conf")  # not the host's configuration
            apt_get = ("apt-get", "-o", f"Dir={apt}", "-o", f"Dir::State::status={admin}/status",
                       *(f"-oDPkg::Options::={o}" for o in dpkg_options),
                       "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root")
        return cls(dpkg=("dpkg", *dpkg_options),
                   dpkg_query=("dpkg-query", f"--admindir={admin}"), apt_get=apt_get, env=env)

    # -- running ------------------------------------------------------------------------

    def _run(self, argv: tuple[str, ...], what: str, timeout: float | None = None) -> bytes:
        try:
            env = dict(_ENV if self.env is None else self.env)
            proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                                  env=env, cwd="/", timeout=timeout or self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ToolFailed(what, f"did not finish in {timeout or self.timeout:g} s") \
                from None
        except OSError as exc:
            raise ToolFailed(what, f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            raise ToolFailed(what, f"exit {proc.returncode}: "
                                   f"{_tail(proc.stderr or proc.stdout)}")
        return proc.stdout

    # -- questions ----------------------------------------------------------------------

    def installed(self, name: str) -> Installed | None:
        """``name``'s version in the database, or None when it is not installed."""
        try:
            out = self._run((*self.dpkg_query, "-W", "-f=${db:Status-Abbrev}\t${Version}",
                             "--", name), "dpkg-query", 60)
        except ToolFailed:
            return None  # "no packages found matching": dpkg-query exits 1
        abbrev, _, version = out.decode("utf-8", "replace").partition("\t")
        if not version or abbrev[1:2] in ("n", "c"):  # not installed / config-files only
            return None
        return Installed(version.strip(), abbrev[1:2] in _CONFIGURED)

    def deb_fields(self, deb: Path) -> dict[str, str]:
        """Package, Version, Architecture, Depends and Pre-Depends of a ``.deb``."""
        names = ("Package", "Version", "Architecture", "Depends", "Pre-Depends")
        out = self._run((*self.dpkg_deb, "--field", "--", str(deb), *names), "dpkg-deb", 60)
        fields: dict[str, str] = {}
        current = None
        for line in out.decode("utf-8", "replace").splitlines():
            if line[:1] in (" ", "\t") and current:
                fields[current] += " " + line.strip()
                continue
            key, sep, val = line.partition(":")
            if sep:
                current = key.strip()
                fields[current] = val.strip()
        return fields

    def compare(self, a: str, op: str, b: str) -> bool:
        """``dpkg --compare-versions a op b``."""
        try:
            self._run((*self.dpkg, "--compare-versions", a, op, b), "dpkg --compare-versions",
                      30)
        except ToolFailed:
            return False
        return True

    def unmet(self, depends: str) -> list[str]:
        """The clauses of a ``Depends`` field no installed package satisfies."""
        if not depends.strip():
            return []
        out = self._run((*self.dpkg_query, "-W",
                         "-f=${Package}\t${db:Status-Abbrev}\t${Version}\t${Provides}\n"),
                        "dpkg-query", 120)
        have: dict[str, list[str | None]] = {}  # name -> versions (None: unversioned)
        for line in out.decode("utf-8", "replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 4 or parts[1][1:2] not in _CONFIGURED:
                continue
            have.setdefault(parts[0], []).append(parts[2])
            for provided in filter(None, (p.strip() for p in parts[3].split(","))):
                m = _ALTERNATIVE.fullmatch(provided)
                if m:
                    have.setdefault(m.group(1), []).append(m.group(3) if m.group(2) == "="
                                                           else None)
        missing = []
        for clause in filter(None, (c.strip() for c in depends.split(","))):
            if not any(self._satisfied(alt, have) for alt in clause.split("|")):
                missing.append(clause)
        return missing

    def _satisfied(self, alternative: str, have: dict[str, list[str | None]]) -> bool:
        m = _ALTERNATIVE.fullmatch(alternative)
        if m is None:
            return False
        name, op, version = m.group(1), m.group(2), m.group(3)
        op = {"<": "<=", ">": ">="}.get(op or "", op)  # the old forms
        for found in have.get(name, []):
            if op is None:
                return True
            if found is not None and self.compare(found, op, version):
                return True
        return False

    # -- changes ------------------------------------------------------------------------

    def install_deb(self, deb: Path) -> str:
        out = self._run((*self.dpkg, "--install", "--", str(deb)), "dpkg --install")
        return _tail(out)

    def apt_install(self, name: str, version: str | None) -> str:
        """``apt-get update`` then ``apt-get install name[=version]`` from the board's
        configured sources."""
        self._run((*self.apt_get, "-q", "update"), "apt-get update")
        want = f"{name}={version}" if version else name
        out = self._run((*self.apt_get, "-q", "-y", "--no-install-recommends",
                         "-o", "Dpkg::Options::=--force-confdef",
                         "-o", "Dpkg::Options::=--force-confold", "install", "--", want),
                        "apt-get install")
        return _tail(out)

    def remove(self, name: str) -> None:
        self._run((*self.dpkg, "--remove", "--", name), "dpkg --remove")

