"""Real Debian packages for the tests, built by ``dpkg-deb --build`` from a folder.

Used by the Package kind's tests (installed on a private dpkg root) and by lint's
(opened by the publisher's ``dpkg-deb``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["build_deb"]


def build_deb(folder: Path, name: str, version: str, depends: str = "") -> bytes:
    """A real ``.deb``: ``/opt/<name>/VERSION`` holding ``<name> <version>``."""
    tree = folder / f"{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "opt" / name).mkdir(parents=True)
    (tree / "opt" / name / "VERSION").write_text(f"{name} {version}\n")
    control = (f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
               "Maintainer: Fleet <ops@example.invalid>\nDescription: a test package\n")
    if depends:
        control += f"Depends: {depends}\n"
    (tree / "DEBIAN/control").write_text(control)
    out = folder / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree),
                    str(out)], check=True, capture_output=True)
    return out.read_bytes()
