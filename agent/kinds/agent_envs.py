"""The agent's own environments: wheels laid down beside the installed package, A/B.

Called by ``kinds.agent_update`` (build, select, prune) and ``cli.boot`` (select, when
a start ends a trial); which one runs, and how, is ``state.agent_env``. In the state
directory::

    agent-envs/releases/<version>-<tree id>/lib/...   one environment: unpacked wheels
    agent-envs/current -> releases/<name>             the one selected (absent: the
                                                      installed package runs)

An environment is run by the installed package's own interpreter with its ``lib``
first on ``sys.path`` and the installed package's library folders after it
(``state.agent_env.launch_argv``): giter-agent and any library shipped as a wheel come from the
environment, everything else (dulwich, cryptography, PyYAML...) from the installed
package. Nothing in an environment is executed as a program (no shebang, no compiled
code: pure wheels only), so it needs no exec permission and survives being renamed.

An environment is built whole in ``releases/.<name>.<rand>.giter-tmp`` (each wheel
streamed from the verified tree and checked against its pin, then unpacked and
removed: ``kinds.wheels``, whose rules ``giter-bundle lint`` shares), tried
(``python -c 'main(["--version"])'`` must print the spec's version), then renamed
into place and ``releases/`` fsynced; ``current`` moves by a temp symlink renamed over it
(``kinds.release_switch.ReleaseRoot``, shared with ``Release``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from giter_agent.core.durable import temp_name
from giter_agent.core.errors import ArtifactError, Reason
from giter_agent.core.layout import AGENT_ENVS, RELEASES, link_text
from giter_agent.state import agent_env
from giter_agent.state.agent_env import ENV_VAR, LIB, launch_argv

if TYPE_CHECKING:  # loaded when an environment is opened or built: a sync that
    # touches none (every sync of other kinds) loads no zipfile, shutil or bz2/lzma
    from giter_agent.kinds.release_switch import ReleaseRoot
    from giter_agent.kinds.wheels import Wheel

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
TRY_TIMEOUT_S = 120


class AgentEnvs:
    """The environments under ``<state_dir>/agent-envs``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.folder = self.state_dir / AGENT_ENVS

    @contextlib.contextmanager
    def open(self, *, create: bool) -> Iterator[ReleaseRoot]:
        from giter_agent.kinds.release_switch import ReleaseRoot
        with ReleaseRoot.open(str(self.state_dir), (AGENT_ENVS,), create=create) as root:
            yield root

    def lib(self, name: str) -> Path:
        return agent_env.lib(self.state_dir, name)

    def selected(self) -> str | None:
        """The environment ``current`` names (None: none, or not one of ours)."""
        return agent_env.selected(self.state_dir)

    def exists(self, name: str) -> bool:
        return agent_env.exists(self.state_dir, name)

    def select(self, name: str | None, when: float) -> None:
        """Point ``current`` at environment ``name`` (None: the installed package),
        durably; ``when``: the time it is selected (the newest is kept longest)."""
        try:
            with self.open(create=name is not None) as root:
                root.flip(link_text(name) if name else None)
                if name:
                    root.touch(name, when)
        except FileNotFoundError:
            if name is not None:
                raise

    def sweep(self) -> list[str]:
        """Remove what a cut-short switch left (a temp link, a half-built environment).
        Only the state lock's holder calls it: a build in progress is its own."""
        try:
            with self.open(create=False) as root:
                return root.sweep()
        except FileNotFoundError:
            return []

    def prune(self, keep: Sequence[str | None]) -> list[str]:
        """Remove every environment but those in ``keep``, and any half-built one."""
        try:
            with self.open(create=False) as root:
                root.sweep()
                gone = [n for n in root.names() if n not in keep]
                for name in gone:
                    root.remove(name)
                return gone
        except FileNotFoundError:
            return []

    def build(self, name: str, wheels: Sequence[Wheel], artifacts: Any, version: str,
              try_it: bool = True) -> int:
        """Lay environment ``name`` down from ``wheels`` (read through ``artifacts``,
        ``history.artifacts.TreeArtifacts``) and try it; the bytes unpacked. Nothing is
        left behind on a refusal: ``ArtifactError`` (a pin that does not match, a wheel
        that is not pure or not safe, an environment that does not run as ``version``)."""
        with self.open(create=True) as root:
            root.sweep()
            staging = temp_name(name)
            os.mkdir(staging, 0o755, dir_fd=root.releases_fd)
            try:
                size = self._fill(root.releases_fd, staging, wheels, artifacts)
                if try_it:
                    self._try(self.folder / RELEASES / staging / LIB, version)
                if root.has(name):
                    root.remove(name)
                os.rename(staging, name, src_dir_fd=root.releases_fd,
                          dst_dir_fd=root.releases_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    root.remove(staging)
                raise
            os.fsync(root.releases_fd)
            return size

    @staticmethod
    def _fill(releases_fd: int, staging: str, wheels: Sequence[Wheel], artifacts: Any) -> int:
        from giter_agent.kinds.wheels import check_pin, unpack

        env_fd = os.open(staging, _DIR, dir_fd=releases_fd)
        try:
            os.mkdir(LIB, 0o755, dir_fd=env_fd)
            lib_fd = os.open(LIB, _DIR, dir_fd=env_fd)
            size = 0
            try:
                for wheel in wheels:
                    fd = os.open(wheel.filename, _NEW, 0o600, dir_fd=env_fd)
                    with os.fdopen(fd, "w+b") as fh:
                        check_pin(wheel, artifacts.copy(wheel.path, fh))
                        fh.seek(0)
                        size += unpack(wheel.filename, fh, lib_fd, artifacts.max_bytes)
                    os.unlink(wheel.filename, dir_fd=env_fd)
                os.fsync(lib_fd)
            finally:
                os.close(lib_fd)
            os.fsync(env_fd)
        finally:
            os.close(env_fd)
        return size

    @staticmethod
    def _try(lib: Path, version: str) -> None:
        """Run ``giter-agent --version`` from ``lib``: it must import and say ``version``."""
        import subprocess  # not at the top: every sync builds an AgentEnvs, few run one

        from giter_agent.core.versions import compare

        argv = launch_argv(lib, ["--version"])
        # Marked as started by the boot loader: the new version must answer itself,
        # not boot into the environment the device has selected now.
        env = {**os.environ, ENV_VAR: f"{lib.parent.name} (tried)"}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                  timeout=TRY_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ArtifactError(f"the new environment did not run: {exc}",
                                reason=Reason.ArtifactCorrupt) from None
        words = done.stdout.split()
        said = words[1] if len(words) > 1 else ""
        try:
            same = done.returncode == 0 and compare(said, version) == 0
        except ValueError:
            same = False
        if not same:
            tail = (done.stderr or done.stdout).strip()[-800:]
            raise ArtifactError(f"the new environment does not run as giter-agent {version} "
                                f"(exit {done.returncode}: {tail or 'no output'})",
                                reason=Reason.ArtifactCorrupt)
