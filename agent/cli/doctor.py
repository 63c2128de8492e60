"""``giter-agent doctor``: check what a board needs before the agent can be trusted to run.

Each check looks at one thing (config, board and pin factory, trust file, device key,
state directory, clock, free disk, USB and File roots, the services allowlist) and
returns findings: ``ok``,
``warn`` (works, but a person should know) or ``fail`` (the agent will not work, or
not safely), each failure with the command that fixes it. Run by the technician, by
``scripts/install`` before it starts the service, and by the QEMU boot test.

Dependencies come in through ``Doctor`` (clock, pin factory maker, disk usage, the
agent's install time), so every verdict is tested on a laptop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giter_agent.config.agent_toml import Config, load
from giter_agent.core.errors import GiterError
from giter_agent.device.board import Board, load_board, make_pin_factory

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_FREE_MIB = 32  # below this a bundle import or a state write may fail half-way
CLOCK_SLACK_S = 300  # clocks step a little when NTP catches up; that is not an error


@dataclass(frozen=True)
class Finding:
    """One verdict: which check, ok/warn/fail, what was seen, and how to fix it."""

    check: str
    level: str
    message: str
    fix: str = ""


def _installed_at() -> float:
    # The package files are written when the agent is installed: a clock before that
    # moment is certainly wrong (a board without an RTC that booted at 1970).
    return Path(__file__).stat().st_mtime


_THIS_FILE = Path(__file__).resolve()


@dataclass
class Doctor:
    """Runs the checks for the config at ``config_path``."""

    config_path: Path
    clock: Callable[[], float] = time.time
    pin_factory_maker: Callable[[Board], Any] = make_pin_factory
    disk_usage: Callable[[Path], Any] = shutil.disk_usage
    installed_at: Callable[[], float] = _installed_at
    euid: int = -1
    # Which OS this is, for the right install command in a fix (Raspberry Pi OS ships
    # python3-lgpio, plain Debian does not).
    os_release: Path = Path("/etc/os-release")
    rpi_issue: Path = Path("/etc/rpi-issue")
    # Where this agent's code lives: the Debian package keeps it in /usr/share/giter-agent
    # on the system Python; scripts/install in a virtual environment under /opt.
    agent_path: Path = _THIS_FILE

    def __post_init__(self) -> None:
        if self.euid == -1:
            self.euid = os.geteuid()

    def run(self) -> list[Finding]:
        """Every finding, in the order a person should read them."""
        try:
            config = load(self.config_path)
        except GiterError as exc:
            return [Finding("config", FAIL, str(exc),
                            f"edit {self.config_path} (see docs/operating.md), or install "
                            "with scripts/install")]
        findings = [Finding("config", OK, f"{self.config_path}: device {config.device_id}, "
                            f"board {config.board}")]
        for name, check in (("board", self._board), ("trust file", self._trust),
                            ("state directory", self._state_dir),
                            ("device key", self._device_key), ("clock", self._clock),
                            ("disk", self._disk), ("roots", self._roots),
                            ("services", self._services)):
            try:
                findings.extend(check(config))
            except OSError as exc:
                # A file this user may not read (the service user's state, run as pi):
                # a finding with the command to run instead, never a traceback.
                findings.append(self._unreadable(name, exc))
        return findings

    def _distro(self) -> str:
        """``raspios``, ``ubuntu``, ``debian`` or ``other``, from /etc/os-release."""
        if self.rpi_issue.exists():
            return "raspios"
        try:
            text = self.os_release.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "other"
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        ident = fields.get("ID", "").strip('"')
        if ident == "raspbian":
            return "raspios"
        return ident if ident in ("ubuntu", "debian") else "other"

    def _unreadable(self, check: str, exc: OSError) -> Finding:
        from giter_agent.core.access import explain, owner, rerun_as

        argv = ["-c", str(self.config_path), "doctor"]
        if isinstance(exc, PermissionError):
            path = Path(exc.filename) if exc.filename else None
            found = owner(path) if path is not None else None
            fix = (rerun_as(found[1], "giter-agent", argv)
                   if found is not None and found[0] != self.euid else
                   f"check the permissions of {path}")
            return Finding(check, FAIL, str(explain(exc, "giter-agent", argv)), fix)
        return Finding(check, FAIL, f"{exc.filename or ''}: {exc.strerror or exc}",
                       "see the message; then run giter-agent doctor again")

    # -- checks --------------------------------------------------------------------------
    def _board(self, config: Config) -> Iterator[Finding]:
        base = config.source.resolve().parent if config.source else None
        try:
            board = load_board(config.board, base)
        except GiterError as exc:
            yield Finding("board", FAIL, str(exc), "set board = a name from board-configs/ "
                          "or the path of a board .toml")
            return
        led = (f"status LED {board.status_led} ({board.pin(board.status_led)})"
               if board.status_led else "no status LED")
        yield Finding("board", OK, f"{board.name}: {len(board.pins)} pins, {led}")
        try:
            factory = self.pin_factory_maker(board)
        except GiterError as exc:
            yield Finding("pin factory", FAIL, str(exc),
                          _factory_fix(board.pin_factory, self._distro(),
                                       packaged=DEB_CODE in self.agent_path.parents))
            return
        # Closing a factory opened only to test it cannot matter to the verdict.
        with contextlib.suppress(Exception):
            factory.close()
        yield Finding("pin factory", OK, f"{board.pin_factory} loads")

    def _trust(self, config: Config) -> Iterator[Finding]:
        from giter_agent.trust import allowed_signers

        for label, path in (("trust file", config.allowed_signers),
                            ("root keys", config.root_keys)):
            if path is None:
                continue
            try:
                keys = allowed_signers.load(path)
            except GiterError as exc:
                yield Finding(label, FAIL, str(exc), f"install the publisher's allowed_signers "
                              f"file as {path} (scripts/install --allowed-signers FILE)")
                continue
            if not keys:
                yield Finding(label, FAIL, f"{path}: no key is trusted for namespace git",
                              'each line needs a key, and namespaces="git" if it has any')
                continue
            st = path.stat()
            mode = stat.S_IMODE(st.st_mode)
            fix = f"sudo chown root:root {path} && sudo chmod 644 {path}"
            # The agent must not be able to change whom it trusts.
            if mode & 0o022:
                yield Finding(label, FAIL, f"{path} is writable by others (mode {mode:04o})",
                              fix)
            elif st.st_uid == self.euid != 0:
                yield Finding(label, WARN, f"{path} belongs to this user (uid {self.euid}), "
                              "who could change whom the agent trusts; on a board it "
                              "belongs to root", fix)
            else:
                yield Finding(label, OK, f"{path}: {len(keys)} key(s) trusted for git "
                              "signatures")

    def _state_dir(self, config: Config) -> Iterator[Finding]:
        path = config.state_dir
        if not path.exists():
            yield Finding("state directory", FAIL, f"{path} does not exist",
                          f"sudo install -d -o giter -g giter -m 700 {path}")
            return
        st = path.stat()
        if not stat.S_ISDIR(st.st_mode):
            yield Finding("state directory", FAIL, f"{path} is not a directory",
                          f"move it away; scripts/install creates {path}")
            return
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid != self.euid:
            yield Finding("state directory", FAIL if self.euid != 0 else WARN,
                          f"{path} belongs to uid {st.st_uid}, this is uid {self.euid}",
                          "run giter-agent as the service user: sudo -u giter giter-agent "
                          f"...; or sudo chown -R giter:giter {path}")
        elif mode & 0o077:
            yield Finding("state directory", FAIL, f"{path} is open to others (mode "
                          f"{mode:04o}): it holds the device key", f"chmod 700 {path}")
        elif not os.access(path, os.W_OK):
            yield Finding("state directory", FAIL, f"{path} is not writable",
                          f"chmod u+w {path}")
        else:
            yield Finding("state directory", OK, f"{path} (mode {mode:04o})")
        strays = _not_owned(path, st.st_uid)
        if strays:
            yield Finding("state directory", FAIL, f"{len(strays)} file(s) in {path} belong to "
                          f"another user, e.g. {strays[0]} (giter-agent was run as root?)",
                          f"sudo chown -R {st.st_uid}:{st.st_gid} {path}")

    def _device_key(self, config: Config) -> Iterator[Finding]:
        from giter_agent.config.agent_toml import DEVICE_KEY_FILE

        path = config.state_dir / DEVICE_KEY_FILE
        if not path.exists():
            yield Finding("device key", WARN, f"{path} does not exist yet",
                          "it is created on the first sync; `sudo -u giter giter-agent key` "
                          "creates it now and prints the line to enrol")
            return
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            yield Finding("device key", FAIL, f"{path} is readable by others (mode {mode:04o})",
                          f"chmod 600 {path}")
            return
        try:
            from giter_agent.trust.devicekey import load_or_create

            load_or_create(path)
        except (GiterError, OSError) as exc:
            yield Finding("device key", FAIL, str(exc),
                          f"restore the key from a backup, or remove {path} and enrol the "
                          "new key printed by `giter-agent key`")
            return
        yield Finding("device key", OK, f"{path}: ed25519, mode {mode:04o}")

    def _clock(self, config: Config) -> Iterator[Finding]:
        from giter_agent.core.times import rfc3339

        now = self.clock()
        floor = self.installed_at()
        if now + CLOCK_SLACK_S < floor:
            yield Finding("clock", FAIL, f"the clock says {rfc3339(now)}, before this agent "
                          f"was installed ({rfc3339(floor)}): expiry checks would be wrong",
                          "set the time (timedatectl set-time, or network time); install "
                          "fake-hwclock on a board without a real-time clock")
            return
        last = self._last_sync_time(config)
        if last is not None and now + CLOCK_SLACK_S < last:
            yield Finding("clock", FAIL, f"the clock says {rfc3339(now)}, before the last "
                          f"sync it recorded ({rfc3339(last)}): it went backwards",
                          "set the time (timedatectl set-time, or network time)")
            return
        yield Finding("clock", OK, f"{rfc3339(now)}")

    def _last_sync_time(self, config: Config) -> float | None:
        from datetime import datetime

        from giter_agent.state.store import StateStore

        try:
            state = StateStore(config.state_dir).load()
            stamp = state.last_sync.get("time")
            return datetime.fromisoformat(stamp).timestamp() if stamp else None
        except (GiterError, OSError, ValueError):
            return None  # the state directory check reports an unreadable state

    def _disk(self, config: Config) -> Iterator[Finding]:
        where = config.state_dir if config.state_dir.exists() else config.state_dir.parent
        try:
            free_mib = self.disk_usage(where).free // 2**20
        except OSError as exc:
            yield Finding("free disk", FAIL, f"{where}: {exc.strerror}", "")
            return
        cap = config.limits.max_bundle_mib
        if free_mib < MIN_FREE_MIB:
            yield Finding("free disk", FAIL, f"{free_mib} MiB free under {where}",
                          "free some space (journalctl --vacuum-size=50M, apt-get clean)")
        elif free_mib < cap:
            yield Finding("free disk", WARN, f"{free_mib} MiB free under {where}, less than "
                          f"the largest bundle allowed ([limits] max_bundle_mib = {cap})",
                          "free some space, or lower max_bundle_mib")
        else:
            yield Finding("free disk", OK, f"{free_mib} MiB free under {where}")

    def _roots(self, config: Config) -> Iterator[Finding]:
        for label, roots in (("USB root", config.usb_roots), ("File root", config.files_roots)):
            for root in roots:
                if not root.is_dir():
                    yield Finding(label, FAIL, f"{root} does not exist",
                                  f"sudo install -d -m 755 {root}" if label == "USB root" else
                                  f"sudo install -d -o giter -g giter -m 755 {root}")
                elif label == "File root" and not os.access(root, os.W_OK):
                    yield Finding(label, FAIL, f"{root} is not writable by uid {self.euid}",
                                  f"sudo chown giter:giter {root}")
                else:
                    yield Finding(label, OK, str(root))
        if not config.usb_roots:
            yield Finding("USB root", WARN, "no [usb] roots: sticks are mounted under "
                          "/media/giter by the USB trigger", 'add [usb] roots = ["/media/giter"]')


    def _services(self, config: Config) -> Iterator[Finding]:
        from giter_agent.kinds.service import CRITICAL

        services = config.services
        if not services.allowed:
            yield Finding("services", OK, "no [services] allowed: Service resources act on "
                          "no unit")
            return
        forced = f"; forced critical units: {', '.join(services.force)}" \
            if services.force else f"; critical units ({', '.join(CRITICAL[:4])}...) refused"
        yield Finding("services", OK, f"Service resources may act on "
                      f"{', '.join(services.allowed)}{forced}")
        if "*" in services.allowed or "*.service" in services.allowed:
            yield Finding("services", WARN, "[services] allowed matches every unit: a signed "
                          "spec may stop any service that is not critical",
                          "list the units the fleet manages, e.g. \"kiosk-*.service\"")


def _not_owned(path: Path, uid: int, limit: int = 2000) -> list[Path]:
    """Files under ``path`` owned by someone else (bounded walk: repos can be large)."""
    found: list[Path] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            seen += 1
            p = Path(dirpath) / name
            try:
                if p.lstat().st_uid != uid:
                    found.append(p)
            except OSError:
                continue
            if seen >= limit or len(found) >= 5:
                return found
    return found


DEB_CODE = Path("/usr/share/giter-agent")  # the Debian package's code (debian/rules)


def _factory_fix(factory: str, distro: str = "raspios", *, packaged: bool = False) -> str:
    """The command that installs ``factory``'s library on ``distro`` (``Doctor._distro``),
    for this install: the Debian package (``packaged``: the system Python) or
    ``scripts/install``'s virtual environment."""
    if factory == "lgpio" and distro not in ("raspios", "ubuntu"):
        # Plain Debian has no python3-lgpio: PyPI's lgpio wheels carry the library.
        if packaged:
            return ("sudo apt-get install python3-pip && sudo pip3 install "
                    "--break-system-packages lgpio (this OS has no python3-lgpio package; "
                    "the Debian package runs on the system Python), and check the service "
                    "user is in the gpio group (id giter)")
        return ("sudo /opt/giter-agent/bin/pip install lgpio (this OS has no python3-lgpio "
                "package), and check the service user is in the gpio group (id giter)")
    return {
        "lgpio": "sudo apt-get install python3-lgpio, and check the service user is in the "
                 "gpio group (id giter)",
        "rpigpio": "sudo apt-get install python3-rpi.gpio",
        "pigpio": "sudo apt-get install pigpio python3-pigpio && sudo systemctl enable --now "
                  "pigpiod",
    }.get(factory, "use pin_factory = \"mock\" on a machine without GPIO")


def render(findings: list[Finding]) -> str:
    """The report a person reads: one line per finding, a fix under each problem."""
    marks = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}
    lines = []
    for f in findings:
        lines.append(f"{marks[f.level]}  {f.check:<16} {f.message}")
        if f.level != OK and f.fix:
            lines.append(f"      {'':<16} fix: {f.fix}")
    fails = sum(f.level == FAIL for f in findings)
    warns = sum(f.level == WARN for f in findings)
    if fails:
        lines.append(f"{fails} problem(s) to fix" + (f", {warns} warning(s)" if warns else ""))
    else:
        lines.append("all checks passed" + (f" ({warns} warning(s))" if warns else ""))
    return "\n".join(lines)
