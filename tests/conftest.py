"""Shared fixtures: an isolated git environment and a publisher signing with real git.

Every test runs with ``HOME`` pointed at a temp folder and ``GIT_*``/``SSH_*`` variables
scrubbed, so a developer's own git configuration never leaks into a verdict.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.git import Publisher, ssh_keygen

# What can differ by architecture: crypto (cryptography's wheels, Debian's older build on
# armhf), dulwich (native modules on arm64, pure Python on armhf), packs and bundles, the
# serial framing (byte order, CRC), GPIO on gpiozero's pins, and one whole round trip.
# The emulated ARM boards run these (`pytest -m arch`, scripts/qemu-test); the host runs all.
ARCH_MODULES = {
    "test_boards", "test_bundle", "test_history", "test_tree", "test_signed_commit",
    "test_sshsig", "test_trust", "test_serial_frames", "test_serial_transfer",
    "test_kinds_output", "test_kinds_sensor", "test_status_led", "test_roundtrip",
    "test_lock_table", "test_age", "test_sshsig_sk", "test_fleet_rules", "test_openssh_key",
    "test_ed25519_keys",
}
# Tests that run the installed commands, real servers or whole syncs end to end.
E2E_MODULES = {
    "test_roundtrip", "test_sync_attacks", "test_daemon", "test_network", "test_fleet",
    "test_giter_bundle", "test_giter_bundle_import", "test_serial_sync", "test_serial_console",
    "test_technician_view", "test_doctor", "test_reconcile_scale", "test_systemd_units",
    "test_secrets_fleet", "test_hostile_bytes", "test_hostile_resources", "test_amplification",
    "test_serial_daemon", "test_permissions", "test_install_board", "test_wheelhouse",
    "test_metrics", "test_import_gate", "test_history_walks", "test_fleet_targeting",
    "test_fleet_rollout",
    "test_death", "test_powercut", "test_recovery", "test_diskfull", "test_fleet_alerts",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        if module in ARCH_MODULES:
            item.add_marker(pytest.mark.arch)
        item.add_marker(pytest.mark.e2e if module in E2E_MODULES else pytest.mark.unit)


@pytest.fixture(autouse=True)
def isolated_git_env(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith("GIT_") or name.startswith("SSH_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Fleet Operator")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "ops@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Fleet Operator")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "ops@example.invalid")
    return home


@pytest.fixture
def publisher_key(tmp_path) -> Path:
    return ssh_keygen(tmp_path / "publisher_ed25519")


@pytest.fixture
def publisher(tmp_path, publisher_key) -> Publisher:
    return Publisher(tmp_path / "fleet", publisher_key)


@pytest.fixture
def fleet(tmp_path, publisher_key):
    """An exchange repository made by ``giter-bundle init`` (``support.fleet.Fleet``)."""
    from support.fleet import Fleet

    return Fleet(tmp_path, publisher_key)


@pytest.fixture
def stick(tmp_path) -> Path:
    """An empty folder standing in for a mounted USB stick."""
    (tmp_path / "stick").mkdir()
    return tmp_path / "stick"


@pytest.fixture
def clock():
    """A fake clock the test moves by hand (tests/kinds_helpers.py)."""
    from support.kinds import Clock

    return Clock()


@pytest.fixture
def ctx(tmp_path, clock):
    """A handler context on gpiozero's mock pins with the fake clock; files under tmp."""
    from gpiozero.pins.mock import MockFactory
    from support.kinds import make_ctx

    c = make_ctx(tmp_path, MockFactory(), clock)
    yield c
    c.close()
