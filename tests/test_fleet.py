"""A simulated fleet: many agents, each with its own state directory, syncing against
one ``git daemon`` at the same time. All must reach Ready, and the hub must end up
with every device's status ref, each at that device's own status tip: devices write
only their own ``status/<id>``, so they never contend.

The timings are printed (``pytest -s``) and noted in docs/network.md.
"""

from __future__ import annotations

import threading
import time

from support.devices import SimDevice, motd
from support.servers import GitDaemon, Hub

FLEET = 50


def test_fifty_agents_sync_concurrently_against_one_git_daemon(tmp_path, publisher):
    hub = Hub(tmp_path / "hub")
    gitd = GitDaemon(hub).start()
    try:
        devices = [SimDevice(tmp_path / "fleet", f"pi-{i:03d}", publisher.allowed_signers,
                             {"url": gitd.url, "connect_timeout_s": 60, "read_timeout_s": 120})
                   for i in range(FLEET)]
        publisher.commit("one file per device", files={
            f"devices/{d.id}/motd.yaml": motd(d.root, f"hello {d.id}\n") for d in devices})
        hub.publish(publisher)

        reports: dict[str, object] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(FLEET + 1)

        def one(device: SimDevice) -> None:
            try:
                agent = device.agent()
                start.wait()
                t0 = time.perf_counter()
                report = agent.sync_network()
                agent.close()
                reports[device.id] = (report, time.perf_counter() - t0)
            except BaseException as exc:  # reported below, with the device
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(d,)) for d in devices]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join(120)
        wall = time.perf_counter() - t0
        assert not errors, errors

        for d in devices:
            report, _ = reports[d.id]
            assert (report.outcome, report.exit_code) == ("applied", 0), (d.id, report.message)
            assert d.motd() == f"hello {d.id}\n"
        status = hub.refs()
        assert len(status) == FLEET
        for d in devices:
            assert status[f"refs/heads/status/{d.id}"] == d.state().status_tip
        each = sorted(seconds for _, seconds in reports.values())
        print(f"\n{FLEET} agents, one git daemon: wall {wall:.2f} s; per agent "
              f"median {each[len(each) // 2]:.2f} s, max {each[-1]:.2f} s")

        # A second round with nothing new: every device is up to date, nothing pushed.
        t0 = time.perf_counter()
        threads = [threading.Thread(target=lambda d=d: reports.__setitem__(
            d.id, (d.sync(), 0.0))) for d in devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        again = time.perf_counter() - t0
        assert all(r.outcome == "up-to-date" for r, _ in reports.values())
        assert hub.refs() == status
        print(f"second round (nothing new): wall {again:.2f} s")
    finally:
        gitd.stop()
