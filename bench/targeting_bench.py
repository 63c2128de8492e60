"""Benchmark: what fleet targeting costs a device per pass, against the plain folder read.

Builds, with git, a spec repository holding N resources for one device, in two shapes:
  - plain: all N in ``devices/<id>/`` (what a device read before labels existed);
  - fleet: N/2 in ``devices/<id>/`` and N in ``fleet/`` with selectors (half match the
    device), a ``${device.id}``/``${labels.*}``/``${values.*}`` placeholder in each,
    values files per device, per label and defaults, and a rollout holding N/10 files
    at a baseline commit.
Both give the device N resources. For each it times ``giter_agent.spec.targeting.
read_device_spec`` (the agent's one read path) over the same on-disk object store, best
CPU time of R runs, and the peak Python allocation (tracemalloc), and prints fleet/plain ratios.
Then the publisher's side: ``lint`` and ``rollout`` target every enrolled device from
one tree; the CPU time for D devices over the fleet tree, each file parsed once (the
parse memo they pass) against parsed per device.

Run from the repository root:  python3 bench/targeting_bench.py [--resources 200]
Used by hand and for docs/performance.md; nothing imports it.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

DEVICE = "pi-bench"
LABELS = {"site": "north", "hw": "pi4"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env={"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x",
                                          "GIT_COMMITTER_NAME": "b",
                                          "GIT_COMMITTER_EMAIL": "b@x", "HOME": "/nonexistent",
                                          "PATH": "/usr/bin:/bin"}).stdout.strip()


def resource(name: str, content: str, selector: str = "") -> str:
    return (f"apiVersion: giter.dev/v1alpha1\nkind: File\nmetadata:\n  name: {name}\n"
            f"{selector}spec:\n  path: /srv/giter/{name}\n  content: \"{content}\\n\"\n")


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def build(root: Path, n: int, fleet: bool) -> tuple[Path, str]:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    files: dict[str, str] = {}
    if not fleet:
        files = {f"devices/{DEVICE}/r{i}.yaml": resource(f"r{i}", f"plain {i}")
                 for i in range(n)}
        write(root, files)
        git(root, "add", "-A")
        git(root, "commit", "-qm", "plain")
        return root, git(root, "rev-parse", "HEAD")
    labels = "".join(f"    {k}: {v}\n" for k, v in LABELS.items())
    files[f".giter/devices/{DEVICE}.yaml"] = (
        "apiVersion: giter.dev/v1alpha1\nkind: Device\nmetadata: {name: " + DEVICE
        + "}\nspec:\n  groups: []\n  labels:\n" + labels)
    files["values/defaults.yaml"] = "greeting: hello\nport: 80\n"
    files["values/labels/site/north.yaml"] = "greeting: morning\n"
    files[f"values/devices/{DEVICE}.yaml"] = "port: 8080\n"
    for i in range(n // 2):
        files[f"devices/{DEVICE}/d{i}.yaml"] = resource(
            f"d{i}", f"${{device.id}} {i} ${{values.port}}")
    for i in range(n):
        site = "north" if i % 2 == 0 else "south"
        selector = f"  selector:\n    matchLabels: {{site: {site}}}\n"
        files[f"fleet/f{i}.yaml"] = resource(
            f"f{i}", f"${{labels.site}} ${{values.greeting}} v1 {i}", selector)
    write(root, files)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "baseline")
    baseline = git(root, "rev-parse", "HEAD")
    governed = [f"fleet/f{i}.yaml" for i in range(0, n, 10)]
    for path in governed:
        (root / path).write_text((root / path).read_text().replace(" v1 ", " v2 "))
    (root / "rollouts").mkdir()
    (root / "rollouts/r.yaml").write_text(
        "apiVersion: giter.dev/v1alpha1\nkind: Rollout\nmetadata: {name: r}\nspec:\n"
        f"  baseline: \"{baseline}\"\n  resources: [{', '.join(governed)}]\n"
        "  waves:\n    - {name: canary, selector: {matchLabels: {ring: canary}}}\n"
        "    - {name: all, percent: 100}\n  openWaves: 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "rollout")
    return root, git(root, "rev-parse", "HEAD")


def measure(repo: Path, commit: str, runs: int) -> tuple[float, int, int]:
    """(best seconds, peak bytes, resources) of the agent's read of ``commit``."""
    from dulwich.object_store import DiskObjectStore

    from giter_agent.history.objects import read_commit
    from giter_agent.spec.targeting import read_device_spec

    store = DiskObjectStore(str(repo / ".git" / "objects"))
    tree = read_commit(store, commit.encode()).tree
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()  # CPU: other load on the host does not move it
        specset = read_device_spec(store, tree, DEVICE, ())
        best = min(best, time.process_time() - start)
    tracemalloc.start()
    specset = read_device_spec(store, tree, DEVICE, ())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    store.close()
    assert not specset.invalid, specset.invalid[:3]
    return best, peak, len(specset.resources)


def publisher(repo: Path, commit: str, devices: int) -> tuple[float, float]:
    """(CPU s without the parse memo, CPU s with it) to target ``devices`` devices."""
    from dulwich.object_store import DiskObjectStore

    from giter_agent.history.objects import read_commit
    from giter_agent.spec.targeting import target

    store = DiskObjectStore(str(repo / ".git" / "objects"))
    tree = read_commit(store, commit.encode()).tree
    out = []
    for memo in (None, {}):
        start = time.process_time()
        for n in range(devices):
            target(store, tree, f"pi-{n}", (), parsed=memo)
        out.append(time.process_time() - start)
    store.close()
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resources", type=int, default=200)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--devices", type=int, default=300)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain = measure(*build(Path(tmp) / "plain", args.resources, False), args.runs)
        built = build(Path(tmp) / "fleet", args.resources, True)
        fleet = measure(*built, args.runs)
        each, memo = publisher(*built, args.devices)
    print(f"resources for the device: plain {plain[2]}, fleet {fleet[2]}")
    print(f"plain  folder read : {plain[0] * 1000:8.1f} ms CPU  peak {plain[1] / 1024:6.0f} KiB")
    print(f"fleet  targeting   : {fleet[0] * 1000:8.1f} ms CPU  peak {fleet[1] / 1024:6.0f} KiB")
    print(f"ratio fleet/plain  : time {fleet[0] / plain[0]:.2f}x  "
          f"peak {fleet[1] / plain[1]:.2f}x")
    print(f"publisher, {args.devices} devices: parsed per device {each:.2f} s CPU, parsed "
          f"once {memo:.2f} s CPU ({each / memo:.1f}x less)")


if __name__ == "__main__":
    main()
