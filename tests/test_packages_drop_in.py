"""The drop-in a board that uses the ``Package`` kind installs is the one docs/kinds.md
shows, and it lifts what dpkg needs from the shipped unit's sandbox.

What it does under the real unit is proven on an arm64 VM (scripts/qemu-test boot-1:
the daemon installs a signed ``.deb`` with it, then runs sandboxed again without it).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _settings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_docs_show_the_shipped_drop_in():
    shipped = _settings((REPO / "systemd/giter-packages.conf").read_text())
    docs = (REPO / "docs/kinds.md").read_text()
    package = docs[docs.index("\n## Package\n"):docs.index("\n## AgentUpdate\n")]
    blocks = re.findall(r"```ini\n(.*?)```", package, flags=re.S)
    assert len(blocks) == 1 and _settings(blocks[0]) == shipped


def test_it_lifts_what_dpkg_needs_from_the_unit():
    unit = _settings((REPO / "systemd/giter-agent.service").read_text())
    drop_in = _settings((REPO / "systemd/giter-packages.conf").read_text())
    # The unit's settings dpkg cannot run under, and what the drop-in sets instead.
    assert {"User=giter", "ProtectSystem=strict", "CapabilityBoundingSet=",
            "SystemCallFilter=~@privileged @resources", "RestrictSUIDSGID=yes",
            "UMask=0077"} <= set(unit)
    assert {"User=root", "ReadWritePaths=/usr /etc /opt /var", "CapabilityBoundingSet=~",
            "SystemCallFilter=", "RestrictSUIDSGID=no", "UMask=0022"} <= set(drop_in)
    # strict stays: under full, ReadWritePaths=/usr would leave /usr read-only (the VM).
    assert not [line for line in drop_in if line.startswith("ProtectSystem=")]
    # Shipped with the Debian package, beside the agent.toml template.
    rules = (REPO / "debian/rules").read_text()
    assert "systemd/giter-packages.conf $(PKG)$(SHARE)/giter-packages.conf" in rules
