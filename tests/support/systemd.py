"""The fake ``systemctl`` (tests/support/fake_systemctl.py) installed first on PATH.

``install(tmp_path, monkeypatch)`` copies the script into ``tmp_path/bin`` and returns a
``FakeSystemd``: its unit table (``add``) and call log (``calls``, ``acted``). Used by
the Service and Release tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class FakeSystemd:
    """The fake's unit table and call log."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def units(self) -> dict:
        path = self.folder / "units.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def add(self, unit: str, active: str = "inactive", sub: str = "dead",
            enabled: str = "disabled", fails: bool = False) -> None:
        units = self.units()
        units[unit] = {"active": active, "sub": sub, "enabled": enabled, "fails": fails}
        (self.folder / "units.json").write_text(json.dumps(units))

    def calls(self) -> list[str]:
        path = self.folder / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    def acted(self) -> list[str]:
        return [c for c in self.calls() if not c.startswith("show")]


def install(tmp_path: Path, monkeypatch: Any) -> FakeSystemd:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    source = (Path(__file__).parent / "fake_systemctl.py").read_text()
    script.write_text(f"#!{sys.executable}\n{source}")
    script.chmod(0o755)
    state = tmp_path / "systemd"  # where the fake keeps its units (see fake_systemctl.py)
    state.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return FakeSystemd(state)
