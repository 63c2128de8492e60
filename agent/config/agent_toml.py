"""The one place that reads the agent's configuration (``giter-agent -c agent.toml``).

Relative paths in the file are resolved against the file's own folder, so a config
and its allowed_signers can travel together. Every unknown key and every bad value is
a ``ConfigError`` that names the file and the key, because the person reading it is
usually standing next to a board with a serial console and no debugger.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from giter_agent.config.settings import SECTION_KEYS, SettingsConfig, parse_section
from giter_agent.core.errors import ConfigError
from giter_agent.core.layout import status_ref
from giter_agent.core.named_tuple import NamedTuple

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# A conservative subset of git's ref-name rules: what a branch name in a fleet repo needs.
BRANCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")


class Limits(NamedTuple):
    """Caps on what one sync may bring in (``[limits]``), sized for a 512 MB board."""

    max_bundle_mib: int = 512
    max_objects: int = 1_000_000
    # The largest object an import takes in. A whole object is streamed, but a delta
    # is resolved with its base in RAM (about twice the object: docs/performance.md,
    # "Artifacts"), so 128 MiB is what a 512 MB board can afford; raise it on boards
    # with more memory.
    max_object_mib: int = 128
    max_commits: int = 100_000
    time_budget_s: int = 600
    # The largest artifact a resource lays down (streamed: costs disk, not memory).
    # An artifact is one object, so max_object_mib bounds it too.
    max_artifact_mib: int = 128


_LIMIT_RANGES = {"max_bundle_mib": (1, 65536), "max_objects": (1, 100_000_000),
                 "max_object_mib": (1, 4096), "max_commits": (1, 10_000_000),
                 "time_budget_s": (1, 86400), "max_artifact_mib": (1, 65536)}

NETWORK_SCHEMES = ("git", "http", "https", "ssh")
# The device's signing key, in the state directory. It is also the key an ssh:// hub
# knows the device by when [network] ssh_key is not given (docs/network.md).
DEVICE_KEY_FILE = "device_key"


class Network(NamedTuple):
    """The fleet's git server (``[network]``); see docs/network.md.

    Secrets are never in the config itself: a password or token lives in
    ``password_file``, an SSH key in ``ssh_key``, each readable by the agent only
    (checked every time it is read, see ``transport.network``).
    """

    url: str
    username: str | None = None  # http(s) basic auth; ssh user when the URL names none
    password_file: Path | None = None  # http(s): the password or access token
    ssh_key: Path | None = None
    known_hosts: Path | None = None  # ssh: the pinned host key(s); never learned on first use
    ca_file: Path | None = None  # https: trust this CA bundle instead of the system's
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    backoff_max_s: float = 3600.0  # the longest wait between failed attempts

    @property
    def scheme(self) -> str:
        return self.url.partition("://")[0]


# How often to sync is the [agent] sync_interval setting (agent.settings): the
# publisher may move it within local bounds.
_NETWORK_RANGES = {"connect_timeout_s": (1, 600), "read_timeout_s": (1, 3600),
                   "backoff_max_s": (1, 7 * 86400)}
_NETWORK_PATHS = ("password_file", "ssh_key", "known_hosts", "ca_file")


class Services(NamedTuple):
    """``[services]``: which systemd units a Service resource may start, stop, enable.

    ``allowed``: unit names or glob patterns (``kiosk-*.service``); nothing else is
    touched. ``force``: exact names of critical units (``giter_agent.kinds.service.CRITICAL``:
    the agent's own, ssh, targets, systemd-*, getty, dbus, networking...) that a spec may
    act on anyway; without it they are refused even when ``allowed`` matches them.
    """

    allowed: tuple[str, ...] = ()
    force: tuple[str, ...] = ()


class Config(NamedTuple):
    """Validated agent configuration. Built only by ``load`` (or directly in tests).

    Its defaults are values no one can change in place: the ``[commands]`` allowlist is
    a read-only mapping (nothing adds to it after ``load``).
    """

    device_id: str
    state_dir: Path
    board: str
    allowed_signers: Path
    branch: str = "main"
    groups: tuple[str, ...] = ()
    root_keys: Path | None = None
    genesis: str | None = None
    usb_roots: tuple[Path, ...] = ()
    files_roots: tuple[Path, ...] = ()
    limits: Limits = Limits()
    network: Network | None = None
    agent: SettingsConfig = SettingsConfig()  # [agent]: agent.settings
    # [commands] allowed: the names a Command resource may run, each a fixed argv.
    commands: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    # [services]: the units a Service resource may act on (agent.kinds.service).
    services: Services = Services()
    # [packages] allowed: the Debian packages a Package resource may install (globs).
    packages: tuple[str, ...] = ()
    # [serial]: the port the device serves (default: the board's serial_port) and its speed.
    serial_port: str | None = None
    serial_baud: int = 115200
    # [metrics] textfile: a node_exporter textfile-collector file (giter_agent.status.metrics).
    metrics_textfile: Path | None = None
    source: Path | None = None  # the file it was read from

    @property
    def branch_ref(self) -> bytes:
        return f"refs/heads/{self.branch}".encode()

    @property
    def status_ref(self) -> bytes:
        return status_ref(self.device_id)


# Known keys: top level, and the keys each [section] may hold.
_TOP = {"device_id", "state_dir", "board", "allowed_signers", "branch", "groups", "root_keys",
        "genesis"}
_SECTIONS = {"usb": {"roots"}, "files": {"roots"}, "limits": set(_LIMIT_RANGES),
             "network": {"url", "username", *_NETWORK_PATHS, *_NETWORK_RANGES}}
_SECTIONS.update({"agent": set(SECTION_KEYS), "commands": {"allowed"},
                  "services": {"allowed", "force"}, "packages": {"allowed"}})
_SECTIONS["serial"] = {"port", "baud"}
_SECTIONS["metrics"] = {"textfile"}
_REQUIRED = ("device_id", "state_dir", "board", "allowed_signers")


def load(path: Path) -> Config:
    """Read and validate ``path``; raise ``ConfigError`` naming the key on any problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(raw, base=path.resolve().parent, source=path)


def from_dict(raw: dict[str, Any], *, base: Path, source: Path | None = None) -> Config:
    """Validate an already-parsed config mapping (paths resolved against ``base``)."""
    where = str(source) if source else "config"

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: {problem}")

    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise fail(key, "must be a table ([" + key + "])")
            for sub in value:
                if sub not in _SECTIONS[key]:
                    raise fail(f"{key}.{sub}", "unknown key")
        elif key not in _TOP:
            raise fail(key, "unknown key")
    for key in _REQUIRED:
        if key not in raw:
            raise fail(key, "missing (required)")

    def string(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def a_path(key: str, value: Any) -> Path:
        try:
            p = Path(string(key, value)).expanduser()
        except RuntimeError:  # "~name" for a user this system does not have
            raise fail(key, f"{value!r}: cannot expand '~': no such user or home") from None
        return p if p.is_absolute() else (base / p)

    def paths(key: str, value: Any) -> tuple[Path, ...]:
        if not isinstance(value, list):
            raise fail(key, f"must be a list of paths, got {value!r}")
        return tuple(a_path(key, v) for v in value)

    device_id = string("device_id", raw["device_id"])
    if not NAME_RE.fullmatch(device_id):
        raise fail("device_id", f"{device_id!r} must match [a-z0-9][a-z0-9._-]* (max 63)")
    branch = string("branch", raw.get("branch", "main"))
    if not BRANCH_RE.fullmatch(branch) or ".." in branch or branch.endswith((".lock", "/")):
        raise fail("branch", f"{branch!r} is not a usable branch name")
    groups_raw = raw.get("groups", [])
    if not isinstance(groups_raw, list):
        raise fail("groups", f"must be a list of group names, got {groups_raw!r}")
    groups = []
    for g in groups_raw:
        if not isinstance(g, str) or not NAME_RE.fullmatch(g):
            raise fail("groups", f"{g!r} must match [a-z0-9][a-z0-9._-]* (max 63)")
        if g in groups:
            raise fail("groups", f"{g!r} listed twice")
        groups.append(g)
    root_keys = raw.get("root_keys")
    genesis = raw.get("genesis")
    if genesis is not None and (not isinstance(genesis, str)
                                or not re.fullmatch(r"[0-9a-f]{40}", genesis)):
        raise fail("genesis", f"must be a 40-digit lower-case hex commit id, got {genesis!r}")
    limits = {}
    for name, value in raw.get("limits", {}).items():
        lo, hi = _LIMIT_RANGES[name]
        if type(value) is not int or not lo <= value <= hi:
            raise fail(f"limits.{name}", f"must be a whole number from {lo} to {hi}, "
                       f"got {value!r}")
        limits[name] = value
    return Config(
        device_id=device_id,
        state_dir=a_path("state_dir", raw["state_dir"]),
        board=string("board", raw["board"]),
        allowed_signers=a_path("allowed_signers", raw["allowed_signers"]),
        branch=branch,
        groups=tuple(groups),
        root_keys=a_path("root_keys", root_keys) if root_keys is not None else None,
        genesis=genesis,
        usb_roots=paths("usb.roots", raw.get("usb", {}).get("roots", [])),
        files_roots=paths("files.roots", raw.get("files", {}).get("roots", [])),
        limits=Limits(**limits),
        network=_network(raw["network"], fail, a_path,
                         a_path("state_dir", raw["state_dir"]) / DEVICE_KEY_FILE)
        if "network" in raw else None,
        agent=parse_section(raw.get("agent", {}), fail),
        commands=_commands(raw.get("commands", {}).get("allowed", {}), fail),
        services=_services(raw.get("services", {}), fail),
        packages=_packages(raw.get("packages", {}).get("allowed", []), fail),
        serial_port=string("serial.port", raw["serial"]["port"])
        if "port" in raw.get("serial", {}) else None,
        serial_baud=_baud(raw.get("serial", {}).get("baud", 115200), fail),
        metrics_textfile=_textfile(raw["metrics"]["textfile"], fail, a_path)
        if "textfile" in raw.get("metrics", {}) else None,
        source=source,
    )


def _network(raw: dict[str, Any], fail: Any, a_path: Any, device_key: Path) -> Network:
    """Validate ``[network]``: one URL, the secrets its scheme needs, and timeouts."""
    from urllib.parse import urlsplit

    url = raw.get("url")
    if not isinstance(url, str) or not url:
        raise fail("network.url", "missing (required in [network])")
    scheme = url.partition("://")[0]
    if scheme not in NETWORK_SCHEMES:
        raise fail("network.url", f"{url!r}: the scheme must be one of "
                   f"{', '.join(s + '://' for s in NETWORK_SCHEMES)}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise fail("network.url", f"{url!r}: {exc}") from None
    if not parts.hostname or not parts.path.strip("/"):
        raise fail("network.url", f"{url!r} must name a host and a repository path")
    if parts.password is not None or parts.query or parts.fragment:
        raise fail("network.url", "must not hold a password, query or fragment "
                   "(put the secret in network.password_file)")
    values: dict[str, Any] = {"url": url}
    username = raw.get("username")
    if username is not None:
        if not isinstance(username, str) or not re.fullmatch(r"[A-Za-z0-9._@+-]{1,64}", username):
            raise fail("network.username", f"{username!r} is not a usable user name")
        values["username"] = username
    for key in _NETWORK_PATHS:
        if key in raw:
            values[key] = a_path(f"network.{key}", raw[key])
    for key, (lo, hi) in _NETWORK_RANGES.items():
        if key in raw:
            value = raw[key]
            if type(value) not in (int, float) or not lo <= value <= hi:
                raise fail(f"network.{key}", f"must be a number of seconds from {lo} to {hi}, "
                           f"got {value!r}")
            values[key] = float(value)
    allowed = {"git": set(), "http": {"username", "password_file"},
               "https": {"username", "password_file", "ca_file"},
               "ssh": {"username", "ssh_key", "known_hosts"}}[scheme]
    for key in ("username", *_NETWORK_PATHS):
        if key in values and key not in allowed:
            raise fail(f"network.{key}", f"does not apply to {scheme}:// URLs")
    if scheme == "ssh" and "known_hosts" not in values:
        raise fail("network", "ssh:// needs known_hosts (the hub's pinned host key: "
                   "giter-agent never trusts a host key on first use)")
    if scheme == "ssh" and "ssh_key" not in values:
        # The enrolled key: the hub's per-device rules follow enrolment (giter-bundle hub).
        values["ssh_key"] = device_key
    if ("username" in values) != ("password_file" in values) and scheme != "ssh":
        raise fail("network", "username and password_file go together")
    if scheme == "http" and "password_file" in values:
        raise fail("network.url", "credentials would cross the network in clear text over "
                   "http://; use https://")
    return Network(**values)


def _commands(raw: Any, fail: Any) -> dict[str, tuple[str, ...]]:
    """Validate ``[commands] allowed``: name -> argv with an absolute program path.

    An argv, never a shell line: a Command resource names one of these and nothing
    it says reaches the command, so the publisher cannot widen what runs.
    """
    if not isinstance(raw, dict):
        raise fail("commands.allowed", "must be a table of name = [\"/abs/program\", \"arg\"]")
    allowed: dict[str, tuple[str, ...]] = {}
    for name, argv in raw.items():
        key = f"commands.allowed.{name}"
        if not NAME_RE.fullmatch(name):
            raise fail(key, "names are [a-z0-9][a-z0-9._-]* (max 63)")
        if not isinstance(argv, list) or not argv \
                or not all(isinstance(a, str) and a and "\0" not in a for a in argv):
            raise fail(key, f"must be a non-empty list of strings (an argv), got {argv!r}")
        if not argv[0].startswith("/"):
            raise fail(key, f"the program {argv[0]!r} must be an absolute path "
                       "(PATH is not searched)")
        allowed[name] = tuple(argv)
    return allowed


_UNIT_PATTERN = r"[A-Za-z0-9:_.@*?\[\]!-]{1,200}"  # compiled when first used (re's cache)


def _services(raw: dict[str, Any], fail: Any) -> Services:
    """Validate ``[services]``: lists of unit names (``allowed`` may hold globs)."""
    lists = {}
    for key in ("allowed", "force"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(
                isinstance(v, str) and re.fullmatch(_UNIT_PATTERN, v) and not v.startswith("-")
                for v in value):
            raise fail(f"services.{key}", "must be a list of systemd unit names"
                       + (" or glob patterns like \"kiosk-*.service\"" if key == "allowed"
                          else " (exact, no patterns)") + f", got {value!r}")
        if key == "force" and any(set(v) & set("*?[]!") for v in value):
            raise fail("services.force", "names exact units, not patterns: forcing a "
                       "critical unit is done one unit at a time")
        lists[key] = tuple(value)
    return Services(**lists)


_PACKAGE_PATTERN = r"[a-z0-9*?][a-z0-9+.*?-]{0,99}"  # compiled when first used


def _packages(value: Any, fail: Any) -> tuple[str, ...]:
    """``[packages] allowed``: Debian package names or glob patterns (``kiosk-*``)."""
    if not isinstance(value, list) or not all(
            isinstance(v, str) and re.fullmatch(_PACKAGE_PATTERN, v) for v in value):
        raise fail("packages.allowed", "must be a list of Debian package names or glob "
                   f"patterns like \"kiosk-*\", got {value!r}")
    return tuple(value)


def _baud(value: Any, fail: Any) -> int:
    """``[serial] baud``: a whole number a UART can be set to."""
    if type(value) is not int or not 1200 <= value <= 4_000_000:
        raise fail("serial.baud", f"must be a line speed from 1200 to 4000000, got {value!r}")
    return value


def _textfile(value: Any, fail: Any, a_path: Any) -> Path:
    """``[metrics] textfile``: a ``*.prom`` path (node_exporter reads only those)."""
    path = a_path("metrics.textfile", value)
    if path.suffix != ".prom":
        raise fail("metrics.textfile", f"must end in .prom (the textfile collector reads "
                   f"only those), got {value!r}")
    return Path(path)
