"""``giter-bundle lint`` refuses an ``AgentUpdate`` the way the device would, before it ships.

Pins against the wheels' bytes, the giter-agent wheel's version against ``version``,
wheels that are not pure, pins that name no file, wheels a partial set of pins leaves
unchecked: each is one line naming the resource, with the reason the device would report.
The rules are the device's own (``giter_agent.kinds.wheels``), so the last test runs the
device's kind on the same tree and expects lint's first error to be its answer.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import yaml
from dulwich.object_store import DiskObjectStore
from support.fleet import API, Fleet
from support.kinds import build_tree, make_ctx

from giter_agent.kinds import load_kinds
from giter_bundle.lint import lint_tree

FOLDER = "artifacts/agent-0.2.0"
AGENT = "giter_agent-0.2.0-py3-none-any.whl"
LIB = "tinylib-1.4-py3-none-any.whl"


def wheel(dist: str, *, pure: bool = True, symlink: bool = False) -> bytes:
    """A small wheel as setuptools lays it out: a module and its dist-info."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(f"{dist}/__init__.py", "__version__ = '0.2.0'\n")
        z.writestr(f"{dist}-0.2.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: "
                   f"{'true' if pure else 'false'}\nTag: py3-none-any\n")
        if symlink:
            info = zipfile.ZipInfo(f"{dist}/passwd")
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def update(pins: list[str] | None = None, version: str = "0.2.0") -> str:
    text = f"{API}kind: AgentUpdate\nmetadata: {{name: agent}}\nspec:\n  version: {version}\n" \
           f"  wheels: {FOLDER}\n"
    if pins:
        text += "  sha256:\n" + "".join(f"  - {line}\n" for line in pins)
    return text


def put(fleet: Fleet, files: dict[str, bytes], spec: str) -> None:
    for name, data in files.items():
        path = fleet.root / FOLDER / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    fleet.write("groups/lobby/agent.yaml", spec)


def agent_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("groups/lobby/agent.yaml")]


def test_a_pin_is_checked_against_the_wheel_s_bytes(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    agent, lib = wheel("giter_agent"), wheel("tinylib")
    put(fleet, {AGENT: agent, LIB: lib},
        update([f"{sha(b'something else')}  {AGENT}", f"{sha(lib)}  {LIB}",
                f"{sha(lib)}  gone-1.0-py3-none-any.whl"]))
    code, out = fleet.cli("lint")
    assert code == 1, out
    assert agent_lines(out) == [
        f"groups/lobby/agent.yaml: ArtifactMissing: spec.sha256 pins "
        f"gone-1.0-py3-none-any.whl, not in {FOLDER}; the update is refused",
        f"groups/lobby/agent.yaml: ArtifactMismatch: {FOLDER}: {FOLDER}/{AGENT} has sha256 "
        f"{sha(agent)}, but the spec pins {sha(b'something else')}; the update is refused",
    ]


def test_a_wheel_a_partial_set_of_pins_leaves_out_is_a_warning(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    agent, lib = wheel("giter_agent"), wheel("tinylib")
    put(fleet, {AGENT: agent, LIB: lib}, update([f"{sha(agent)}  {AGENT}"]))
    code, out = fleet.cli("lint")
    assert code == 0, out
    assert agent_lines(out) == [
        f"groups/lobby/agent.yaml: warning: UnpinnedWheel: {FOLDER}/{LIB} has no line in "
        "spec.sha256, so devices install it unchecked; add its `sha256sum` line"]


def test_the_agent_wheel_s_version_must_be_the_spec_s(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    put(fleet, {"giter_agent-0.3.0-py3-none-any.whl": wheel("giter_agent")}, update())
    code, out = fleet.cli("lint")
    assert code == 1, out
    assert agent_lines(out) == [
        f"groups/lobby/agent.yaml: InvalidWheel: {FOLDER}/giter_agent-0.3.0-py3-none-any.whl "
        "is giter-agent 0.3.0, not 0.2.0; the update is refused"]


def test_wheels_that_are_not_pure_or_not_safe_are_refused(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    put(fleet, {AGENT: wheel("giter_agent"),
                "fastlib-1.0-cp311-cp311-linux_aarch64.whl": wheel("fastlib"),
                "oddlib-1.0-py3-none-any.whl": wheel("oddlib", pure=False),
                "linklib-1.0-py3-none-any.whl": wheel("linklib", symlink=True),
                "notes.txt": b"not a wheel\n"}, update())
    code, out = fleet.cli("lint")
    assert code == 1, out
    assert agent_lines(out) == [
        f"groups/lobby/agent.yaml: InvalidWheel: {FOLDER}/fastlib-1.0-cp311-cp311-linux_"
        "aarch64.whl is not a pure-Python wheel (py3-none-any); the update is refused",
        f"groups/lobby/agent.yaml: InvalidWheel: {FOLDER}/notes.txt is not a wheel at the "
        f"top of {FOLDER}; the update is refused",
        f"groups/lobby/agent.yaml: UnsafeTreeEntry: {FOLDER}: linklib-1.0-py3-none-any.whl: "
        "entry 'linklib/passwd' is a symlink; the update is refused",
        f"groups/lobby/agent.yaml: UnsafeTreeEntry: {FOLDER}: oddlib-1.0-py3-none-any.whl: "
        "is not Root-Is-Purelib; the update is refused",
    ]


def test_a_committed_tree_is_streamed_from_its_pack(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    agent = wheel("giter_agent")
    put(fleet, {AGENT: agent}, update([f"{sha(agent)}  {AGENT}"]))
    assert agent_lines(fleet.ok("lint")) == []
    fleet.ok("commit", "-m", "agent 0.2.0")
    first = fleet.rev()
    fleet.git("gc", "-q")  # the wheel in a pack, read back by the pack reader
    put(fleet, {AGENT: wheel("giter_agent", pure=False)}, update([f"{sha(agent)}  {AGENT}"]))
    fleet.ok("commit", "-m", "agent 0.2.0, rebuilt", "--no-lint")
    code, out = fleet.cli("lint", "--rev", "main")
    assert code == 1, out
    assert [line.split(": ")[1] for line in agent_lines(out)] == ["ArtifactMismatch",
                                                                  "UnsafeTreeEntry"]
    code, out = fleet.cli("lint", "--rev", first)
    assert code == 0 and agent_lines(out) == [], out


def test_lint_s_first_error_is_what_the_device_reports(tmp_path):
    kinds = load_kinds()
    lib = wheel("tinylib")
    cases = [
        {AGENT: wheel("giter_agent"), LIB: lib},
        {"giter_agent-0.3.0-py3-none-any.whl": wheel("giter_agent")},
        {AGENT: wheel("giter_agent"), "x.txt": b"x"},
        {AGENT: wheel("giter_agent"), "linklib-1.0-py3-none-any.whl": wheel("linklib",
                                                                           symlink=True)},
        {AGENT: wheel("giter_agent"), "fastlib-1.0-cp311-cp311-linux_armv7l.whl": lib},
    ]
    for i, files in enumerate(cases):
        spec = update([f"{sha(b'other')}  {LIB}"] if LIB in files else None).encode()
        objects = tmp_path / f"objects-{i}"
        objects.mkdir()
        store = DiskObjectStore.init(objects)
        tree = build_tree(store, {**{f"{FOLDER}/{n}": (d, 0o100644) for n, d in files.items()},
                                  "groups/lobby/agent.yaml": (spec, 0o100644)})
        errors = [f for f in lint_tree(store, tree, kinds)
                  if f.path == "groups/lobby/agent.yaml" and f.error]
        assert errors, files
        device = _device_answer(spec, store, tree, tmp_path / f"device-{i}")
        assert (errors[0].reason, errors[0].message) == device


def _device_answer(spec_text: bytes, store, tree: bytes, where: Path) -> tuple[str, str]:
    """The reason and message the device's ``AgentUpdate`` reports for this tree."""
    from giter_agent.history.artifacts import TreeArtifacts
    from giter_agent.kinds.agent_envs import AgentEnvs
    from giter_agent.kinds.agent_update import AgentUpdateKind
    from giter_agent.state.update_journal import FILE, UpdateJournal

    where.mkdir()
    device = AgentUpdateKind(running=("0.1.0", None))
    spec = device.validate(yaml.safe_load(spec_text)["spec"])
    ctx = make_ctx(where, None, update_journal=UpdateJournal(where / FILE),
                   agent_envs=AgentEnvs(where))
    ctx.artifacts = TreeArtifacts(store, tree, max_bytes=128 * 2**20)
    outcome = device.apply("AgentUpdate/agent", spec, ctx)
    assert not (where / "agent-envs" / "current").exists()
    return outcome.reason, outcome.message


def test_wheels_and_release_files_over_the_default_cap_are_warnings(tmp_path, publisher_key,
                                                                    monkeypatch):
    import functools
    import os

    from giter_agent.config.agent_toml import Limits
    from giter_bundle import artifacts

    # Devices with [limits] max_artifact_mib = 1 (the default, 128, is too big to build
    # here): lint warns as for any other artifact; a board with larger limits takes it.
    monkeypatch.setattr(artifacts, "Limits", functools.partial(Limits, max_artifact_mib=1))
    fleet = Fleet(tmp_path, publisher_key)
    big = io.BytesIO()
    with zipfile.ZipFile(big, "w") as z:
        z.writestr("giter_agent-0.2.0.dist-info/WHEEL", "Root-Is-Purelib: true\n")
        z.writestr("giter_agent/blob.bin", os.urandom(3 * 2**19))
    put(fleet, {AGENT: big.getvalue()}, update())
    (fleet.root / "artifacts/app").mkdir()
    (fleet.root / "artifacts/app/data.bin").write_bytes(os.urandom(3 * 2**19))
    fleet.write("groups/lobby/app.yaml", f"{API}kind: Release\nmetadata: {{name: app}}\n"
                "spec: {source: artifacts/app, root: /srv/giter/app}\n")
    code, out = fleet.cli("lint")
    assert code == 0, out
    warned = sorted(line for line in out.splitlines() if "ArtifactTooLarge" in line)
    assert [line.split(": ")[0] for line in warned] == ["groups/lobby/agent.yaml"] * 2 + [
        "groups/lobby/app.yaml"]
    assert "artifacts/app/data.bin: " in warned[2] and "over the devices' default cap of " \
        "1 MiB" in warned[2]
    assert f"{AGENT} unpacks to more than [limits] max_artifact_mib (1 MiB)" in "".join(warned)
