"""``giter-agent doctor``: each check's verdict on a board set up right, and set up wrong."""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest

from giter_agent.cli.doctor import FAIL, OK, WARN, Doctor, render
from giter_agent.cli.main import main
from giter_agent.core.errors import ConfigError
from giter_agent.state.store import State, StateStore
from giter_agent.trust import sshsig

NOW = 1_800_000_000.0  # 2027-01-15
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def board_dir(tmp_path) -> Path:
    """A configured board in a folder: config, trust file, state, roots."""
    key = sshsig.generate_ed25519()
    (tmp_path / "allowed_signers").write_text(
        f'publisher namespaces="git" {sshsig.public_key_of(key).openssh()}\n')
    (tmp_path / "allowed_signers").chmod(0o644)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    for d in ("media", "srv"):
        (tmp_path / d).mkdir()
    (tmp_path / "agent.toml").write_text(
        'device_id = "pi-1"\nstate_dir = "state"\nboard = "generic-mock"\n'
        'allowed_signers = "allowed_signers"\n[usb]\nroots = ["media"]\n'
        '[files]\nroots = ["srv"]\n')
    return tmp_path


def doctor(board_dir: Path, **kw) -> Doctor:
    kw.setdefault("clock", lambda: NOW)
    kw.setdefault("installed_at", lambda: NOW - 86400)
    kw.setdefault("disk_usage", lambda p: Usage(2**40, 0, 10 * 2**30))
    return Doctor(board_dir / "agent.toml", **kw)


def by_check(findings, check):
    return [f for f in findings if f.check == check]


def levels(findings):
    return {f.check: f.level for f in findings}


def with_key(board_dir: Path) -> None:
    from giter_agent.trust.devicekey import load_or_create

    load_or_create(board_dir / "state" / "device_key")


def test_a_board_set_up_right_passes_every_check(board_dir):
    with_key(board_dir)
    findings = doctor(board_dir).run()
    assert {f.level for f in findings} == {OK}, render(findings)
    assert set(levels(findings)) == {"config", "board", "pin factory", "trust file",
                                     "state directory", "device key", "clock", "free disk",
                                     "USB root", "File root", "services"}
    assert render(findings).endswith("all checks passed")


def test_doctor_reports_the_services_allowlist(board_dir):
    with_key(board_dir)
    config = board_dir / "agent.toml"
    base = config.read_text()
    config.write_text(base + '[services]\nallowed = ["kiosk-*.service"]\n')
    (finding,) = by_check(doctor(board_dir).run(), "services")
    assert finding.level == OK and "kiosk-*.service" in finding.message
    assert "refused" in finding.message
    config.write_text(base + '[services]\nallowed = ["*"]\nforce = ["ssh.service"]\n')
    found = by_check(doctor(board_dir).run(), "services")
    assert [f.level for f in found] == [OK, WARN]
    assert "ssh.service" in found[0].message


def test_a_missing_device_key_is_a_warning_with_the_command_that_makes_it(board_dir):
    findings = doctor(board_dir).run()
    (key,) = by_check(findings, "device key")
    assert key.level == WARN and "giter-agent key" in key.fix
    assert not [f for f in findings if f.level == FAIL]


def test_no_config(tmp_path):
    findings = Doctor(tmp_path / "agent.toml").run()
    assert [(f.check, f.level) for f in findings] == [("config", FAIL)]
    assert "not found" in findings[0].message and "scripts/install" in findings[0].fix


def test_bad_config_key_is_named(board_dir):
    (board_dir / "agent.toml").write_text(
        (board_dir / "agent.toml").read_text() + 'colour = "blue"\n')
    (cfg,) = doctor(board_dir).run()
    assert cfg.level == FAIL and "colour" in cfg.message


def test_unknown_board(board_dir):
    text = (board_dir / "agent.toml").read_text().replace("generic-mock", "rpi-99")
    (board_dir / "agent.toml").write_text(text)
    (board,) = by_check(doctor(board_dir).run(), "board")
    assert board.level == FAIL and "rpi-99" in board.message


def test_pin_factory_that_cannot_start_says_what_to_install(board_dir):
    def broken(board):
        raise ConfigError("pin_factory: cannot start 'lgpio': no /dev/gpiochip0")

    (pf,) = by_check(doctor(board_dir, pin_factory_maker=broken).run(), "pin factory")
    assert pf.level == FAIL and "gpiochip0" in pf.message


def test_trust_file_that_does_not_parse_fails_naming_the_line(board_dir):
    (board_dir / "allowed_signers").write_text("# publishers\nnot a key line\n")
    (trust,) = by_check(doctor(board_dir).run(), "trust file")
    assert trust.level == FAIL and "allowed_signers:2:" in trust.message


def test_trust_file_without_a_git_signer_fails(board_dir):
    signers = board_dir / "allowed_signers"
    signers.write_text(signers.read_text().replace('namespaces="git"', 'namespaces="file"'))
    (trust,) = by_check(doctor(board_dir).run(), "trust file")
    assert trust.level == FAIL and "no key is trusted for namespace git" in trust.message


def test_missing_trust_file(board_dir):
    (board_dir / "allowed_signers").unlink()
    (trust,) = by_check(doctor(board_dir).run(), "trust file")
    assert trust.level == FAIL and "--allowed-signers" in trust.fix


def test_a_trust_file_others_can_write_fails(board_dir):
    (board_dir / "allowed_signers").chmod(0o666)
    (trust,) = by_check(doctor(board_dir).run(), "trust file")
    assert trust.level == FAIL and "chmod 644" in trust.fix


def test_a_trust_file_the_agent_user_owns_is_a_warning(board_dir):
    owner = (board_dir / "allowed_signers").stat().st_uid
    (trust,) = by_check(doctor(board_dir, euid=owner or 4242).run(), "trust file")
    if owner == 0:  # running as root: root owns it, which is right on a board
        (trust,) = by_check(doctor(board_dir).run(), "trust file")
        assert trust.level == OK
    else:
        assert trust.level == WARN and "chown root:root" in trust.fix


def test_device_key_readable_by_others_fails(board_dir):
    with_key(board_dir)
    (board_dir / "state" / "device_key").chmod(0o644)
    (key,) = by_check(doctor(board_dir).run(), "device key")
    assert key.level == FAIL and key.fix == f"chmod 600 {board_dir / 'state' / 'device_key'}"


def test_device_key_that_is_not_a_key_fails(board_dir):
    path = board_dir / "state" / "device_key"
    path.write_text("garbage")
    path.chmod(0o600)
    (key,) = by_check(doctor(board_dir).run(), "device key")
    assert key.level == FAIL and "enrol" in key.fix


def test_state_directory_open_to_others_fails(board_dir):
    (board_dir / "state").chmod(0o755)
    (st,) = by_check(doctor(board_dir).run(), "state directory")
    assert st.level == FAIL and "chmod 700" in st.fix


def test_missing_state_directory_fails(board_dir):
    (board_dir / "state").rmdir()
    findings = doctor(board_dir).run()
    (st,) = by_check(findings, "state directory")
    assert st.level == FAIL and "install -d -o giter" in st.fix


def test_state_directory_of_another_user(board_dir):
    owner = (board_dir / "state").stat().st_uid
    (st,) = by_check(doctor(board_dir, euid=owner + 1000).run(), "state directory")
    assert st.level == FAIL and "sudo -u giter" in st.fix
    # root may read it, but should run the agent as the service user: a warning.
    if owner != 0:
        (st,) = by_check(doctor(board_dir, euid=0).run(), "state directory")
        assert st.level == WARN


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_files_left_by_another_user_in_the_state_directory_fail(board_dir):
    stray = board_dir / "state" / "state.msgpack"
    stray.write_bytes(b"")
    os.chown(stray, 4242, 4242)
    findings = by_check(doctor(board_dir).run(), "state directory")
    assert [f.level for f in findings] == [OK, FAIL]
    assert "state.msgpack" in findings[1].message and "chown -R" in findings[1].fix


def test_clock_before_the_install_fails(board_dir):
    (clock,) = by_check(doctor(board_dir, clock=lambda: 0.0).run(), "clock")
    assert clock.level == FAIL and "1970-01-01T00:00:00Z" in clock.message
    assert "fake-hwclock" in clock.fix


def test_clock_before_the_last_recorded_sync_fails(board_dir):
    StateStore(board_dir / "state").save(State(last_sync={"time": "2027-02-01T00:00:00Z"}))
    (clock,) = by_check(doctor(board_dir).run(), "clock")
    assert clock.level == FAIL and "went backwards" in clock.message
    later = NOW + 40 * 86400
    (clock,) = by_check(doctor(board_dir, clock=lambda: later).run(), "clock")
    assert clock.level == OK


def test_a_few_minutes_of_clock_step_is_not_an_error(board_dir):
    (clock,) = by_check(doctor(board_dir, installed_at=lambda: NOW + 60).run(), "clock")
    assert clock.level == OK


@pytest.mark.parametrize(("free_mib", "level"), [(8, FAIL), (100, WARN), (4096, OK)])
def test_free_disk(board_dir, free_mib, level):
    usage = lambda p: Usage(2**40, 0, free_mib * 2**20)  # noqa: E731
    (disk,) = by_check(doctor(board_dir, disk_usage=usage).run(), "free disk")
    assert disk.level == level
    assert f"{free_mib} MiB free" in disk.message


def test_missing_usb_and_file_roots_fail(board_dir):
    (board_dir / "media").rmdir()
    (board_dir / "srv").rmdir()
    findings = doctor(board_dir).run()
    (usb,) = by_check(findings, "USB root")
    (files,) = by_check(findings, "File root")
    assert usb.level == FAIL and files.level == FAIL
    assert "install -d" in usb.fix and "-o giter" in files.fix


def test_render_puts_the_fix_under_each_problem():
    from giter_agent.cli.doctor import Finding

    text = render([Finding("clock", FAIL, "wrong", "set it"), Finding("board", OK, "fine", "x"),
                   Finding("free disk", WARN, "low", "clean")])
    lines = text.splitlines()
    assert lines[0].startswith("FAIL  clock") and lines[1].strip() == "fix: set it"
    assert lines[2].startswith("ok    board")
    assert "fix: x" not in text  # an ok finding shows no fix
    assert lines[3].startswith("warn  free disk") and lines[4].strip() == "fix: clean"
    assert lines[-1] == "1 problem(s) to fix, 1 warning(s)"


def test_cli_exit_codes(board_dir, capsys):
    with_key(board_dir)
    assert main(["-c", str(board_dir / "agent.toml"), "doctor"]) == 0
    assert "all checks passed" in capsys.readouterr().out
    (board_dir / "state").chmod(0o755)
    assert main(["-c", str(board_dir / "agent.toml"), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  state directory" in out and "fix: chmod 700" in out


DEB_AGENT = Path("/usr/share/giter-agent/giter_agent/cli/doctor.py")
VENV_AGENT = Path("/opt/giter-agent/lib/python3.11/site-packages/giter_agent/cli/doctor.py")


@pytest.mark.parametrize(("os_release", "rpi_issue", "agent_path", "command"), [
    ('ID=debian\nVERSION_CODENAME=bookworm\n', True, VENV_AGENT,
     "sudo apt-get install python3-lgpio"),
    ('ID=raspbian\n', False, DEB_AGENT, "sudo apt-get install python3-lgpio"),
    ('PRETTY_NAME="Debian GNU/Linux 12"\nID=debian\n', False, VENV_AGENT,
     "sudo /opt/giter-agent/bin/pip install lgpio"),
    ('PRETTY_NAME="Debian GNU/Linux 12"\nID=debian\n', False, DEB_AGENT,
     "sudo apt-get install python3-pip && sudo pip3 install --break-system-packages lgpio"),
])
def test_the_lgpio_fix_names_a_command_this_os_has(board_dir, tmp_path, os_release,
                                                  rpi_issue, agent_path, command):
    text = (board_dir / "agent.toml").read_text().replace("generic-mock", "rpi-4b")
    (board_dir / "agent.toml").write_text(text)
    (tmp_path / "os-release").write_text(os_release)
    if rpi_issue:
        (tmp_path / "rpi-issue").write_text("Raspberry Pi reference 2024-07-04\n")

    def broken(board):
        raise ConfigError("pin_factory: cannot start 'lgpio': No module named 'lgpio'")

    (pf,) = by_check(doctor(board_dir, pin_factory_maker=broken,
                            os_release=tmp_path / "os-release",
                            rpi_issue=tmp_path / "rpi-issue",
                            agent_path=agent_path).run(), "pin factory")
    assert pf.level == FAIL and pf.fix.startswith(command)
