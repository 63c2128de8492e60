"""``giter-rw-paths``: the one script scripts/install and the Debian package's postinst
both run to let the services write where agent.toml's ``[files] roots`` (and the metrics
textfile's folder) say, through a ``ReadWritePaths=`` drop-in per unit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_drop_ins_name_the_configs_file_roots(tmp_path):
    template = (REPO / "scripts/agent.toml.in").read_text()
    config = tmp_path / "agent.toml"
    config.write_text(template.replace("@DEVICE_ID@", "pi-1").replace("@BOARD@", "generic-mock")
                      .replace("@FILES_ROOTS@", '"/srv/giter", "/opt/app"'))
    units = tmp_path / "system"
    subprocess.run([REPO / "systemd/giter-rw-paths", sys.executable, config, units],
                   check=True, capture_output=True, text=True)
    for unit in ("giter-agent.service", "giter-usb-sync@.service"):
        lines = (units / f"{unit}.d/50-paths.conf").read_text().splitlines()
        assert lines[1:] == ["[Service]", "ReadWritePaths=-/srv/giter -/opt/app"]
    # scripts/install and the package run this script, not a copy of its rule.
    install = (REPO / "scripts/install").read_text()
    assert '"$PREFIX/libexec/giter-rw-paths" "$PREFIX/bin/python"' in install
    postinst = (REPO / "debian/giter-agent.postinst").read_text()
    assert '"$LIB/libexec/giter-rw-paths" "$LIB/bin/python"' in postinst
