"""The Package kind with real dpkg on a private root: install, upgrade, dependencies, prune.

Every ``.deb`` is built here by ``dpkg-deb --build``; dpkg runs with ``--root`` (its
database under it, ``kinds.debian.PackageTools.private``), so nothing is installed
on the machine running the tests. apt is ``false`` here: it would reach the network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from dulwich.object_store import DiskObjectStore
from support.debs import build_deb
from support.kinds import condition, doc, ready, specset, tree_artifacts

from giter_agent.kinds import builtin_kinds
from giter_agent.kinds.debian import PackageTools
from giter_agent.reconcile.engine import reconcile

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None,
                                reason="dpkg is not installed (Debian package dpkg)")


class Board:
    """A private dpkg root and reconcile passes over Package resources."""

    def __init__(self, tmp_path: Path, ctx) -> None:
        self.root = tmp_path / "dpkgroot"
        self.debs = tmp_path / "debs"
        self.debs.mkdir()
        self.ctx = ctx
        ctx.package_tools = PackageTools.private(self.root)
        ctx.packages_allowed = ("app", "lib*")
        (tmp_path / "fleet-objects").mkdir()
        self.store = DiskObjectStore.init(tmp_path / "fleet-objects")
        self.artifacts: dict[str, tuple[bytes, int]] = {}
        self.records: dict = {}

    def deb(self, name: str, version: str, depends: str = "") -> str:
        path = f"artifacts/debs/{name}_{version}_all.deb".replace("~", "-")
        if path in self.artifacts:
            return path
        self.artifacts[path] = (build_deb(self.debs, name, version, depends), 0o100644)
        return path

    def apply(self, *specs: dict) -> dict:
        self.ctx.artifacts = tree_artifacts(self.store, self.artifacts)
        docs = [doc("Package", s.pop("name", s["package"]), s, generation=None) for s in specs]
        result = reconcile(specset(*docs), self.ctx, builtin_kinds(), self.records, "c1")
        self.records = result.records
        return result.records

    def version(self, name: str = "app") -> str | None:
        found = self.ctx.package_tools.installed(name)
        return found.version if found and found.configured else None

    def file(self, name: str = "app") -> str | None:
        path = self.root / "opt" / name / "VERSION"
        return path.read_text() if path.exists() else None

    def status_db(self) -> bytes:
        return (self.root / "var/lib/dpkg/status").read_bytes()


@pytest.fixture
def board(tmp_path, ctx) -> Board:
    return Board(tmp_path, ctx)


def test_install_then_upgrade_from_signed_debs(board):
    v1 = board.deb("app", "1.0-1")
    rec = board.apply({"package": "app", "deb": v1})["Package/app"]
    assert ready(rec) == (True, "Installed")
    assert rec.status["observed"]["version"] == "1.0-1"
    assert board.version() == "1.0-1" and board.file() == "app 1.0-1\n"

    db = board.status_db()
    rec = board.apply({"package": "app", "deb": v1})["Package/app"]
    assert ready(rec) == (True, "Installed") and board.status_db() == db  # left alone

    v2 = board.deb("app", "1.10-1")   # newer by Debian's rules, not by string order
    rec = board.apply({"package": "app", "deb": v2, "version": "1.10-1"})["Package/app"]
    assert ready(rec) == (True, "Installed")
    assert board.version() == "1.10-1" and board.file() == "app 1.10-1\n"


def test_a_downgrade_is_refused_unless_allowed(board):
    old, new = board.deb("app", "1.0~rc1"), board.deb("app", "1.0")
    board.apply({"package": "app", "deb": new})
    rec = board.apply({"package": "app", "deb": old})["Package/app"]
    assert ready(rec) == (False, "DowngradeRefused")
    assert board.version() == "1.0"
    rec = board.apply({"package": "app", "deb": old, "allowDowngrade": True})["Package/app"]
    assert ready(rec) == (True, "Installed") and board.version() == "1.0~rc1"


def test_a_missing_dependency_is_reported_and_nothing_is_unpacked(board):
    board.apply({"package": "app", "deb": board.deb("app", "2.0")})
    v3 = board.deb("app", "3.0", depends="libwidget (>= 1.2) | libgadget")
    rec = board.apply({"package": "app", "deb": v3})["Package/app"]
    assert ready(rec) == (False, "DependencyFailed")
    assert "libwidget (>= 1.2) | libgadget" in condition(rec)["message"]
    deps = condition(rec, "DependenciesMet")
    assert deps["status"] == "False" and deps["reason"] == "DependencyFailed"
    assert rec.status["observed"]["version"] == "2.0"
    # dpkg was never run on it: 2.0 is still installed and configured, files and all.
    assert board.version() == "2.0" and board.file() == "app 2.0\n"

    # Too old a version of the dependency does not satisfy it either.
    old_lib = board.deb("libwidget", "1.1")
    board.records = {}
    records = board.apply({"package": "libwidget", "deb": old_lib},
                          {"package": "app", "deb": v3, "dependsOn": ["libwidget"]})
    assert ready(records["Package/app"]) == (False, "DependencyFailed")

    # With the dependency first (dependsOn), the upgrade goes through.
    lib = board.deb("libwidget", "1.2")
    board.records = {}
    records = board.apply({"package": "libwidget", "deb": lib},
                          {"package": "app", "deb": v3, "dependsOn": ["libwidget"]})
    assert ready(records["Package/libwidget"]) == (True, "Installed")
    assert ready(records["Package/app"]) == (True, "Installed")
    assert board.version() == "3.0"


def test_prune_is_explicit(board):
    board.apply({"package": "app", "deb": board.deb("app", "1.0")},
                {"package": "libkeep", "deb": board.deb("libkeep", "1.0")})
    board.apply({"package": "app", "deb": board.deb("app", "1.0")})  # libkeep left
    assert board.version("libkeep") == "1.0"  # kept: removing software is rarely meant

    board.apply({"package": "app", "deb": board.deb("app", "1.0"), "prune": True})
    board.apply()  # app leaves the spec, and asked to be removed
    assert board.version("app") is None and board.file("app") is None


def test_the_device_allowlist_decides(board):
    rec = board.apply({"package": "openssh-server",
                       "deb": board.deb("openssh-server", "9.9")})["Package/openssh-server"]
    assert ready(rec) == (False, "PackageNotAllowed")
    assert board.version("openssh-server") is None


@pytest.mark.parametrize("spec, reason", [
    ({"deb": "debs/app_1.0_all.deb"}, "InvalidSpec"),        # not under artifacts/
    ({"deb": "artifacts/../app.deb"}, "InvalidSpec"),
    ({"deb": "artifacts/debs/none_1.0_all.deb"}, "SourceNotFound"),
    ({"version": "latest"}, "InvalidSpec"),
])
def test_bad_specs_fail_alone(board, spec, reason):
    board.deb("app", "1.0")
    rec = board.apply({"package": "app", **spec})["Package/app"]
    assert ready(rec) == (False, reason)
    assert board.version() is None


def test_a_deb_that_is_another_package_or_version_is_refused(board):
    other = board.deb("libother", "1.0")
    rec = board.apply({"package": "app", "deb": other})["Package/app"]
    assert ready(rec) == (False, "PackageMismatch")
    v1 = board.deb("app", "1.0")
    rec = board.apply({"package": "app", "deb": v1, "version": "2.0"})["Package/app"]
    assert ready(rec) == (False, "VersionMismatch")
    board.artifacts["artifacts/debs/junk.deb"] = (b"not an ar archive", 0o100644)
    rec = board.apply({"package": "app", "deb": "artifacts/debs/junk.deb"})["Package/app"]
    assert ready(rec) == (False, "InvalidPackage")
    assert board.version() is None


def test_apt_offline_is_retried_and_an_installed_version_needs_no_apt(board):
    rec = board.apply({"package": "app", "version": "1.0"})["Package/app"]
    assert ready(rec) == (False, "AptFailed") and "retryAfterSeconds" in rec.status
    board.records = {}
    board.apply({"package": "app", "deb": board.deb("app", "1.0")})
    # The same version, asked of apt: installed already, so apt is not run.
    board.records = {}
    rec = board.apply({"package": "app", "version": "1.0"})["Package/app"]
    assert ready(rec) == (True, "Installed")


def test_plan_shows_install_and_upgrade(board):
    kind = builtin_kinds()["Package"]
    v1 = board.deb("app", "1.0")
    board.ctx.artifacts = tree_artifacts(board.store, board.artifacts)
    spec = kind.validate({"package": "app", "deb": v1, "version": "1.0"})
    assert kind.plan("Package/app", spec, board.ctx) == f"would install app from {v1} (1.0)"
    board.apply({"package": "app", "deb": v1})
    board.ctx.artifacts = tree_artifacts(board.store, board.artifacts)
    assert kind.plan("Package/app", spec, board.ctx) is None
    assert kind.plan_prune("Package/app", spec, board.ctx) == "would remove the package app"


def flat_repository(folder: Path, debs: list[bytes]) -> str:
    """A flat apt repository of ``debs`` in ``folder`` (the ``Packages`` index written
    here, as dpkg-scanpackages would); its sources.list line."""
    import hashlib

    folder.mkdir()
    stanzas = []
    for i, data in enumerate(debs):
        name = f"p{i}.deb"
        (folder / name).write_bytes(data)
        control = subprocess.run(["dpkg-deb", "--field", str(folder / name)], check=True,
                                 capture_output=True).stdout.decode().strip()
        stanzas.append(f"{control}\nFilename: ./{name}\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    (folder / "Packages").write_text("\n".join(stanzas))
    return f"deb [trusted=yes] file:{folder} ./\n"


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt is not installed")
def test_by_name_and_version_from_apt_sources(board, tmp_path):
    sources = flat_repository(tmp_path / "repo", [
        build_deb(board.debs, "app", "1.0"), build_deb(board.debs, "app", "2.0")])
    board.ctx.package_tools = PackageTools.private(board.root, sources)
    rec = board.apply({"package": "app", "version": "1.0"})["Package/app"]
    assert ready(rec) == (True, "Installed") and board.version() == "1.0"
    assert rec.status["observed"]["source"] == "apt"
    rec = board.apply({"package": "app", "version": "2.0"})["Package/app"]
    assert ready(rec) == (True, "Installed") and board.file() == "app 2.0\n"
    rec = board.apply({"package": "app", "version": "3.0"})["Package/app"]
    assert ready(rec) == (False, "AptFailed")
    assert board.version() == "2.0" and rec.status["observed"]["version"] == "2.0"
