"""Labels, selectors and per-device values, end to end (real git, real ssh-keygen).

Three boards are enrolled with publisher-assigned labels. One ``fleet/`` resource
reaches the boards whose enrolled labels its selector matches, rendered per device
from ``values/``; a board's own folder beats it, and it beats a group's. ``giter-bundle
render`` shows each board exactly what it gets, ``lint`` refuses a missing value and
two selectors claiming one board, and the boards themselves refuse the same things
with a typed reason while the rest of their spec applies. A board cannot choose its
labels: they come from the signed Device document, never from its local config.
"""

from __future__ import annotations

import json

import pytest
from support.fleet import API, capture, enrolled

from giter_agent.cli.main import main as agent_main

FLEET_MOTD = (f"{API}kind: File\nmetadata:\n  name: motd\n  selector:\n"
              "    matchLabels: {site: north}\n"
              "    matchExpressions:\n      - {key: hw, operator: In, values: [pi4, pi5]}\n"
              "spec:\n  path: ${values.root}/motd\n"
              "  content: \"${device.id} at ${labels.site}: ${values.greeting} $${HOME}\\n\"\n")


def group_motd(text: str) -> str:
    return (f"{API}kind: File\nmetadata:\n  name: motd\nspec:\n"
            f"  path: ${{values.root}}/motd\n  content: {json.dumps(text)}\n")


@pytest.fixture
def boards(tmp_path, fleet):
    """pi-a (north, pi4), pi-b (north, pi5: has its own motd), pi-c (south, pi4)."""
    pi_a, pi_b, pi_c = enrolled(fleet, tmp_path, "pi-a", "pi-b", "pi-c")
    fleet.ok("label", "pi-a", "site=north", "hw=pi4")
    fleet.ok("label", "pi-b", "site=north", "hw=pi5")
    fleet.ok("label", "pi-c", "site=south", "hw=pi4")
    for d in (pi_a, pi_b, pi_c):
        fleet.write(f"values/devices/{d.id}.yaml", f"root: {d.root}\n")
    fleet.write("values/defaults.yaml", "greeting: hello\n")
    fleet.write("values/labels/site/north.yaml", "greeting: good morning, north\n")
    fleet.write("fleet/motd.yaml", FLEET_MOTD)
    fleet.write("groups/lobby/motd.yaml", group_motd("lobby default\n"))
    fleet.write("devices/pi-b/motd.yaml", group_motd("pi-b's own\n"))
    fleet.ok("commit", "-m", "Fleet motd by selector, values per device and site")
    return pi_a, pi_b, pi_c


def test_selector_values_and_precedence_reach_each_board(fleet, boards, stick):
    pi_a, pi_b, pi_c = boards
    doc = (fleet.root / ".giter/devices/pi-a.yaml").read_text()
    assert "labels:\n    hw: pi4\n    site: north\n" in doc  # plain, signed, readable YAML
    assert fleet.verify_with_git("main", fleet.trust_file)

    # render shows exactly what each board gets, and where it came from.
    out = fleet.ok("render", "--device", "pi-a")
    assert "# labels: hw=pi4,site=north" in out
    assert ("# File/motd from fleet/motd.yaml; selector site=north,hw in (pi4,pi5); "
            "overrides groups/lobby/motd.yaml") in out
    assert f"path: {pi_a.root}/motd" in out
    assert "content: 'pi-a at north: good morning, north ${HOME}" in out, out
    out = fleet.ok("render", "--device", "pi-b")
    assert ("# File/motd from devices/pi-b/motd.yaml; overrides fleet/motd.yaml, "
            "groups/lobby/motd.yaml") in out
    out = fleet.ok("render", "--device", "pi-c", "-o", "json")
    (only,) = json.loads(out)["resources"]
    assert only["path"] == "groups/lobby/motd.yaml" and only["selector"] is None
    assert only["document"]["spec"]["path"] == f"{pi_c.root}/motd"
    assert fleet.cli("lint")[0] == 0

    # Carried on one stick: each board applies its own rendering.
    fleet.ok("create", stick)
    for d in boards:
        assert d.cli("sync", "--usb", stick) == 0, d.id
    assert pi_a.motd() == "pi-a at north: good morning, north ${HOME}\n"
    assert pi_b.motd() == "pi-b's own\n"
    assert pi_c.motd() == "lobby default\n"

    # The board's plan names the selector and what it overrode.
    code, out = capture(agent_main, ["-c", pi_a.config, "plan", "--all"])
    assert code == 0 and ("[from fleet/motd.yaml, selector site=north,hw in (pi4,pi5); "
                          "overrides groups/lobby/motd.yaml]") in out, out

    # Status for a fleet/ resource is the board's to write: import accepts it.
    out = fleet.ok("import", stick)
    assert out.count("ACCEPTED") == 3, out
    status = fleet.git("show", "status/pi-a:fleet/motd.yaml").stdout.decode()
    assert "${values.greeting}" in status and "status:" in status  # spec as published
    assert fleet.status()["pi-a"]["ready"] == ["File/motd"]  # the fleet table counts it

    # Relabelled by the publisher, pi-c now matches: a new signed commit, nothing local.
    fleet.ok("label", "pi-c", "site=north", "retired=yes")
    fleet.ok("label", "pi-c", "retired-")
    assert "retired" not in (fleet.root / ".giter/devices/pi-c.yaml").read_text()
    fleet.ok("create", stick)
    assert pi_c.cli("sync", "--usb", stick) == 0
    assert pi_c.motd() == "pi-c at north: good morning, north ${HOME}\n"


def test_a_board_cannot_choose_its_labels(fleet, boards, stick):
    pi_c = boards[2]
    fleet.ok("create", stick)
    # Labels in the local config are no configuration at all: refused, nothing applied.
    original = pi_c.config.read_text()
    pi_c.config.write_text('labels = {site = "north", hw = "pi4"}\n' + original)
    assert pi_c.cli("sync", "--usb", stick) == 2
    assert pi_c.motd() is None
    # A board that claims another's groups still gets only what its enrolment selects.
    pi_c.config.write_text(original.replace('groups = ["lobby"]', 'groups = ["lobby", "north"]'))
    assert pi_c.cli("sync", "--usb", stick) == 0
    assert pi_c.motd() == "lobby default\n"
    # An edit of its Device document that the publisher did not sign is refused whole.
    fleet.write(".giter/devices/pi-c.yaml", (fleet.root / ".giter/devices/pi-a.yaml")
                .read_text().replace("pi-a", "pi-c"))
    fleet.git("commit", "-q", "--no-gpg-sign", "-am", "relabel pi-c, unsigned")
    fleet.git("bundle", "create", "-q", stick / "giter/inbox/main.bundle", "main")
    assert pi_c.cli("sync", "--usb", stick) != 0
    assert pi_c.motd() == "lobby default\n"
    assert pi_c.state().accepted != fleet.rev()


def test_missing_value_and_ambiguous_selectors_are_refused(fleet, boards, stick):
    pi_a, pi_b, _ = boards
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0

    # pi-a has no ${values.port}; a second selector also claims File/motd for pi-a.
    fleet.write("fleet/motd.yaml", FLEET_MOTD.replace("${values.greeting}",
                                                      "${values.greeting} on ${values.port}"))
    fleet.write("fleet/motd-pi4.yaml", FLEET_MOTD.replace(
        "    matchExpressions:\n      - {key: hw, operator: In, values: [pi4, pi5]}\n", "")
        .replace("matchLabels: {site: north}", "matchLabels: {hw: pi4}"))
    fleet.write("values/devices/pi-b.yaml", f"root: {pi_b.root}\nport: 8080\n")
    fleet.write("fleet/typo.yaml", FLEET_MOTD.replace("name: motd", "name: typo")
                .replace("{site: north}", "{Site: north}"))
    code, out = fleet.cli("lint")
    assert code == 1 and out.count("fleet/typo.yaml: InvalidSelector: metadata: selector "
                                   "matchLabels: label key 'Site'") == 1, out
    (fleet.root / "fleet/typo.yaml").unlink()
    code, out = fleet.cli("lint")
    assert code == 1
    assert ("fleet/motd-pi4.yaml: AmbiguousResource: File/motd: the selectors of "
            "fleet/motd-pi4.yaml and fleet/motd.yaml both match this device") in out, out
    code, out = fleet.cli("render", "--device", "pi-a")
    assert code == 1 and "# REFUSED fleet/motd-pi4.yaml: AmbiguousResource" in out

    # Only the missing value left: lint names the placeholder and the board.
    (fleet.root / "fleet/motd-pi4.yaml").unlink()
    code, out = fleet.cli("lint")
    assert code == 1 and ("fleet/motd.yaml: MissingValue: ${values.port}: no value 'port' "
                          "for device pi-a") in out and "(for pi-a)" in out, out
    assert "pi-b" not in out.split("MissingValue")[1].split("\n")[0]  # pi-b has one
    code, out = fleet.cli("commit", "-m", "port")
    assert code == 1 and "not committed" in out
    fleet.ok("commit", "--no-lint", "-m", "port, committed anyway")
    fleet.ok("create", "--no-lint", stick)

    # The board refuses that one resource, typed; its last good motd stays.
    assert pi_a.cli("sync", "--usb", stick) == 3
    record = pi_a.state().resources["File/motd"]
    ready = record.status["conditions"][0]
    assert ready["reason"] == "MissingValue" and "${values.port}" in ready["message"]
    assert pi_a.motd() == "pi-a at north: good morning, north ${HOME}\n"
    assert pi_b.cli("sync", "--usb", stick) == 0
    assert pi_b.motd() == "pi-b's own\n"  # its own folder still wins

    # Given the value, the board applies it on the next stick.
    fleet.write("values/labels/hw/pi4.yaml", "port: 9000\n")
    fleet.ok("commit", "-m", "port for the pi4s")
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) == 0
    assert pi_a.motd() == "pi-a at north: good morning, north on 9000 ${HOME}\n"
