"""What a technician reads after a stick sync: the receipt, the console line, ``status``.

All three must name the same state (``giter_agent.state.health``) and the same LED pattern
(``giter_agent.device.status_led``), for a good bundle and for a refused one.
"""

from __future__ import annotations

from support.devices import SimDevice, motd

from giter_agent.cli.main import main
from giter_agent.device.status_led import LEGEND, legend


def sync_stick(device: SimDevice, stick) -> int:
    return main(["-c", str(device.config_path), "sync", "--usb", str(stick)])


def console_line(device: SimDevice, capsys, code: int) -> str:
    capsys.readouterr()
    assert main(["-c", str(device.config_path), "status", "--line"]) == code
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one line, for a serial console
    return out.strip()


def test_applied_then_refused_reads_the_same_everywhere(tmp_path, publisher, capsys):
    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    stick = tmp_path / "stick"
    (stick / "giter" / "inbox").mkdir(parents=True)
    good = publisher.commit("spec", files={"devices/pi-01/motd.yaml":
                                           motd(device.root, "hello\n")})
    publisher.bundle(stick / "giter/inbox/fleet.bundle")
    assert sync_stick(device, stick) == 0
    receipt = (stick / "giter/outbox/pi-01.txt").read_text()
    assert "state:          in-sync: InSync:" in receipt
    assert f"status LED:     {LEGEND['in-sync']}" in receipt
    line = console_line(device, capsys, 0)
    assert line.startswith("giter-agent pi-01: in-sync: InSync: spec ")
    assert line.endswith(f"[LED: {LEGEND['in-sync']}]")
    # The whole legend is on the stick, for whoever reads the receipt far from the board.
    assert "\n".join(f"  {row}" for row in legend()) + "\n\nNEXT: " in receipt
    # And it ends in one plain line on what to do next.
    assert receipt.endswith("\nNEXT: nothing more to do here: carry the stick back to the "
                            "operator\n")

    publisher.commit("unsigned", sign=False, files={"devices/pi-01/motd.yaml":
                                                    motd(device.root, "evil\n")})
    (stick / "giter/inbox/fleet.bundle").unlink()
    publisher.bundle(stick / "giter/inbox/evil.bundle", f"{good}..main")
    assert sync_stick(device, stick) == 1
    receipt = (stick / "giter/outbox/pi-01.txt").read_text()
    assert "state:          refused: UnsignedCommit: evil.bundle:" in receipt
    assert f"status LED:     {LEGEND['refused']}" in receipt
    line = console_line(device, capsys, 1)  # status exits 1 when refused
    assert line.startswith("giter-agent pi-01: refused: UnsignedCommit: evil.bundle:")
    assert line.endswith("[LED: 3 quick blinks, then 1.6 s dark, repeating]")
    assert main(["-c", str(device.config_path), "status"]) == 1
    full = capsys.readouterr().out
    assert "state         refused (UnsignedCommit: evil.bundle:" in full
    assert f"LED           {LEGEND['refused']}" in full
    assert (device.root / "motd").read_text() == "hello\n"


def test_yesterdays_stick_is_nothing_new_and_a_fork_stays_refused(tmp_path, publisher,
                                                                  capsys):
    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    stick = tmp_path / "stick"
    inbox = stick / "giter" / "inbox"
    inbox.mkdir(parents=True)
    publisher.commit("monday", files={"devices/pi-01/motd.yaml": motd(device.root, "mon\n")})
    publisher.bundle(tmp_path / "monday.bundle")
    tuesday = publisher.commit("tuesday", files={"devices/pi-01/motd.yaml":
                                                 motd(device.root, "tue\n")})
    publisher.bundle(inbox / "fleet.bundle")
    assert sync_stick(device, stick) == 0
    # Monday's stick comes back: an ancestor of what the board holds. Nothing new, and
    # nothing wrong: exit 0, the LED stays in sync, the receipt says so.
    (inbox / "fleet.bundle").unlink()
    (tmp_path / "monday.bundle").rename(inbox / "monday.bundle")
    assert sync_stick(device, stick) == 0
    receipt = (stick / "giter/outbox/pi-01.txt").read_text()
    assert f"result:         UP-TO-DATE - nothing new: spec {tuesday[:12]} already" in receipt
    assert "monday.bundle" in receipt and "OlderSpec: nothing new" in receipt
    assert "state:          in-sync:" in receipt
    assert f"status LED:     {LEGEND['in-sync']}" in receipt
    assert console_line(device, capsys, 0).startswith("giter-agent pi-01: in-sync:")
    assert device.state().accepted == tuesday and (device.root / "motd").read_text() == "tue\n"

    # A history that does not descend from Tuesday (a fork) is still refused.
    publisher.git("checkout", "-q", "--orphan", "fork")
    publisher.commit("fork", files={"devices/pi-01/motd.yaml": motd(device.root, "fork\n")})
    publisher.git("branch", "-f", "main", "fork")
    (inbox / "monday.bundle").unlink()
    publisher.bundle(inbox / "fork.bundle", "main")
    assert sync_stick(device, stick) == 1
    receipt = (stick / "giter/outbox/pi-01.txt").read_text()
    assert "result:         REFUSED - fork.bundle:" in receipt and "Fork" in receipt
    assert receipt.endswith("NEXT: call the operator with this code: Fork (fork.bundle), "
                            "and carry the stick back\n")
    assert device.state().accepted == tuesday


def test_a_stick_with_a_good_and_a_refused_bundle_says_both(tmp_path, publisher):
    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    stick = tmp_path / "stick"
    inbox = stick / "giter" / "inbox"
    inbox.mkdir(parents=True)
    good = publisher.commit("spec", files={"devices/pi-01/motd.yaml":
                                           motd(device.root, "hello\n")})
    publisher.bundle(inbox / "fleet.bundle")
    publisher.commit("unsigned", sign=False, files={"devices/pi-01/motd.yaml":
                                                    motd(device.root, "evil\n")})
    publisher.bundle(inbox / "zz-evil.bundle", "main")
    assert sync_stick(device, stick) == 1  # a refusal is never quiet
    receipt = (stick / "giter/outbox/pi-01.txt").read_text()
    assert (f"result:         APPLIED spec {good[:12]} from fleet.bundle; "
            "REFUSED zz-evil.bundle (" in receipt)
    assert receipt.endswith("NEXT: call the operator with this code: UnsignedCommit "
                            "(zz-evil.bundle), and carry the stick back\n")
    assert (device.root / "motd").read_text() == "hello\n"


def test_an_unenrolled_board_hands_its_key_over_on_the_stick(tmp_path, publisher, capsys):
    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    stick = tmp_path / "stick"
    inbox = stick / "giter" / "inbox"
    inbox.mkdir(parents=True)
    publisher.commit("spec", files={"devices/pi-01/motd.yaml": motd(device.root, "hi\n")})
    publisher.bundle(inbox / "fleet.bundle")
    assert sync_stick(device, stick) == 0
    capsys.readouterr()
    assert main(["-c", str(device.config_path), "key"]) == 0
    key_line = capsys.readouterr().out
    pub = stick / "giter/outbox/pi-01.pub"
    assert pub.read_text() == key_line  # what `giter-bundle enroll pi-01 FILE` reads

    # Once the spec enrols it, the file is no longer written (and the old one goes).
    publisher.commit("enrol pi-01", files={".giter/devices/pi-01.pub": key_line})
    (inbox / "fleet.bundle").unlink()
    publisher.bundle(inbox / "fleet.bundle")
    assert sync_stick(device, stick) == 0
    assert not pub.exists()
