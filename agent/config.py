"""The one place that reads the agent's configuration (``giter-agent -c agent.toml``).

Relative paths in the file are resolved against the file's own folder, so a config
and its allowed_signers can travel together. Every unknown key and every bad value is
a ``ConfigError`` that names the file and the key, because the person reading it is
usually standing next to a board with a serial console and no debugger.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# A conservative subset of git's ref-name rules: what a branch name in a fleet repo needs.
BRANCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")


@dataclass(frozen=True)
class Limits:
    """Caps on what one sync may bring in (``[limits]``), sized for a 512 MB board."""

    max_bundle_mib: int = 512
    max_objects: int = 1_000_000
    max_object_mib: int = 32
    max_commits: int = 100_000
    time_budget_s: int = 600


_LIMIT_RANGES = {"max_bundle_mib": (1, 65536), "max_objects": (1, 100_000_000),
                 "max_object_mib": (1, 4096), "max_commits": (1, 10_000_000),
                 "time_budget_s": (1, 86400)}


@dataclass(frozen=True)
class Config:
    """Validated agent configuration. Built only by ``load`` (or directly in tests)."""

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
    limits: Limits = field(default_factory=lambda: Limits())
    source: Path | None = field(default=None, compare=False)

    @property
    def branch_ref(self) -> bytes:
        return f"refs/heads/{self.branch}".encode()

    @property
    def status_ref(self) -> bytes:
        return f"refs/heads/status/{self.device_id}".encode()


# Known keys: top level, and the keys each [section] may hold.
_TOP = {"device_id", "state_dir", "board", "allowed_signers", "branch", "groups", "root_keys",
        "genesis"}
_SECTIONS = {"usb": {"roots"}, "files": {"roots"}, "limits": set(_LIMIT_RANGES)}
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
        p = Path(string(key, value)).expanduser()
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
        source=source,
    )
