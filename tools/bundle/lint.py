"""Check a spec tree the way the agent will read it, before anything ships.

Every check calls the agent's own code, so lint and device can never disagree: the tree
allowlist (``history.tree.iter_files``: names, symlinks, case collisions, sizes), the
strict YAML loader and document shape (``spec.resources.parse_resource``), each kind's
schema (``Kind.validate``; built-in kinds and the plug-ins installed here, through
``kinds.load_kinds``), and the device-beats-group / group-vs-group rule
(``spec.resources.select``) for every enrolled device. Each ``Secret`` must open for
every enrolled device that applies it and for no other key but the publisher secrets
keys (``giter_bundle.secrets``). The trust file and the
enrolments under ``.giter/`` are parsed as ``import`` will parse them.

Errors are what a device would refuse or report as not Ready; warnings are what it
would silently ignore (a file that is not YAML, a folder no enrolled device reads).

Called by ``giter-bundle lint``, and by ``commit`` and ``create`` before they sign or ship.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass

from giter_agent.config.agent_toml import NAME_RE
from giter_agent.core.errors import GiterError, TreeError

RESOURCE_SUFFIXES = (".yaml", ".yml")
# What the agent reads per file (agent.sync); a bigger file makes the whole folder unusable.
MAX_FILE_BYTES = 2 * 2**20


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or worth knowing) about one path."""

    path: str
    reason: str
    message: str
    error: bool = True

    def line(self) -> str:
        level = "" if self.error else "warning: "
        return f"{self.path}: {level}{self.reason}: {self.message}"


def _folder_entries(store, tree: bytes, name: str) -> list[tuple[str, int]]:
    """(name, mode) of the entries of top-level folder ``name``; [] when it is absent."""
    try:
        mode, sha = store[tree][name.encode()]
    except KeyError:
        return []
    if not stat.S_ISDIR(mode):
        return [("", mode)]
    return [(entry.decode("utf-8", "replace"), m) for entry, m, _ in store[sha].iteritems()]


def _check_trust_file(store, tree: bytes) -> list[Finding]:
    from giter_agent.history.tree import read_file
    from giter_agent.trust import allowed_signers
    from giter_bundle.exchange import TRUST_FILE

    try:
        data = read_file(store, tree, TRUST_FILE)
        if data is None:
            return [Finding(TRUST_FILE, "NoTrustFile", "absent: devices check every commit "
                            "against their pinned allowed_signers file", error=False)]
        if not allowed_signers.keys_for(allowed_signers.parse(data, TRUST_FILE)):
            return [Finding(TRUST_FILE, "InvalidTrustFile",
                            "no key in it may sign for namespace git")]
    except GiterError as exc:
        return [Finding(TRUST_FILE, exc.reason, str(exc))]
    return []


def _check_resource(path: str, data: bytes, kinds: dict) -> list[Finding]:
    from giter_agent.spec.resources import parse_resource

    if not path.endswith(RESOURCE_SUFFIXES):
        return [Finding(path, "NotAResource", "ignored by the agent (only .yaml and .yml "
                        "files are resources)", error=False)]
    try:
        res = parse_resource(path, data)
        kind = kinds.get(res.kind)
        if kind is None:
            return [Finding(path, "UnknownKind", f"no kind {res.kind!r} in the agent "
                            f"(known: {', '.join(sorted(kinds))}; a plug-in kind lints once "
                            "its package is installed here too)")]
        kind.validate(dict(res.spec))
    except GiterError as exc:
        return [Finding(path, exc.reason, str(exc))]
    return [Finding(path, "StatusOnSpecBranch", w, error=False) for w in res.warnings]


def lint_tree(store, tree: bytes, kinds: dict | None = None,
              former_keys: Callable[[], dict[bytes, set[str]]] | None = None) -> list[Finding]:
    """Every finding for the spec tree ``tree`` in ``store``, errors and warnings.

    ``former_keys`` names keys no longer enrolled that a secret is still sealed to
    (``giter_bundle.secrets.history_index`` over the branch; called only if needed).
    """
    from giter_agent.history.tree import iter_files
    from giter_agent.kinds import load_kinds
    from giter_agent.spec.resources import prefixes, select
    from giter_bundle.enrolment import read_devices
    from giter_bundle.secrets import lint_findings as lint_secrets

    kinds = load_kinds() if kinds is None else kinds
    findings = _check_trust_file(store, tree)
    devices, problems = read_devices(store, tree)
    findings += [Finding(p.path, p.reason, p.message) for p in problems]
    groups_in_use = {g for d in devices.values() for g in d.groups}

    folders: dict[str, list[tuple[str, bytes]]] = {}
    for top, what in (("devices", "device id"), ("groups", "group name")):
        for name, mode in _folder_entries(store, tree, top):
            path = f"{top}/{name}" if name else top
            if not stat.S_ISDIR(mode):
                if path.endswith(RESOURCE_SUFFIXES):
                    findings.append(Finding(path, "NotInAFolder", f"no device reads it: put "
                                            f"it in {top}/<{what}>/", error=False))
                continue
            if not NAME_RE.fullmatch(name):
                findings.append(Finding(path, "InvalidName", f"{name!r} is not a valid "
                                        f"{what}, so no device reads this folder"))
                continue
            try:
                folders[path] = list(iter_files(store, tree, path, MAX_FILE_BYTES))
            except TreeError as exc:
                findings.append(Finding(path, exc.reason, str(exc)))
                continue
            for file_path, data in folders[path]:
                findings += _check_resource(file_path, data, kinds)
            if top == "devices" and name not in devices:
                findings.append(Finding(path, "NotEnrolled", f"no device {name} is enrolled "
                                        "(giter-bundle enroll)", error=False))
            if top == "groups" and name not in groups_in_use:
                findings.append(Finding(path, "NoMembers", f"no enrolled device is in group "
                                        f"{name}", error=False))

    # Secrets: every device that applies one can open it, and no one else but the
    # publisher secrets keys (giter_bundle.secrets).
    findings += lint_secrets(store, tree, devices, folders, former_keys)

    seen: set[tuple[str, str]] = set()
    for device in devices.values():
        files = [f for p in prefixes(device.id, device.groups) for f in folders.get(p, [])]
        for bad in select(files).invalid:
            if bad.reason == "DuplicateResource" and (bad.path, bad.message) not in seen:
                seen.add((bad.path, bad.message))
                findings.append(Finding(bad.path, bad.reason,
                                        f"{bad.message} (both reach {device.id})"))
    return findings
