"""Simulated devices for the network, fleet and daemon tests.

Each one is a config file, a state directory and a files root of its own, as on a
board; ``network`` is the ``[network]`` table written into its config.
"""

from __future__ import annotations

import json
from pathlib import Path

from giter_agent.config.agent_toml import load
from giter_agent.state.store import StateStore
from giter_agent.sync.agent import Agent

API = "apiVersion: giter.dev/v1alpha1\n"


def motd(root: Path, text: str, name: str = "motd") -> str:
    """A File resource writing ``text`` to ``root/<name>``."""
    return (f"{API}kind: File\nmetadata:\n  name: {name}\nspec:\n"
            f"  path: {root}/{name}\n  content: {json.dumps(text)}\n  mode: \"0644\"\n")


class NetDevice:
    def __init__(self, tmp: Path, device_id: str, signers: Path,
                 network: dict | None = None, usb_roots: list[Path] | None = None,
                 settings: dict | None = None) -> None:
        self.id = device_id
        self.dir = tmp / device_id
        self.root = self.dir / "root"
        self.root.mkdir(parents=True)
        self.config_path = self.dir / "agent.toml"
        lines = [f'device_id = "{device_id}"', 'state_dir = "state"', 'board = "generic-mock"',
                 f'allowed_signers = "{signers}"', "[files]", f'roots = ["{self.root}"]']
        if usb_roots:
            lines += ["[usb]", f"roots = {json.dumps([str(r) for r in usb_roots])}"]
        if settings:
            lines.append("[agent]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        if network:
            lines.append("[network]")
            lines += [f"{k} = {json.dumps(str(v) if isinstance(v, Path) else v)}"
                      for k, v in network.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def spec_files(self, text: str) -> dict[str, str]:
        return {f"devices/{self.id}/motd.yaml": motd(self.root, text)}

    def agent(self, **kwargs) -> Agent:
        return Agent(load(self.config_path), **kwargs)

    def sync(self, **kwargs):
        agent = self.agent()
        try:
            return agent.sync_network(**kwargs)
        finally:
            agent.close()

    def state(self):
        return StateStore(self.dir / "state").load()

    def motd(self) -> str | None:
        path = self.root / "motd"
        return path.read_text() if path.exists() else None
