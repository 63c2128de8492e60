"""Shared fixtures: an isolated git environment and a publisher signing with real git.

Every test runs with ``HOME`` pointed at a temp folder and ``GIT_*``/``SSH_*`` variables
scrubbed, so a developer's own git configuration never leaks into a verdict.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import Publisher, ssh_keygen


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
def clock():
    """A fake clock the test moves by hand (tests/kinds_helpers.py)."""
    from kinds_helpers import Clock

    return Clock()


@pytest.fixture
def ctx(tmp_path, clock):
    """A handler context on gpiozero's mock pins with the fake clock; files under tmp."""
    from gpiozero.pins.mock import MockFactory
    from kinds_helpers import make_ctx

    c = make_ctx(tmp_path, MockFactory(), clock)
    yield c
    c.close()
