"""``[metrics] textfile``: the node_exporter textfile the agent keeps, checked the way the
collector reads it (exposition format) and against git for the spec's time."""

from __future__ import annotations

import re
import stat

import pytest
from support.devices import SimDevice
from support.servers import free_port

from giter_agent.cli.main import main

SAMPLE = re.compile(r'^([a-z_]+)\{device="pi-01"(?:,[a-z_]+="[^"]*")*\} (-?[0-9.e+]+)$')


def parse(text: str) -> dict[str, float]:
    """Samples by ``name{labels}``; asserts every line is valid exposition format and
    every metric is introduced by its HELP and TYPE."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind == "gauge"
            typed.add(name)
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        assert match.group(1) in typed, f"{match.group(1)} has no # TYPE before it"
        samples[line.rsplit(" ", 1)[0]] = float(match.group(2))
    return samples


def with_metrics(device: SimDevice, tmp_path) -> object:
    prom = tmp_path / "textfile" / "giter.prom"
    prom.parent.mkdir()
    with device.config_path.open("a") as f:
        f.write(f'[metrics]\ntextfile = "{prom}"\n')
    return prom


def test_metrics_follow_syncs_and_are_written_only_on_change(tmp_path, publisher):
    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers)
    prom = with_metrics(device, tmp_path)
    tip = publisher.commit("spec", files=device.spec_files("hello\n"))
    bundle = publisher.bundle(tmp_path / "fleet.bundle")
    assert main(["-c", str(device.config_path), "sync", "--bundle", str(bundle)]) == 0
    m = parse(prom.read_text())
    assert m['giter_up{device="pi-01"}'] == 1
    assert m['giter_state{device="pi-01",state="in-sync"}'] == 1
    assert m['giter_state{device="pi-01",state="refused"}'] == 0
    assert m['giter_last_sync_outcome{device="pi-01",outcome="applied"}'] == 1
    assert m['giter_last_sync_refused_bundles{device="pi-01"}'] == 0
    assert m['giter_resources{device="pi-01",ready="true"}'] == 1
    assert m['giter_resources{device="pi-01",ready="false"}'] == 0
    committed = int(publisher.git("show", "-s", "--format=%ct", tip).stdout)
    assert m['giter_spec_commit_timestamp_seconds{device="pi-01"}'] == committed
    assert m['giter_last_sync_timestamp_seconds{device="pi-01"}'] > 0
    assert "giter_network_online" not in prom.read_text()  # no [network]
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644  # node_exporter is another user

    # A pass that changes nothing leaves the file alone (SD-card wear).
    before = prom.stat()
    agent = device.agent()
    try:
        agent.reconcile_pass()
    finally:
        agent.close()
    after = prom.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # A refused bundle shows.
    publisher.commit("unsigned", sign=False, files=device.spec_files("evil\n"))
    evil = publisher.bundle(tmp_path / "evil.bundle")
    assert main(["-c", str(device.config_path), "sync", "--bundle", str(evil)]) == 1
    m = parse(prom.read_text())
    assert m['giter_state{device="pi-01",state="refused"}'] == 1
    assert m['giter_last_sync_outcome{device="pi-01",outcome="refused"}'] == 1
    assert m['giter_last_sync_refused_bundles{device="pi-01"}'] == 1
    assert not list(prom.parent.glob(".*"))  # no temp file left for the collector


def test_an_unreachable_hub_shows_as_offline(tmp_path, publisher):
    device = SimDevice(tmp_path, "pi-01", publisher.allowed_signers,
                       {"url": f"git://127.0.0.1:{free_port()}/fleet.git"})
    prom = with_metrics(device, tmp_path)
    assert main(["-c", str(device.config_path), "sync"]) == 4
    m = parse(prom.read_text())
    assert m['giter_network_online{device="pi-01"}'] == 0
    assert m['giter_network_failures{device="pi-01"}'] == 1
    assert m['giter_state{device="pi-01",state="offline"}'] == 1


def test_the_textfile_must_be_a_prom_file(tmp_path):
    from giter_agent.config.agent_toml import from_dict
    from giter_agent.core.errors import ConfigError

    base = {"device_id": "pi-01", "state_dir": "s", "board": "generic-mock",
            "allowed_signers": "a"}
    config = from_dict({**base, "metrics": {"textfile": "/var/lib/ne/giter.prom"}},
                       base=tmp_path)
    assert str(config.metrics_textfile) == "/var/lib/ne/giter.prom"
    with pytest.raises(ConfigError, match=r"metrics\.textfile: must end in \.prom"):
        from_dict({**base, "metrics": {"textfile": "/var/lib/ne/giter.txt"}}, base=tmp_path)
