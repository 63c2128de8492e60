"""Simulated devices: one class for every test that needs a board.

Each one is a config file, a state directory and a files root of its own, as on a
board; ``network`` is the ``[network]`` table written into its config, ``usb_roots``
its ``[usb]`` roots, ``settings`` its ``[agent]`` section.
"""

from __future__ import annotations

import json
from pathlib import Path

from giter_agent.cli.main import main
from giter_agent.config.agent_toml import load
from giter_agent.state.store import StateStore
from giter_agent.sync.agent import Agent
from support.resources import motd

__all__ = ["SimDevice", "motd"]


class SimDevice:
    """One simulated board."""

    def __init__(self, tmp: Path, device_id: str, signers: Path,
                 network: dict | None = None, usb_roots: list[Path] | None = None,
                 settings: dict | None = None, groups: tuple[str, ...] | list[str] = ()
                 ) -> None:
        self.id = device_id
        self.dir = tmp / device_id
        self.root = self.dir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "agent.toml"
        lines = [f'device_id = "{device_id}"', 'state_dir = "state"', 'board = "generic-mock"',
                 f'allowed_signers = "{signers}"', f"groups = {json.dumps(list(groups))}",
                 "[files]", f'roots = ["{self.root}"]']
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
        self.config = self.config_path

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

    def cli(self, *args: str | Path) -> int:
        """``giter-agent -c <config> ARGS`` in this process; its exit code."""
        return main(["-c", str(self.config_path), *map(str, args)])

    def snapshot(self) -> dict:
        """What a refusal must leave alone: accepted and applied spec, each resource's
        applied spec and readiness, and every file under the root."""
        s = self.state()
        files = {str(p): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}
        applied = {key: (rec.spec, rec.status["conditions"][0]["status"],
                         rec.status.get("specCommit"))
                   for key, rec in s.resources.items()}
        return {"accepted": s.accepted, "applied": s.applied, "resources": applied,
                "files": files}
