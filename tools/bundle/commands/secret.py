"""``giter-bundle secret set|rekey``: values only their devices can read.

``secret set NAME --device ID | --group G [--from-file F]`` reads the value from F or
standard input (never from the command line), seals it in memory to the enrolled keys
of the devices that will apply it and to the publisher secrets keys, and commits
``devices/<ID>/<NAME>.yaml`` (or ``groups/<G>/<NAME>.yaml``) as a signed ``Secret``
resource; ``--path`` (required the first time), ``--mode`` (default 0600), ``--owner``
and ``--file-group`` say where and how the device writes it. The value is never written
to any file, temporary or not.

``secret rekey`` re-seals every secret whose recipients no longer match the enrolled
devices that apply it (after ``enroll``, ``enroll --replace``, or a removed device),
opening each with your secrets key; then lists the secrets a key that left could still
read from the history. ``secret rekey --rotate-hint`` only lists them. Re-sealing cannot
take back what a removed device already copied: rotate those values (docs/trust.md).

Your secrets key is ``--secrets-key``, else git config ``giter.secretsKey``, else
``~/.config/giter/secrets_ed25519``; the first ``secret set`` makes it (mode 0600) and
adds its public half to ``.giter/secrets/recipients``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from giter_bundle.commands import add_signing_arguments

HELP = "seal a value to its devices' keys (set), or re-seal after enrolment changes (rekey)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("set", help="seal a value for one device or a group, and commit it")
    s.add_argument("name", help="the Secret's metadata.name (and file name)")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", metavar="ID", help="for this enrolled device")
    who.add_argument("--group", metavar="G", help="for every device enrolled in group G")
    s.add_argument("--from-file", type=Path, metavar="FILE",
                   help="read the value from FILE (default: standard input)")
    s.add_argument("--path", help="where the device writes it (required the first time)")
    s.add_argument("--mode", help="file mode, octal (default: as before, else 0600)")
    s.add_argument("--owner", help="owner user name on the device")
    s.add_argument("--file-group", metavar="GROUP", help="owning group name on the device")
    _common(s)
    r = sub.add_parser("rekey", help="re-seal every secret to the devices enrolled now")
    r.add_argument("--rotate-hint", action="store_true",
                   help="only list the secrets that a key no longer allowed could read")
    _common(r)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--secrets-key", type=Path, metavar="FILE",
                   help="your secrets key (default: git config giter.secretsKey, else "
                   "~/.config/giter/secrets_ed25519)")
    add_signing_arguments(p)
    p.add_argument("--no-commit", action="store_true",
                   help="write the files only; commit them yourself with git commit -S")


def run(args: argparse.Namespace) -> int:
    return _set(args) if args.action == "set" else _rekey(args)


# -- helpers ------------------------------------------------------------------------------------

def _secrets_key_path(args: argparse.Namespace, root: Path) -> Path:
    from giter_bundle.secrets import DEFAULT_KEY
    from giter_bundle.signing import config_value

    if args.secrets_key is not None:
        return Path(args.secrets_key)
    configured = config_value(root, "giter", "secretsKey")
    return Path(configured or DEFAULT_KEY).expanduser()


def _read_value(args: argparse.Namespace) -> bytes:
    """The value, from --from-file or standard input (a terminal asks without echo)."""
    from giter_agent.core.age import MAX_PLAINTEXT_BYTES
    from giter_bundle.errors import UsageError

    if args.from_file is not None:
        try:
            with open(args.from_file, "rb") as fh:
                data = fh.read(MAX_PLAINTEXT_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"{args.from_file}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        import getpass

        data = getpass.getpass(f"value of secret {args.name} (not echoed): ").encode()
    else:
        data = sys.stdin.buffer.read(MAX_PLAINTEXT_BYTES + 1)
    if len(data) > MAX_PLAINTEXT_BYTES:
        raise UsageError(f"the value is over the {MAX_PLAINTEXT_BYTES}-byte cap",
                         reason="SecretTooLarge")
    return data


def _commit(exchange: Any, args: argparse.Namespace, files: dict[str, bytes],
            message: str) -> str:
    from giter_bundle import signing

    if args.no_commit:
        exchange.write_files(files)
        return f"wrote {', '.join(sorted(files))}; commit them with git commit -S"
    root = exchange.worktree or exchange.git_dir
    key = signing.load_key(signing.key_path(args.signing_key, root))
    sha = exchange.commit_files(files, message, key, signing.identity(args.author, root))
    return f"{exchange.branch} at {sha.decode()[:12]} (signed)"


def _existing(store: Any, tree: bytes, path: str) -> tuple[dict[str, Any], int]:
    """The spec and generation of the Secret at ``path`` ({} and 0 when there is none)."""
    from giter_agent.history.tree import read_file
    from giter_agent.spec.resources import parse_resource
    from giter_bundle.errors import PublisherError

    data = read_file(store, tree, path)
    if data is None:
        return {}, 0
    res = parse_resource(path, data)
    if res.kind != "Secret":
        raise PublisherError(f"{path} holds a {res.kind}, not a Secret", reason="NotASecret")
    return dict(res.spec), res.generation or 0


# -- set ----------------------------------------------------------------------------------------

def _set(args: argparse.Namespace) -> int:
    from giter_agent.kinds.secret import SecretKind
    from giter_agent.spec.resources import NAME_RE, parse_resource
    from giter_agent.trust.sshsig import public_key_of
    from giter_bundle import secrets
    from giter_bundle.commands import open_exchange
    from giter_bundle.enrolment import check_name
    from giter_bundle.errors import PublisherError, UsageError

    if not NAME_RE.fullmatch(args.name):
        raise UsageError(f"secret name {args.name!r} must be lower-case letters, digits, "
                         "'-' or '.' (max 63)", reason="InvalidName")
    with open_exchange(args) as exchange:
        tip = exchange.require_tip()
        store = exchange.history.object_store
        tree = exchange.commit(tip).tree
        devices = exchange.devices(tip)
        if args.device is not None:
            folder = f"devices/{check_name('device id', args.device)}"
            if args.device not in devices:
                raise PublisherError(f"{args.device} is not enrolled (giter-bundle enroll)",
                                     reason="NotEnrolled")
        else:
            folder = f"groups/{check_name('group', args.group)}"
            if not any(args.group in d.groups for d in devices.values()):
                raise PublisherError(f"no enrolled device is in group {args.group}",
                                     reason="NoMembers")
        path = f"{folder}/{args.name}.yaml"
        spec, generation = _existing(store, tree, path)
        spec.pop("ciphertext", None)
        for field_name, value in (("path", args.path), ("mode", args.mode),
                                  ("owner", args.owner), ("group", args.file_group)):
            if value is not None:
                spec[field_name] = value
        if "path" not in spec:
            raise UsageError(f"a new secret needs --path (where {args.name} is written on "
                             "the device)")
        spec.setdefault("mode", "0600")

        publishers = secrets.read_publishers(store, tree)
        key = secrets.load_secrets_key(_secrets_key_path(args, exchange.worktree or
                                                         exchange.git_dir), create=True)
        mine = public_key_of(key)
        files: dict[str, bytes] = {}
        if all(p.key != mine for p in publishers):
            taken = {p.name for p in publishers}
            name = next(n for n in ["publisher", *(f"publisher-{i}" for i in range(2, 999))]
                        if n not in taken)
            publishers.append(secrets.Publisher(name, mine))
            files[secrets.RECIPIENTS_FILE] = secrets.format_recipients(publishers)

        # Who applies it: the agent's own selection, over the tree with this file in it
        # (a group member with its own Secret of this name does not).
        probe = secrets.document(args.name, spec, generation + 1,
                                 secrets.seal(b"", [], publishers))
        folders = secrets.read_folders(store, tree)
        folders[folder] = [f for f in folders.get(folder, []) if f[0] != path] + [(path, probe)]
        readers = sorted(secrets.scopes(devices, folders).get(path, set()))
        if not readers:
            raise PublisherError(f"no enrolled device would apply {path} (each member of "
                                 f"{args.group} has its own {args.name})", reason="NoMembers")
        spec["recipients"] = readers
        armored = secrets.seal(_read_value(args), [devices[d] for d in readers], publishers)
        files[path] = secrets.document(args.name, spec, generation + 1, armored)
        SecretKind().validate(parse_resource(path, files[path]).spec)  # what devices parse
        where = _commit(exchange, args, files,
                        f"Set secret {args.name} for {folder}\n\n"
                        f"Readable by: {', '.join(readers)} and the publisher secrets keys\n")
    import hashlib

    from giter_agent.core import age

    digest = hashlib.sha256(age.dearmor(armored)).hexdigest()
    print(f"sealed {path} for {', '.join(readers)} (+ {len(publishers)} publisher key(s)), "
          f"ciphertext sha256 {digest[:12]}; {where}")
    return 0


# -- rekey --------------------------------------------------------------------------------------

def _print_hints(hints: list[Any]) -> None:
    if not hints:
        print("no key that left could read any secret in the history")
        return
    print("rotate these values: a key that may no longer read them could read a version "
          "kept in the history")
    for hint in hints:
        gone = "" if hint.in_spec else " (no longer in the spec)"
        print(f"  {hint.path}{gone}: {'; '.join(hint.readers)}")


def _rekey(args: argparse.Namespace) -> int:
    from giter_agent.core import age
    from giter_agent.trust.sshsig import public_key_of
    from giter_bundle import secrets
    from giter_bundle.commands import open_exchange
    from giter_bundle.errors import PublisherError, UsageError

    with open_exchange(args) as exchange:
        tip = exchange.require_tip()
        store = exchange.history.object_store
        if args.rotate_hint:
            _print_hints(secrets.rotate_hints(store, tip, exchange.ancestors(tip)))
            return 0
        tree = exchange.commit(tip).tree
        devices = exchange.devices(tip)
        publishers = secrets.read_publishers(store, tree)
        key = secrets.load_secrets_key(_secrets_key_path(args, exchange.worktree or
                                                         exchange.git_dir), create=False)
        if all(p.key != public_key_of(key) for p in publishers):
            raise UsageError(f"your secrets key is not in {secrets.RECIPIENTS_FILE}, so it "
                             "opens no secret here", reason="NotAPublisherKey")
        wanted_publishers = {secrets.tag_of(p.key) for p in publishers}
        folders = secrets.read_folders(store, tree)
        files_by_path = {p: d for fs in folders.values() for p, d in fs}
        files: dict[str, bytes] = {}
        problems: list[str] = []
        for path, readers in sorted(secrets.scopes(devices, folders).items()):
            found = secrets.secret_file(path, files_by_path[path])
            assert found is not None
            ids = sorted(readers)
            device_tags = {secrets.tag_of(devices[d].key) for d in ids}
            # Wrong devices (or a stale spec.recipients) must be re-sealed; a missing
            # publisher key is added where this key can open the secret.
            wrong = (found.tags - wanted_publishers != device_tags
                     or found.spec.get("recipients", ids) != ids)
            if not wrong and wanted_publishers <= found.tags:
                continue
            try:
                value = age.decrypt(age.dearmor(found.spec["ciphertext"]), key)
            except age.AgeError as exc:
                if wrong:
                    problems.append(f"{path}: {exc.reason}: {exc}")
                else:
                    print(f"left {path} as it is: sealed to its devices, but not to your "
                          "secrets key, so rekey cannot re-seal it later")
                continue
            spec = {k: v for k, v in found.spec.items() if k != "ciphertext"}
            spec["recipients"] = ids
            generation = (found.document["metadata"].get("generation") or 0) + 1
            files[path] = secrets.document(found.name, spec, generation,
                                           secrets.seal(value, [devices[d] for d in ids],
                                                        publishers))
            print(f"re-sealed {path} for {', '.join(ids) or 'no device'}")
        if problems:
            raise PublisherError("nothing re-sealed; your secrets key cannot open: "
                                 + "; ".join(problems) + " (set those again with giter-bundle "
                                 "secret set)", reason="CannotRekey")
        if files:
            where = _commit(exchange, args, files,
                            f"Re-seal {len(files)} secret(s) to the enrolled keys\n\n"
                            + "".join(f"{p}\n" for p in sorted(files)))
            print(f"re-sealed {len(files)} secret(s); {where}")
        else:
            print("every secret is sealed to exactly its devices and the publisher keys")
        _print_hints(secrets.rotate_hints(store, exchange.tip or tip,
                                          exchange.ancestors(exchange.tip or tip)))
    return 0
