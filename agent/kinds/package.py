"""``Package``: a Debian package installed from a signed ``.deb`` artifact, or from apt.

Called by the reconciler through the ``Kind`` interface; runs Debian's tools through
``kinds.debian.PackageTools`` (``Context.package_tools``; the host's by default). With
``deb``, the package file comes from the signed spec commit's tree (a path under
``artifacts/``), is streamed to a private temp file through ``Context.artifacts``
(``history.artifacts.TreeArtifacts``: under ``[limits] max_artifact_mib``) and
installed with ``dpkg --install``, once its name and version (``dpkg-deb``) match the
spec and every dependency is already installed (``DependencyFailed`` otherwise,
before anything is unpacked). Without ``deb``, ``apt-get install name[=version]``
from the board's configured sources (online only; ``AptFailed`` is retried).

A version already installed is left alone; an older one is upgraded; a newer one is a
downgrade, refused unless ``allowDowngrade`` says so (versions compared by ``dpkg
--compare-versions``). The device decides which packages a spec may touch: ``[packages]
allowed`` (names or globs; none by default). Removing a package is rarely what a fleet
means: a Package that leaves the spec is kept unless it says ``prune: true``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from pathlib import Path
from typing import Any

from giter_agent.core.errors import ArtifactError
from giter_agent.core.log import get_logger
from giter_agent.kinds.base import (
    Condition,
    Context,
    Done,
    Failed,
    Kind,
    Outcome,
    Retry,
    would_fail,
)
from giter_agent.kinds.debian import Installed, PackageTools, ToolFailed
from giter_agent.kinds.fields import Field, check_declared
from giter_agent.kinds.release import SOURCE_PATTERN, tree_refusal

log = get_logger("giter.kinds.package")

NAME_PATTERN = r"[a-z0-9][a-z0-9+.-]{1,99}"
VERSION_PATTERN = r"([0-9]+:)?[0-9][A-Za-z0-9.+~-]{0,99}"
_NOT_IN_TREE = "is not in the spec commit"


def _tools(ctx: Context) -> PackageTools:
    return ctx.package_tools if ctx.package_tools is not None else PackageTools.host()


def _refusal(name: str, ctx: Context) -> Failed | None:
    if not any(fnmatch.fnmatchcase(name, pattern) for pattern in ctx.packages_allowed):
        allowed = ", ".join(ctx.packages_allowed) or "none"
        return Failed("PackageNotAllowed", f"{name} is not in this device's [packages] "
                      f"allowed list (allowed: {allowed})")
    return None


def _deps_met(ok: bool, message: str) -> Condition:
    return Condition("DependenciesMet", ok, "DependenciesInstalled" if ok
                     else "DependencyFailed", message)


def deb_fields(spec: dict[str, Any], tools: PackageTools, deb: Path) -> dict[str, str] | Failed:
    """The control fields of ``deb`` (the file at ``spec['deb']``, on disk), or the
    ``Failed`` the device reports: not a ``.deb`` (``InvalidPackage``), another package
    (``PackageMismatch``), another version than ``spec['version']`` (``VersionMismatch``).
    ``giter-bundle lint`` runs it too (``giter_bundle.lint_debs``)."""
    name = spec["package"]
    try:
        fields = tools.deb_fields(deb)
    except ToolFailed as exc:
        return Failed("InvalidPackage", f"{spec['deb']} is not a Debian package: "
                      f"{exc.output}")
    want = fields.get("Version", "")
    if fields.get("Package") != name:
        return Failed("PackageMismatch", f"{spec['deb']} holds package "
                      f"{fields.get('Package')!r}, not {name}")
    if spec["version"] is not None and spec["version"] != want:
        return Failed("VersionMismatch", f"{spec['deb']} holds {name} {want}, the spec "
                      f"says {spec['version']}")
    return fields


class PackageKind(Kind):
    kind = "Package"

    DESCRIPTION = ("A Debian package installed from a signed .deb under artifacts/, or by "
                   "name and version from the board's apt sources.")
    FIELDS = (
        Field("package", "string", "the Debian package name", required=True,
              pattern=NAME_PATTERN, message="must be a Debian package name"),
        Field("deb", "string", "a .deb file of the fleet repository under artifacts/ "
              "(without it: apt)", pattern=SOURCE_PATTERN + r"\.deb",
              message="must be a .deb file under artifacts/, like artifacts/debs/app.deb"),
        Field("version", "string", "the version wanted (with deb: must be the file's)",
              pattern=VERSION_PATTERN, message="must be a Debian version like 1.2-1"),
        Field("allowDowngrade", "boolean", "install even when a newer version is installed",
              default=False),
        Field("prune", "boolean", "remove the package when the resource leaves the spec",
              default=False),
    )
    PRUNE_DEFAULT = False

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        return {"package": spec["package"], "deb": spec.get("deb"),
                "version": spec.get("version"),
                "allowDowngrade": spec.get("allowDowngrade", False),
                "prune": spec.get("prune", False)}

    # -- the Kind interface --------------------------------------------------------------

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        name = spec["package"]
        refused = _refusal(name, ctx)
        if refused is not None:
            return refused
        tools = _tools(ctx)
        before = tools.installed(name)
        if spec["deb"] is None:
            return self._from_apt(spec, ctx, tools, before)
        found = self._deb(spec, ctx)
        if found is not None:
            return found
        ctx.allow_busy(tools.timeout)
        fd, tmp = tempfile.mkstemp(prefix=".giter-package-", suffix=".deb")
        try:
            with os.fdopen(fd, "wb") as fh:
                ctx.artifacts.copy(spec["deb"], fh)
            return self._from_deb(spec, tools, before, Path(tmp))
        except ArtifactError as exc:
            return tree_refusal(exc, spec["deb"], _NOT_IN_TREE)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @staticmethod
    def _deb(spec: dict[str, Any], ctx: Context) -> Outcome | None:
        """None when the ``.deb`` is a file of the spec tree within the caps."""
        if ctx.artifacts is None:
            return Retry("SpecTreeUnavailable", "the spec tree is not available to this "
                         "pass", 60)
        try:
            ctx.artifacts.stat(spec["deb"])
        except ArtifactError as exc:
            return tree_refusal(exc, spec["deb"], _NOT_IN_TREE)
        return None

    def _from_deb(self, spec: dict[str, Any], tools: PackageTools, before: Installed | None,
                  deb: Path) -> Outcome:
        name = spec["package"]
        fields = deb_fields(spec, tools, deb)
        if isinstance(fields, Failed):
            return fields
        want = fields.get("Version", "")
        observed = {"package": name, "deb": spec["deb"], "wanted": want}
        if before is not None and before.configured and before.version == want:
            return Done("Installed", f"{name} {want} is installed",
                        {**observed, "version": want})
        refused = self._downgrade(spec, tools, before, want, observed)
        if refused is not None:
            return refused
        depends = ", ".join(filter(None, (fields.get("Pre-Depends"), fields.get("Depends"))))
        missing = tools.unmet(depends)
        if missing:
            message = (f"{name} {want} needs {'; '.join(missing)}, not installed: nothing was "
                       "unpacked" + (f"; {before.version} stays" if before else ""))
            return Retry("DependencyFailed", message, 300,
                         {**observed, "version": before.version if before else None,
                          "missing": missing},
                         conditions=(_deps_met(False, message),))
        try:
            tools.install_deb(deb)
        except ToolFailed as exc:
            return self._install_failed(name, tools, exc, observed)
        return self._installed(name, tools, before, want, observed)

    def _from_apt(self, spec: dict[str, Any], ctx: Context, tools: PackageTools,
                  before: Installed | None) -> Outcome:
        name, want = spec["package"], spec["version"]
        observed = {"package": name, "source": "apt", "wanted": want}
        if before is not None and before.configured and want in (None, before.version):
            return Done("Installed", f"{name} {before.version} is installed",
                        {**observed, "version": before.version})
        if want is not None:
            refused = self._downgrade(spec, tools, before, want, observed)
            if refused is not None:
                return refused
        ctx.allow_busy(2 * tools.timeout)
        try:
            tools.apt_install(name, want)
        except ToolFailed as exc:
            # Offline, a source without that version, a dependency apt cannot solve: the
            # sources may change; try again later.
            return Retry("AptFailed", f"{exc.what}: {exc.output}", 600,
                         {**observed, "version": before.version if before else None})
        return self._installed(name, tools, before, want, observed)

    @staticmethod
    def _downgrade(spec: dict[str, Any], tools: PackageTools, before: Installed | None,
                   want: str, observed: dict[str, Any]) -> Failed | None:
        if before is None or spec["allowDowngrade"] or not tools.compare(before.version, ">>",
                                                                         want):
            return None
        return Failed("DowngradeRefused", f"{spec['package']} {before.version} is installed, "
                      f"newer than {want}; set allowDowngrade: true to go back",
                      {**observed, "version": before.version})

    @staticmethod
    def _install_failed(name: str, tools: PackageTools, exc: ToolFailed,
                        observed: dict[str, Any]) -> Outcome:
        now = tools.installed(name)
        observed = {**observed, "version": now.version if now else None}
        if "dependency problems" in exc.output:
            return Retry("DependencyFailed", f"{exc.what}: {exc.output}", 300, observed,
                         conditions=(_deps_met(False, exc.output),))
        return Retry("InstallFailed", f"{exc.what}: {exc.output}", 300, observed)

    @staticmethod
    def _installed(name: str, tools: PackageTools, before: Installed | None,
                   want: str | None, observed: dict[str, Any]) -> Outcome:
        now = tools.installed(name)
        if now is None or not now.configured or (want is not None and now.version != want):
            found = f"{now.version} ({'configured' if now.configured else 'not configured'})" \
                if now else "not installed"
            return Retry("InstallFailed", f"{name} is {found} after installing {want}", 300,
                         {**observed, "version": now.version if now else None})
        was = f"{before.version} -> " if before else ""
        log.info("installed %s %s%s", name, was, now.version)
        # A package found missing or changed although the spec did not change is drift.
        return Done("Installed", f"{name} {now.version} is installed",
                    {**observed, "version": now.version},
                    changes=(f"{name} was {before.version if before else 'not installed'}, "
                             f"installed {now.version}",))

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        name = spec["package"]
        refused = _refusal(name, ctx)
        if refused is not None:
            return would_fail(refused)
        before = _tools(ctx).installed(name)
        if spec["deb"] is not None:
            found = self._deb(spec, ctx)
            if found is not None:
                return would_fail(found)
            what = f"{spec['deb']}" + (f" ({spec['version']})" if spec["version"] else "")
            if before is not None and before.configured and spec["version"] == before.version:
                return None
        else:
            if before is not None and before.configured and spec["version"] in (
                    None, before.version):
                return None
            what = f"apt {name}" + (f"={spec['version']}" if spec["version"] else "")
        if before is None:
            return f"would install {name} from {what}"
        return f"would replace {name} {before.version} with {what} (if it differs)"

    def plan_prune(self, key: str, spec: dict[str, Any], ctx: Context) -> str:
        return f"would remove the package {spec['package']}"

    def prune(self, key: str, spec: dict[str, Any], ctx: Context) -> None:
        if not spec["prune"] or _refusal(spec["package"], ctx) is not None:
            return  # kept unless asked (prune: true), and never one the device forbids
        tools = _tools(ctx)
        if tools.installed(spec["package"]) is None:
            return
        try:
            tools.remove(spec["package"])
        except ToolFailed as exc:
            raise OSError(str(exc)) from None
