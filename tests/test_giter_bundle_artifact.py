"""``giter-bundle artifact add``, and artifacts in ``lint`` and ``inspect``, end to end.

An operator adds a binary with the toolkit, commits it signed, lints, ships a bundle,
and a device lays it down; git is the oracle for what lands in the tree.
"""

from __future__ import annotations

import hashlib
import json
import os

from support.fleet import API, enrolled

MiB = 2**20


def artifact_resource(device, name: str, **extra: str) -> str:
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in extra.items())
    return (f"{API}kind: File\nmetadata: {{name: app}}\nspec:\n  path: {device.root}/app.bin\n"
            f"  artifact: {name}\n{lines}")


def test_add_stages_the_file_and_prints_its_digest_and_size(tmp_path, fleet):
    data = os.urandom(3 * MiB)
    source = tmp_path / "Server-1.2.bin"
    source.write_bytes(data)
    code, out = fleet.cli("artifact", "add", source)
    assert code == 2 and "ArtifactNotAllowed" in out and "--as" in out  # upper case name
    out = fleet.ok("artifact", "add", source, "--as", "app/server-1.2.bin")
    digest = hashlib.sha256(data).hexdigest()
    assert f"artifacts/app/server-1.2.bin  sha256 {digest}  {len(data)} bytes" in out
    assert f'sha256: "{digest}"' in out
    # Staged exactly as git would have: the index holds git's blob id of the file.
    staged = fleet.git("ls-files", "-s", "artifacts/app/server-1.2.bin").stdout.split()
    assert staged[1].decode() == fleet.git("hash-object", source).stdout.decode().strip()


def test_add_warns_when_the_next_bundle_will_not_fit(tmp_path, fleet):
    source = tmp_path / "fw.img"
    source.write_bytes(os.urandom(2 * MiB))  # random: deflating keeps it about 2 MiB
    code, out = fleet.cli("artifact", "add", source, "--free", "1M")
    assert code == 0 and "warning: the next bundle carries at least 2.0 MiB" in out
    code, out = fleet.cli("artifact", "add", source, "--free", "64M")
    assert code == 0 and "warning" not in out
    code, out = fleet.cli("artifact", "add", source, "--stick", tmp_path)
    assert code == 0 and "warning" not in out  # a temp folder has room for 2 MiB


def test_lint_checks_references_and_pins_then_a_device_lays_it_down(tmp_path, fleet):
    (pi,) = enrolled(fleet, tmp_path, "pi-a")
    data = os.urandom(MiB)
    source = tmp_path / "app.bin"
    source.write_bytes(data)
    good = hashlib.sha256(data).hexdigest()
    fleet.write("devices/pi-a/app.yaml", artifact_resource(pi, "artifacts/app.bin",
                                                           sha256=good))
    code, out = fleet.cli("lint")
    assert code == 1 and "ArtifactMissing" in out  # named, not added yet
    fleet.ok("artifact", "add", source)
    assert "0 error(s)" in fleet.ok("lint")
    fleet.write("devices/pi-a/app.yaml", artifact_resource(pi, "artifacts/app.bin",
                                                           sha256="0" * 64))
    code, out = fleet.cli("lint")
    assert code == 1 and f"ArtifactMismatch: artifacts/app.bin has sha256 {good}" in out
    fleet.write("devices/pi-a/app.yaml", artifact_resource(pi, "etc/app.bin"))
    code, out = fleet.cli("lint")
    assert code == 1 and "ArtifactNotAllowed" in out
    fleet.write("devices/pi-a/app.yaml", artifact_resource(pi, "artifacts/app.bin",
                                                           sha256=good))
    fleet.ok("commit", "-m", "ship the app")
    assert "0 error(s)" in fleet.ok("lint", "--rev", "main")  # the committed tree too
    assert fleet.git("cat-file", "-p", "main:artifacts/app.bin").stdout == data

    bundle = tmp_path / "fleet.bundle"
    fleet.ok("create", "-o", bundle)
    out = fleet.ok("inspect", bundle)
    assert "artifacts carried" in out and f"artifacts/app.bin  {len(data)} bytes" in out
    doc = json.loads(fleet.ok("inspect", bundle, "--json"))
    assert [(a["path"], a["bytes"]) for a in doc["artifacts"]] == [("artifacts/app.bin",
                                                                   len(data))]
    assert pi.cli("sync", "--bundle", bundle) == 0
    assert (pi.root / "app.bin").read_bytes() == data
