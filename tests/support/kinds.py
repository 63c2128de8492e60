"""Helpers for the kind and reconcile tests: resource documents, a context, a clock.

Documents are real block YAML (``support.resources.doc``), so a test states a spec as
a Python dict and the agent reads it as an operator would have written it. The context
runs on gpiozero mock pins, a temp files root and a temp sysfs; the clock is a settable
fake, so time never passes by accident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from giter_agent.device.board import load_board
from giter_agent.device.outputs import HeldOutputs
from giter_agent.kinds.base import Context
from giter_agent.spec.resources import SpecSet, select
from giter_agent.state.records import ResourceRecord
from support.resources import API, doc

__all__ = ["API", "T0", "Clock", "Rig", "build_tree", "condition", "doc", "make_ctx", "ready",
           "specset", "tree_artifacts"]

T0 = 1_800_000_000.0


def specset(*docs: bytes, folder: str = "devices/d") -> SpecSet:
    """A spec set from documents, each in its own file named after its resource."""
    files = []
    for i, data in enumerate(docs):
        files.append((f"{folder}/r{i:04d}.yaml", data))
    return select(files)


def build_tree(store: Any, files: dict[str, tuple[bytes, int]]) -> bytes:
    """A git tree of ``files`` (path -> (content, mode)) written into a dulwich object
    store, subfolders made as needed (a symlink is mode 0o120000 and its target)."""
    from dulwich.objects import Blob, Tree

    nested: dict = {}
    for path, entry in files.items():
        node = nested
        *folders, name = path.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = entry

    def write(node: dict) -> bytes:
        tree = Tree()
        for name, entry in node.items():
            if isinstance(entry, dict):
                tree.add(name.encode(), 0o040000, write(entry))
            else:
                blob = Blob.from_string(entry[0])
                store.add_object(blob)
                tree.add(name.encode(), entry[1], blob.id)
        store.add_object(tree)
        return tree.id

    return write(nested)


class Clock:
    """A fake clock: ``clock()`` is ``now``; ``advance(s)`` moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def make_ctx(tmp_path: Path, factory: Any, clock: Clock | None = None, **extra: Any) -> Context:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    sysfs = tmp_path / "sys"
    sysfs.mkdir(exist_ok=True)
    ctx = Context(board=load_board("generic-mock"), files_roots=(root,),
                  pin_factory_maker=lambda board: factory, clock=clock or Clock(),
                  sysfs=sysfs, **extra)
    if ctx.outputs is None:
        ctx.outputs = HeldOutputs(lambda: ctx.pin_factory)
    return ctx


def condition(record: ResourceRecord, ctype: str = "Ready") -> dict[str, Any] | None:
    for cond in record.status.get("conditions", []):
        if cond["type"] == ctype:
            return cond
    return None


def ready(record: ResourceRecord) -> tuple[bool, str]:
    cond = condition(record)
    assert cond is not None
    return cond["status"] == "True", cond["reason"]


class Rig:
    """A device with a config file, fed signed specs by a real-git ``Publisher``.

    ``publish`` commits resource files under ``devices/<id>/`` (None removes one),
    ``bundle`` writes the branch as a bundle, ``agent`` builds an ``Agent`` with a
    fake clock and mock pins, ``cli`` runs ``giter-agent -c agent.toml ...``.
    """

    def __init__(self, tmp_path: Path, publisher: Any, device_id: str = "pi-01",
                 extra_config: str = "") -> None:
        self.id = device_id
        self.publisher = publisher
        self.dir = tmp_path / device_id
        self.root = self.dir / "root"
        self.root.mkdir(parents=True)
        self.state_dir = self.dir / "state"
        self.config = self.dir / "agent.toml"
        self.config.write_text(
            f'device_id = "{device_id}"\nstate_dir = "state"\nboard = "generic-mock"\n'
            f'allowed_signers = "{publisher.allowed_signers}"\n'
            f'[files]\nroots = ["{self.root}"]\n{extra_config}')
        self.bundles = 0

    def publish(self, files: dict[str, bytes | None], message: str = "spec") -> str:
        for name, data in files.items():
            path = self.publisher.root / "devices" / self.id / name
            if data is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        return self.publisher.commit(message)

    def bundle(self) -> Path:
        self.bundles += 1
        return self.publisher.bundle(self.dir / f"spec-{self.bundles}.bundle")

    def agent(self, clock: Any = None, factory: Any = None) -> Any:
        from giter_agent.config.agent_toml import load
        from giter_agent.sync.agent import Agent

        kwargs: dict[str, Any] = {"clock": clock or Clock()}
        if factory is not None:
            kwargs["pin_factory_maker"] = lambda board: factory
        return Agent(load(self.config), **kwargs)

    def cli(self, *args: Any) -> int:
        from giter_agent.cli.main import main

        return main(["-c", str(self.config), *map(str, args)])

    def state(self) -> Any:
        from giter_agent.state.store import StateStore

        return StateStore(self.state_dir).load()

    def status_commits(self) -> list[str]:
        """The device's status commits, newest first (first-parent history)."""
        from support.git import run

        tip = self.state().status_tip
        if not tip:
            return []
        # Spec history (refs/heads/main) is reachable too, through the second parents.
        out = run("git", "--git-dir", self.state_dir / "repo.git", "rev-list",
                  "--first-parent", tip, "--not", "refs/heads/main").stdout.decode()
        return out.split()

    def show(self, path: str) -> str:
        from support.git import run

        return run("git", "--git-dir", self.state_dir / "repo.git", "show",
                   f"{self.state().status_tip}:{path}").stdout.decode()


def tree_artifacts(store: Any, files: dict[str, tuple[bytes, int]],
                   max_bytes: int = 128 * 2**20) -> Any:
    """``Context.artifacts`` for a tree of ``files`` (``build_tree``) written into
    ``store``, a ``DiskObjectStore`` (the artifacts are streamed from its files), as the
    applier hands it to the kinds (``history.artifacts.TreeArtifacts``)."""
    from giter_agent.history.artifacts import TreeArtifacts

    return TreeArtifacts(store, build_tree(store, files), max_bytes=max_bytes)
