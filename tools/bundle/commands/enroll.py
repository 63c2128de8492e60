"""``giter-bundle enroll ID KEY [--group G]... [--label K=V]...``: vouch for a device's key,
its groups and its labels.

``KEY`` is the line ``giter-agent key`` prints on the device (quoted), a file holding
it, or ``-`` to read it from stdin. The device's key goes to ``.giter/devices/<ID>.pub``
(one allowed_signers line, so ``cat .giter/devices/*.pub`` serves ``git verify-commit``)
and its groups and labels to ``.giter/devices/<ID>.yaml``, in one signed commit on the
spec branch. From then on ``import`` accepts that device's status commits, and only
those; the device picks its ``fleet/`` resources by these labels (docs/fleet.md).

Enrolling again with the same key changes only the groups (``--group`` given), the
labels (``--label`` given: the whole set; ``giter-bundle label`` edits one at a time) or
nothing; a different key needs ``--replace``. The re-enrolled device's status history
starts afresh: ``import`` accepts a new first status commit signed by the new key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from giter_bundle.commands import add_signing_arguments

HELP = ("enrol a device: its key (from `giter-agent key`), groups and labels, in a signed "
        "commit")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", help="the device id (device_id in its agent.toml)")
    p.add_argument("key", help="the line `giter-agent key` printed, a file holding it, or -")
    p.add_argument("--group", action="append", default=None, metavar="GROUP",
                   help="a group the device belongs to (repeatable; default: keep)")
    p.add_argument("--label", action="append", default=None, metavar="KEY=VALUE",
                   help="a label fleet/ selectors match (repeatable; default: keep)")
    p.add_argument("--replace", action="store_true",
                   help="replace the key of a device that is already enrolled")
    add_signing_arguments(p)
    p.add_argument("--no-commit", action="store_true",
                   help="write the files only; commit them yourself with git commit -S")


def _key_text(arg: str) -> str:
    if arg == "-":
        return sys.stdin.read()
    if "\n" not in arg and len(arg) < 4096 and Path(arg).is_file():
        return Path(arg).read_text(encoding="utf-8")
    return arg


def run(args: argparse.Namespace) -> int:
    from giter_bundle import signing
    from giter_bundle.commands import open_exchange
    from giter_bundle.enrolment import EnrolledDevice, check_name, parse_key, parse_label
    from giter_bundle.errors import PublisherError

    device_id = check_name("device id", args.device)
    key = parse_key(_key_text(args.key), device_id)
    with open_exchange(args) as exchange:
        enrolled = exchange.devices(exchange.require_tip())
        current = enrolled.get(device_id)
        if current is not None and current.key != key and not args.replace:
            raise PublisherError(f"{device_id} is enrolled with another key "
                                 f"({current.key.fingerprint()}); pass --replace to re-enrol it",
                                 reason="AlreadyEnrolled")
        for other in enrolled.values():
            if other.id != device_id and other.key == key:
                raise PublisherError(f"this key is already enrolled for {other.id}",
                                     reason="DuplicateKey")
        if args.group is not None:
            groups = tuple(dict.fromkeys(check_name("group", g) for g in args.group))
        else:
            groups = current.groups if current else ()
        if args.label is not None:
            labels = tuple(sorted(dict(parse_label(a) for a in args.label).items()))
        else:
            labels = current.labels if current else ()
        device = EnrolledDevice(device_id, key, groups, labels)
        if device == current:
            print(f"{device_id} is already enrolled with this key, groups and labels; "
                  "nothing to do")
            return 0
        files = device.files()
        if args.no_commit:
            exchange.write_files(files)
            print(f"wrote {', '.join(files)}; commit them with git commit -S --trailer "
                  f"'Giter-Branch: {exchange.branch}'")
            return 0
        what = "Re-enrol" if current is not None else "Enrol"
        message = (f"{what} device {device_id}" + (f" (groups: {', '.join(groups)})"
                                                   if groups else "")
                   + f"\n\nKey: {key.fingerprint()}\n"
                   + (f"Labels: {' '.join(f'{k}={v}' for k, v in labels)}\n" if labels else ""))
        root = exchange.worktree or exchange.git_dir
        path = signing.key_path(args.signing_key, root)
        sha = exchange.commit_files(files, message, signing.load_key(path),
                                    signing.identity(args.author, root))
        shown = ",".join(f"{k}={v}" for k, v in labels) or "none"
        print(f"enrolled {device_id} ({key.fingerprint()}), groups: "
              f"{', '.join(groups) or 'none'}, labels: {shown}; {exchange.branch} at "
              f"{sha.decode()[:12]}")
    return 0
