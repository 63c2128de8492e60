"""The offline install path: ``scripts/wheelhouse`` builds a folder of wheels from which
a fresh virtual environment installs giter-agent with pip's index switched off, and
``scripts/install --wheelhouse`` checks the folder before it touches anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    done = subprocess.run(["bash", str(REPO / "scripts/wheelhouse"), str(out)], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 and "No matching distribution" in done.stderr:
        pytest.skip(f"no package index reachable to build a wheelhouse: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr
    assert "sudo scripts/install --wheelhouse" in done.stdout
    return out


def test_a_fresh_venv_installs_from_the_wheelhouse_with_no_index(wheelhouse, tmp_path):
    names = {p.name.split("-")[0].lower() for p in wheelhouse.glob("*.whl")}
    assert {"giter_agent", "dulwich", "cryptography", "msgpack", "pyserial", "gpiozero",
            "pyyaml"} <= names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # No index, no find-links but the wheelhouse, no configuration of this machine's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")
    done = subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-index",
                           "--find-links", str(wheelhouse), "giter-agent"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    version = subprocess.run([str(venv / "bin/giter-agent"), "--version"], env=env,
                             capture_output=True, text=True, timeout=60, check=True)
    assert version.stdout.startswith("giter-agent ")


@pytest.mark.skipif(os.geteuid() != 0, reason="scripts/install re-runs itself with sudo")
def test_install_checks_the_wheelhouse_before_anything(wheelhouse, tmp_path):
    signers = tmp_path / "allowed_signers"
    signers.write_text("publisher ssh-ed25519 AAAA\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, GITER_ETC=str(tmp_path / "etc"))

    def install(folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "scripts/install"), "--allowed-signers",
                               str(signers), "--board", "generic-mock", "--device-id",
                               "pi-01", "--dry-run", "--wheelhouse", str(folder)],
                              env=env, capture_output=True, text=True, timeout=60,
                              check=False)

    done = install(empty)
    assert done.returncode == 1 and "holds no giter_agent wheel" in done.stderr
    done = install(wheelhouse)
    assert done.returncode == 0, done.stderr
    assert f"would install from the wheelhouse {wheelhouse} (no network)" in done.stdout
