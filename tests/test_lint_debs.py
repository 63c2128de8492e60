"""``giter-bundle lint`` opens a ``Package``'s ``.deb`` as the device will, before it ships.

A ``.deb`` that holds another package, another version than the spec's, or is no Debian
package at all is refused by the device only once the fleet has it; lint says so first,
with the device's own reason and message (``giter_agent.kinds.package.deb_fields``).
The packages are real, built by ``dpkg-deb --build``.
"""

from __future__ import annotations

import shutil

import pytest
from support.debs import build_deb
from support.fleet import API, Fleet

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None,
                                reason="dpkg is not installed (Debian package dpkg)")


def package(name: str, deb: str, version: str | None = None) -> str:
    spec = f"package: {name}, deb: {deb}" + (f", version: {version}" if version else "")
    return f"{API}kind: Package\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n"


def test_the_package_and_version_inside_a_deb_are_checked(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    debs = fleet.root / "artifacts" / "debs"
    debs.mkdir(parents=True)
    built = tmp_path / "built"
    built.mkdir()
    (debs / "kiosk_2.4.1-1_all.deb").write_bytes(build_deb(built, "kiosk", "2.4.1-1"))
    (debs / "widget_1.0_all.deb").write_bytes(build_deb(built, "widget", "1.0"))
    fleet.write("groups/lobby/kiosk.yaml",
                package("kiosk", "artifacts/debs/kiosk_2.4.1-1_all.deb", "2.4.1-1"))
    fleet.write("groups/lobby/old.yaml",
                package("kiosk", "artifacts/debs/kiosk_2.4.1-1_all.deb", "2.4.0-1")
                .replace("name: kiosk}", "name: old}"))
    fleet.write("groups/lobby/other.yaml",
                package("gadget", "artifacts/debs/widget_1.0_all.deb"))
    code, out = fleet.cli("lint")
    assert code == 1, out
    found = sorted(line for line in out.splitlines() if line.startswith("groups/lobby/"))
    assert found == [
        "groups/lobby/old.yaml: VersionMismatch: artifacts/debs/kiosk_2.4.1-1_all.deb holds "
        "kiosk 2.4.1-1, the spec says 2.4.0-1",
        "groups/lobby/other.yaml: PackageMismatch: artifacts/debs/widget_1.0_all.deb holds "
        "package 'widget', not gadget",
    ]
