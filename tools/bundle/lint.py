"""Check a spec tree the way the agent will read it, before anything ships.

Every check calls the agent's own code, so lint and device can never disagree: the tree
allowlist (``giter_agent.history.tree.iter_files``: names, symlinks, case collisions, sizes), the
strict YAML loader and document shape (``giter_agent.spec.resources.parse_resource``), each kind's
schema (``Kind.validate``; built-in kinds and the plug-ins installed here, through
``giter_agent.kinds.load_kinds``), and, for every enrolled device, what its own
targeting would refuse (``giter_agent.spec.targeting``: device > selector > group, two
definitions at one level, a ``fleet/`` selector, a placeholder with no value) and each
spec with placeholders as rendered for it against its kind's schema. The values files
under ``values/`` are parsed as devices parse them. Each ``Secret`` must
open for every enrolled device that applies it and for no other key but the publisher
secrets keys (``giter_bundle.secrets``). The trust file and the
enrolments under ``.giter/`` are parsed as ``import`` will parse them, and the trust
policy (``.giter/trust/policy.toml``) as devices will. An ``artifact`` a resource names
must be a regular file under ``artifacts/`` of the tree, and match its ``sha256`` pin
(``giter_bundle.artifacts``). An ``AgentUpdate``'s wheels must pass the device's own
rules, their pins included (``giter_bundle.lint_wheels``), and a ``Package``'s ``.deb``
hold the package and version its spec names (``giter_bundle.lint_debs``).

Errors are what a device would refuse or report as not Ready; warnings are what it
would silently ignore (a file that is not YAML, a folder no enrolled device reads).
Every error in a file is reported, not only the first: each kind's ``validate`` stops
at one, so it is run again with the named field taken out or stood in for. An unknown
field says which one was probably meant (``ontime`` -> ``onTime``), and a value YAML
typed as a number where text was meant says how to quote it (``mode: "0644"``). A name
the device refuses, which makes it ignore the whole folder, is reported beside the
errors of the folder's other files.

Called by ``giter-bundle lint``, and by ``commit`` and ``create`` before they sign or ship.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from giter_agent.config.agent_toml import NAME_RE
from giter_agent.core.errors import GiterError, Reason, TreeError
from giter_agent.spec.placeholders import uses_placeholders

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
    return _check_policy(store, tree)


def _check_policy(store, tree: bytes) -> list[Finding]:
    """``.giter/trust/policy.toml`` as devices parse it: a broken one refuses every
    commit built on it."""
    from giter_agent.history.tree import read_file
    from giter_agent.trust.trust_files import parse_policy
    from giter_bundle.layout import POLICY_FILE

    try:
        data = read_file(store, tree, POLICY_FILE)
        if data is None:
            return [Finding(POLICY_FILE, "BranchNotBound", "absent: a commit signed for "
                            "another branch is applied if offered as this one (bind_branch "
                            "= true binds them; docs/trust.md)", error=False)]
        parse_policy(data, POLICY_FILE)
    except GiterError as exc:
        return [Finding(POLICY_FILE, exc.reason, str(exc))]
    return []


_FIELD = re.compile(r"spec\.([A-Za-z][A-Za-z0-9]*)")
_FIELD_LIST = re.compile(r"spec: (unknown|missing) field\(s\) (.*)")
# Values tried in place of a broken or missing required field, so that the kind's own
# validate goes on to the fields after it: the first it accepts for that field stays.
_STAND_INS: tuple[Any, ...] = ("x", "/x", 1, 0.5, True, ["x"], {})
_MAX_ROUNDS = 48


def _quote_hint(data: bytes, name: str, value: Any) -> str:
    """``; quote it: mode: "0644"`` when YAML typed what was meant as text."""
    if isinstance(value, str) or not isinstance(value, int | float | bool):
        return ""
    text = data.decode("utf-8", "replace")
    found = re.search(rf"^[ \t-]*{re.escape(name)}[ \t]*:[ \t]*([^\s#'\"][^#\n]*?)[ \t]*"
                      r"(?:#.*)?$", text, flags=re.MULTILINE)
    if found is None:
        return ""
    raw = found.group(1)
    return (f"; YAML reads {raw} as the number {value!r}" if not isinstance(value, bool)
            else f"; YAML reads {raw} as {str(value).lower()}") + \
        f": quote it: {name}: \"{raw}\""


def _fields_named(message: str) -> tuple[str | None, list[str]]:
    """(``unknown``/``missing``/None, the spec fields an error message names)."""
    listed = _FIELD_LIST.match(message)
    if listed:
        names = [re.sub(r" \(did you mean .*\)$", "", part.strip())
                 for part in re.split(r",\s*(?![^()]*\))", listed.group(2))]
        return listed.group(1), names
    single = _FIELD.search(message)
    return None, [single.group(1)] if single else []


def spec_errors(kind: Any, spec: dict[str, Any], path: str, data: bytes) -> list[Finding]:
    """Every error the kind's own ``validate`` finds in ``spec``, not only the first.

    ``validate`` stops at the first problem; after each one the field it names is taken
    out (an unknown or optional field) or replaced with a stand-in the kind accepts (a
    required one), and ``validate`` runs again, until it passes or names no field.
    """
    findings: list[Finding] = []
    spec = dict(spec)
    reported: set[str] = set()
    original = dict(spec)
    for _ in range(_MAX_ROUNDS):
        try:
            kind.validate(dict(spec))
            return findings
        except GiterError as exc:
            message = str(exc)
            what, names = _fields_named(message)
            fresh = [n for n in names if n not in reported]
            # A required field no stand-in satisfies names itself again: said once.
            said = any(f.message.startswith(message) for f in findings)
            if (what != "missing" or fresh) and not said:
                wants_text = any(w in message for w in ("string", "name", "one of"))
                hint = "".join(_quote_hint(data, n, original[n]) for n in names
                               if n in original and what is None and wants_text)
                findings.append(Finding(path, exc.reason, message + hint))
            if not fresh:
                return findings
            reported.update(fresh)
            for name in fresh:
                if what == "unknown":
                    spec.pop(name, None)
                    continue
                spec.pop(name, None)
                if _needs_stand_in(kind, spec, name):
                    spec[name] = _stand_in(kind, spec, name)
    return findings


def _message_of(kind: Any, spec: dict[str, Any]) -> str | None:
    try:
        kind.validate(dict(spec))
    except GiterError as exc:
        return str(exc)
    return None


def _needs_stand_in(kind: Any, spec: dict[str, Any], name: str) -> bool:
    what, names = _fields_named(_message_of(kind, spec) or "")
    return what == "missing" and name in names


def _stand_in(kind: Any, spec: dict[str, Any], name: str) -> Any:
    for value in _STAND_INS:
        _, names = _fields_named(_message_of(kind, {**spec, name: value}) or "")
        if name not in names:
            return value
    return _STAND_INS[0]


def _document_errors(path: str, data: bytes) -> tuple[list[Finding], Any]:
    """The errors ``spec.resources.parse_resource`` finds around the spec, and the resource.

    After each, the part it names is replaced with a stand-in (or an unknown top-level
    field taken out) and the document parsed again, so that a wrong ``apiVersion`` does
    not hide a bad ``metadata.name`` or the spec's errors. The resource comes back None
    when nothing stands in for the broken part.
    """
    import yaml

    from giter_agent.spec.resources import API_VERSION, load_yaml, parse_resource

    try:
        return [], parse_resource(path, data)
    except GiterError as exc:
        error = exc
    findings: list[Finding] = []
    try:
        doc = load_yaml(data)
    except GiterError:
        doc = None
    for _ in range(8):
        findings.append(Finding(path, error.reason, str(error)))
        message = str(error)
        if not isinstance(doc, dict):
            return findings, None
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else None
        if message.startswith("unknown top-level"):
            doc = {k: v for k, v in doc.items()
                   if k in ("apiVersion", "kind", "metadata", "spec", "status")}
        elif message.startswith("apiVersion"):
            doc["apiVersion"] = API_VERSION
        elif message.startswith("metadata.name") and meta is not None:
            doc["metadata"] = {**meta, "name": "x"}
        elif message.startswith("metadata.generation") and meta is not None:
            doc["metadata"] = {k: v for k, v in meta.items() if k != "generation"}
        else:
            return findings, None
        try:
            return findings, parse_resource(path, yaml.safe_dump(doc).encode())
        except GiterError as exc:
            error = exc
    return findings, None


def _loose_files(store: Any, tree: bytes, path: str) -> list[tuple[str, bytes]]:
    """The regular files under folder ``path``, read without the device's allowlist.

    For lint only: when a name the device refuses (say ``Motd.yaml``) makes it ignore the
    whole folder, the other files still get their say.
    """
    from giter_agent.history.tree import MAX_DEPTH

    out: list[tuple[str, bytes]] = []
    sha = tree
    try:
        for part in path.split("/"):
            sha = store[sha][part.encode()][1]
    except KeyError:
        return out
    stack = [(sha, path, 0)]
    while stack:
        sub, where, depth = stack.pop()
        for name, mode, oid in store[sub].iteritems():
            entry = f"{where}/{name.decode('utf-8', 'replace')}"
            if stat.S_ISDIR(mode) and depth < MAX_DEPTH:
                stack.append((oid, entry, depth + 1))
            elif mode in (0o100644, 0o100755):
                data = store[oid].as_raw_string()
                if len(data) <= MAX_FILE_BYTES:
                    out.append((entry, data))
    return sorted(out)


_NEAR_MISS = re.compile(rb"\$\{(value|label|devices|vals?|env)\.[A-Za-z0-9_.-]*\}")


def _near_misses(path: str, data: bytes) -> list[Finding]:
    """``${value.port}`` is left as text by design (only device., labels. and values. are
    placeholders): say so, since it is almost surely a misspelt placeholder."""
    return [Finding(path, "NotAPlaceholder", f"{m.group(0).decode()} is left as written "
                    "(placeholders are ${device.id}, ${labels.<key>}, ${values.<key>}; "
                    "$${ writes a literal ${)", error=False)
            for m in _NEAR_MISS.finditer(data)]


def _check_resource(path: str, data: bytes, kinds: dict) -> list[Finding]:
    if not path.endswith(RESOURCE_SUFFIXES):
        return [Finding(path, "NotAResource", "ignored by the agent (only .yaml and .yml "
                        "files are resources)", error=False)]
    findings, res = _document_errors(path, data)
    if res is None:
        return findings
    kind = kinds.get(res.kind)
    if kind is None:
        return [Finding(path, "UnknownKind", f"no kind {res.kind!r} in the agent "
                        f"(known: {', '.join(sorted(kinds))}; a plug-in kind lints once "
                        "its package is installed here too)")]
    if uses_placeholders(res.spec):
        # Rendered per device first (``_device_findings``): ``pin: ${values.pin}`` is an
        # integer only once a device's values fill it.
        findings += _near_misses(path, data)
    else:
        findings += spec_errors(kind, dict(res.spec), path, data)
    return findings + [Finding(path, "StatusOnSpecBranch", w, error=False)
                       for w in res.warnings]


def specs_of_kind(folders: dict[str, list[tuple[str, bytes]]], kinds: dict[str, Any],
                  name: str) -> list[tuple[str, dict[str, Any]]]:
    """Each resource of kind ``name`` in ``folders`` whose spec the kind accepts, with its
    path (the others are reported by ``_check_resource``)."""
    from giter_agent.spec.resources import parse_resource

    kind = kinds.get(name)
    if kind is None:
        return []
    specs: list[tuple[str, dict[str, Any]]] = []
    for files in folders.values():
        for path, data in files:
            try:
                res = parse_resource(path, data)
                if res.kind == name:
                    specs.append((path, kind.validate(dict(res.spec))))
            except GiterError:
                continue
    return specs


def release_findings(store: Any, tree: bytes,
                     folders: dict[str, list[tuple[str, bytes]]]) -> list[Finding]:
    """Each ``Release``'s ``source`` (an ``AgentUpdate``'s ``wheels``) is a folder of this
    tree that the device's tree allowlist takes whole (``history.tree.list_files``: no
    symlink, submodule, odd name or case collision), and each ``Package``'s ``deb`` a
    regular file, as the device will read them (``history.artifacts.TreeArtifacts``:
    ``listing``, ``stat``); a warning for each file of a release over the devices'
    default cap (``[limits] max_artifact_mib``: they refuse the release)."""
    from giter_agent.history.tree import file_id, list_files
    from giter_agent.spec.resources import parse_resource
    from giter_bundle.artifacts import caps_warnings, stored_size

    out: list[Finding] = []
    for files in folders.values():
        for path, data in files:
            try:
                res = parse_resource(path, data)
            except GiterError:
                continue  # reported by _check_resource
            deb = res.spec.get("deb")
            if res.kind == "Package" and isinstance(deb, str) and deb.startswith("artifacts/"):
                try:
                    found = file_id(store, tree, deb)
                except (TreeError, ValueError) as exc:
                    out.append(Finding(path, getattr(exc, "reason", "InvalidSpec"),
                                       f"spec.deb {deb}: {exc} (the device refuses it)"))
                    continue
                if found is None:
                    out.append(Finding(path, "SourceNotFound", f"spec.deb {deb} is not a file "
                                       "in this commit"))
                continue
            # A Release's folder, and the folder of wheels of an AgentUpdate.
            field = {"Release": "source", "AgentUpdate": "wheels"}.get(res.kind)
            source = res.spec.get(field) if field else None
            if not isinstance(source, str) or not source.startswith("artifacts/"):
                continue
            what = "release" if res.kind == "Release" else "update"
            try:
                listed = list_files(store, tree, source)
            except (TreeError, ValueError) as exc:
                out.append(Finding(path, getattr(exc, "reason", "InvalidSpec"),
                                   f"spec.{field} {source}: {exc} (the device refuses the "
                                   f"{what})"))
                continue
            if listed is None or not listed[1]:
                out.append(Finding(path, "SourceNotFound", f"spec.{field} {source} is not a "
                                   "folder of files in this commit"))
            elif res.kind == "Release":  # an update's wheels: giter_bundle.lint_wheels
                out += [Finding(path, Reason.ArtifactTooLarge, f"{file_path}: {warning}",
                                error=False)
                        for file_path, _mode, oid in listed[1]
                        for warning in caps_warnings(stored_size(store, oid))]
    return out


def expires_findings(message: bytes, now: float, where: str) -> list[Finding]:
    """A warning when the commit message's ``Expires:`` trailer is already past.

    Devices refuse a spec whose tip has expired (``SpecExpired``), so a commit that is
    born expired never applies anywhere; an unreadable trailer is an error.
    """
    from datetime import UTC, datetime

    from giter_agent.trust.trailers import expires_of

    try:
        expires = expires_of(message)
    except GiterError as exc:
        return [Finding(where, exc.reason, str(exc))]
    if expires is not None and expires <= datetime.fromtimestamp(now, UTC):
        return [Finding(where, "SpecExpired", f"Expires: {expires.isoformat()} is already "
                        "past: devices refuse this spec (SpecExpired); commit again with a "
                        "later Expires:", error=False)]
    return []


def lint_tree(store, tree: bytes, kinds: dict | None = None,
              former_keys: Callable[[], dict[bytes, set[str]]] | None = None) -> list[Finding]:
    """Every finding for the spec tree ``tree`` in ``store``, errors and warnings.

    ``former_keys`` names keys no longer enrolled that a secret is still sealed to
    (``giter_bundle.secrets.history_index`` over the branch; called only if needed).
    """
    from giter_agent.core.layout import FLEET_FOLDER
    from giter_agent.history.tree import iter_files
    from giter_agent.kinds import load_kinds
    from giter_bundle import lint_debs, lint_fleet, lint_wheels
    from giter_bundle.artifacts import lint_findings as lint_artifacts
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
                findings.append(Finding(path, exc.reason, f"{exc} (the device ignores this "
                                        "whole folder until it is fixed)"))
                for file_path, data in _loose_files(store, tree, path):
                    findings += _check_resource(file_path, data, kinds)
                continue
            for file_path, data in folders[path]:
                findings += _check_resource(file_path, data, kinds)
            if top == "devices" and name not in devices:
                findings.append(Finding(path, "NotEnrolled", f"no device {name} is enrolled "
                                        "(giter-bundle enroll)", error=False))
            if top == "groups" and name not in groups_in_use:
                findings.append(Finding(path, "NoMembers", f"no enrolled device is in group "
                                        f"{name}", error=False))

    try:
        folders[FLEET_FOLDER] = list(iter_files(store, tree, FLEET_FOLDER, MAX_FILE_BYTES))
    except TreeError as exc:
        findings.append(Finding(FLEET_FOLDER, exc.reason, f"{exc} (devices ignore the whole "
                                "spec until it is fixed)"))
    for file_path, data in folders.get(FLEET_FOLDER, []):
        findings += _check_resource(file_path, data, kinds)
        findings += lint_fleet.selector_findings(file_path, data)
    findings += lint_fleet.values_findings(store, tree, devices)
    findings += lint_fleet.rollout_findings(store, tree)

    findings += release_findings(store, tree, folders)
    # An AgentUpdate's wheels: the device's rules (giter_agent.kinds.wheels), its pins
    # checked against the wheels' bytes (giter_bundle.lint_wheels).
    findings += lint_wheels.wheel_findings(store, tree, folders, kinds)
    # A Package's .deb: the package and version inside, as the device reads them
    # (giter_agent.kinds.package.deb_fields; giter_bundle.lint_debs).
    findings += lint_debs.deb_findings(store, tree, folders, kinds)
    # Secrets: every device that applies one can open it, and no one else but the
    # publisher secrets keys (giter_bundle.secrets).
    findings += lint_secrets(store, tree, devices, folders, former_keys)
    # Artifacts: each one a resource names is in the tree, a regular file, and what its
    # sha256 pins (giter_bundle.artifacts).
    findings += lint_artifacts(store, tree, folders)
    return findings + lint_fleet.device_findings(store, tree, devices, kinds)
