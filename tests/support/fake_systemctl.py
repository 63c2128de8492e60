"""A stand-in for ``systemctl``, copied onto PATH by the Service tests.

Units live in ``units.json`` in a ``systemd/`` folder beside the script's folder (the
agent gives systemctl a minimal environment, so nothing can come through it), as
{"app.service": {"active": ..., "sub": ..., "enabled": ..., "fails": bool}}; every call
is appended to ``calls.log``.
It answers ``show --property=...``, ``start``, ``restart``, ``stop``, ``enable`` and ``disable``
the way systemctl does, including a unit that fails to start and an unknown unit.
"""

import json
import sys
from pathlib import Path

state_dir = Path(sys.argv[0]).resolve().parent.parent / "systemd"
units_file = state_dir / "units.json"
args = [a for a in sys.argv[1:] if a not in ("--no-ask-password", "--")]
with open(state_dir / "calls.log", "a") as log:
    log.write(" ".join(args) + "\n")
units = json.loads(units_file.read_text()) if units_file.exists() else {}
verb, unit = args[0], args[-1]
info = units.get(unit)

if verb == "show":
    props = args[1].split("=", 1)[1].split(",")
    values = {"LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead",
              "UnitFileState": ""}
    if info is not None:
        values = {"LoadState": "loaded", "ActiveState": info["active"],
                  "SubState": info["sub"], "UnitFileState": info["enabled"]}
    for prop in props:
        print(f"{prop}={values[prop]}")
    sys.exit(0)
if info is None:
    print(f"Failed to {verb} {unit}: Unit {unit} not found.", file=sys.stderr)
    sys.exit(5)
if verb in ("start", "restart"):
    if info.get("fails"):
        info.update(active="failed", sub="failed")
        units_file.write_text(json.dumps(units))
        print(f"Job for {unit} failed because the control process exited with error code.",
              file=sys.stderr)
        sys.exit(1)
    info.update(active="active", sub="running")
elif verb == "stop":
    info.update(active="inactive", sub="dead")
elif verb in ("enable", "disable"):
    info["enabled"] = "enabled" if verb == "enable" else "disabled"
else:
    print(f"fake systemctl: unsupported verb {verb}", file=sys.stderr)
    sys.exit(2)
units_file.write_text(json.dumps(units))
