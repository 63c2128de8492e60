"""A synthetic fleet in an exchange repository: N enrolled devices, each with a status history.

For the scaling benchmarks and the report's example page, where running N real agents
would measure the agents rather than the publisher's tools. Everything is made by the
project's own writers, so the tools read it exactly as they read a real fleet:

- ``giter-bundle init`` lays out the repository with a publisher key;
- one signed commit enrols every device (``EnrolledDevice.files``: key + groups) and
  adds the resources of group ``all`` (a ``File`` and a CPU-temperature ``Sensor``);
  then ``spec_commits - 1`` signed commits each change the File;
- per device, ``reports`` status commits written by the agent's one status writer
  (``giter_agent.status.documents``: ``status_files``, ``make_status_commit``), signed
  with the device's own ed25519 key, each observing one of the newest spec commits;
  the Sensor's status carries a reading and its window (min/max/mean) as the agent
  reports it;
- ``refs/heads/status/<id>`` at each device's newest report.

A few devices are made unusual so tables and pages have something to show: one is
never Ready (its File is failing), one observed a spec commit that is not on the
branch (a fork), and one never reported.

    python3 bench/synthetic_fleet.py DIR --devices 12 --reports 40   # e.g. for the report
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
API = "apiVersion: giter.dev/v1alpha1\n"
T0 = 1_790_000_000  # a fixed epoch (2026-09-21), so every run makes the same commits


def _motd(n: int) -> bytes:
    return (f"{API}kind: File\nmetadata: {{name: motd, generation: {n}}}\n"
            f"spec: {{path: /srv/giter/motd, content: \"release {n}\\n\"}}\n").encode()


TEMP = (f"{API}kind: Sensor\nmetadata: {{name: cpu-temp}}\n"
        "spec: {source: cpu-temperature, interval: 10, deadband: 2}\n").encode()


def _rfc3339(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _records(spec_tree_files: dict[str, Any], ready: bool, temp: float, spread: float,
             at: float, spec_hex: str) -> dict[str, Any]:
    from giter_agent.spec.resources import load_yaml
    from giter_agent.state.records import ResourceRecord

    cond_time = _rfc3339(at)
    motd = load_yaml(spec_tree_files["groups/all/motd.yaml"])
    sensor = load_yaml(spec_tree_files["groups/all/cpu-temp.yaml"])
    ready_cond = {"type": "Ready", "status": "True" if ready else "False",
                  "reason": "Applied" if ready else "WriteFailed",
                  "message": "" if ready else "/srv/giter: read-only file system",
                  "lastTransitionTime": cond_time}
    plain = {
        "File/motd": {"path": "groups/all/motd.yaml", "document": motd, "status": {
            "observedGeneration": motd["metadata"]["generation"], "specCommit": spec_hex,
            "conditions": [ready_cond],
            "observed": {"path": "/srv/giter/motd"}}},
        "Sensor/cpu-temp": {"path": "groups/all/cpu-temp.yaml", "document": sensor, "status": {
            "specCommit": spec_hex,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Reading",
                            "message": "", "lastTransitionTime": cond_time}],
            "observed": {"source": "cpu-temperature", "value": round(temp, 3), "unit": "°C",
                         "time": _rfc3339(at), "window": {
                             "since": _rfc3339(at - 900), "samples": 90,
                             "min": round(temp - spread, 3), "max": round(temp + spread, 3),
                             "mean": round(temp + spread / 4, 3)}}}},
    }
    return {key: ResourceRecord.from_plain(rec) for key, rec in plain.items()}


def make_fleet(root: Path, devices: int, *, reports: int = 3, spec_commits: int = 20,
               seed: int = 1, quiet: bool = False, oddities: bool = True) -> dict[str, Any]:
    """Make the fleet at ``root/fleet``; returns paths and facts for the caller."""
    from dulwich.objects import Commit

    from giter_agent.history.store import History
    from giter_agent.history.tree import replace_files
    from giter_agent.status.documents import make_status_commit, status_files
    from giter_agent.trust import sshsig
    from giter_agent.trust.signed_commit import sign_commit
    from giter_bundle.enrolment import EnrolledDevice
    from giter_bundle.publisher import PublisherRepo

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    pub_key = root / "publisher_ed25519"
    if not pub_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "publisher",
                        "-f", str(pub_key)], check=True)
    fleet = root / "fleet"
    subprocess.run([sys.executable, "-m", "giter_bundle.cli", "init", str(fleet),
                    "--signing-key", str(pub_key), "--author", "Ops <ops@example.invalid>"],
                   check=True, capture_output=True)
    names = [f"dev-{i:05d}" for i in range(devices)]
    keys = {n: sshsig.generate_ed25519() for n in names}
    files: dict[str, bytes] = {}
    for n in names:
        files.update(EnrolledDevice(n, sshsig.public_key_of(keys[n]), ("all",)).files())
    files["groups/all/motd.yaml"] = _motd(1)
    files["groups/all/cpu-temp.yaml"] = TEMP
    from giter_bundle import signing

    history = History(fleet / ".git")
    publisher = PublisherRepo(fleet / ".git", signing.load_key(pub_key), history=history,
                              identity="Ops <ops@example.invalid>")
    specs = [publisher.commit(files, f"Enrol {devices} devices", now=T0)]
    for i in range(2, spec_commits + 1):
        specs.append(publisher.commit({"groups/all/motd.yaml": _motd(i)}, f"Release {i}",
                                      now=T0 + i * 3600))
    store = history.object_store
    spec_files = {sha: {p: store[store[sha].tree].lookup_path(store.__getitem__, p.encode())[1]
                        for p in ("groups/all/motd.yaml", "groups/all/cpu-temp.yaml")}
                  for sha in specs}
    spec_files = {sha: {p: store[blob].data for p, blob in v.items()}
                  for sha, v in spec_files.items()}
    fork = None
    if oddities and devices >= 3:
        # A spec commit on no branch: what a device would report after a rewritten main.
        c = Commit()
        c.tree, c.parents = store[specs[-2]].tree, [specs[-2]]
        c.author = c.committer = b"Ops <ops@example.invalid>"
        c.author_time = c.commit_time = T0 + 10**6
        c.author_timezone = c.commit_timezone = 0
        c.message = b"A rewritten release\n"
        sign_commit(c, publisher.key)
        store.add_object(c)
        fork = c.id
        spec_files[fork] = spec_files[specs[-2]]
    tips: dict[str, bytes] = {}
    batch: list[tuple[Any, None]] = []

    class Collect:
        """Objects go to one pack per batch, not a loose file each."""

        def __init__(self) -> None:
            self.pending: dict[bytes, Any] = {}

        def add_object(self, obj: Any) -> None:
            self.pending[obj.id] = obj

        def __getitem__(self, sha: bytes) -> Any:
            return self.pending[sha] if sha in self.pending else store[sha]

        def __contains__(self, sha: bytes) -> bool:
            return sha in self.pending or sha in store

    span = max(1, spec_commits)
    end = T0 + span * 3600
    for k, n in enumerate(names):
        if oddities and devices >= 3 and k == devices - 1:
            continue  # never reported
        collect = Collect()
        prev: bytes | None = None
        base = 45 + rng.uniform(-8, 8)
        broken = oddities and devices >= 3 and k == 1
        for r in range(reports):
            at = end - (reports - r) * 900 - rng.randint(0, 60)
            progress = (r + 1) / reports
            spec = specs[min(len(specs) - 1, int(progress * (len(specs) - 1)))]
            if r == reports - 1 and rng.random() < 0.1:
                spec = specs[max(0, len(specs) - 3)]  # lagging: two releases behind
            if oddities and fork is not None and k == 2 and r == reports - 1:
                spec = fork
            temp = base + 6 * math.sin(r / 5 + k) + rng.uniform(-1, 1)
            ready = not broken or r < reports // 2
            recs = _records(spec_files[spec], ready, temp, 1 + rng.random(), at, spec.decode())
            summary = {"appliedCommit": spec.decode(), "refused": [], "invalid": [],
                       "notReady": [] if ready else ["File/motd"], "conditions": []}
            tree = replace_files(collect, store[spec].tree,
                                 status_files(n, recs, summary))
            prev = make_status_commit(collect, spec_commit=spec, previous=prev, tree=tree,
                                      device_id=n, message=f"status: report {r + 1}",
                                      sign=lambda c, key=keys[n]: sign_commit(c, key),
                                      now=int(at)) or prev
        batch.extend((o, None) for o in collect.pending.values())
        assert prev is not None
        tips[n] = prev
        if len(batch) > 20000:
            store.add_objects(batch)
            batch = []
        if not quiet and (k + 1) % 1000 == 0:
            print(f"  {k + 1}/{devices} devices", file=sys.stderr)
    if batch:
        store.add_objects(batch)
    for n, tip in tips.items():
        history.set_ref(f"refs/heads/status/{n}".encode(), None, tip)
    history.close()
    return {"fleet": fleet, "publisher_key": pub_key, "devices": names, "tips": tips,
            "specs": specs, "keys": keys}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--devices", type=int, default=12)
    p.add_argument("--reports", type=int, default=40)
    p.add_argument("--spec-commits", type=int, default=6)
    args = p.parse_args()
    made = make_fleet(args.dir, args.devices, reports=args.reports,
                      spec_commits=args.spec_commits)
    print(made["fleet"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
