"""``giter-bundle label DEVICE KEY=VALUE... KEY-...``: change an enrolled device's labels.

``KEY=VALUE`` sets a label, ``KEY-`` removes one (kubectl's notation). The labels live
in the device's signed ``Device`` document (``.giter/devices/<DEVICE>.yaml``), so the
change is one signed commit on the spec branch and takes effect on the device when it
gets that commit: its ``fleet/`` resources and label values are chosen again from the
new labels (docs/fleet.md). With no change given, prints the device's labels.
"""

from __future__ import annotations

import argparse

from giter_bundle.commands import add_signing_arguments

HELP = "set (KEY=VALUE) or remove (KEY-) labels of an enrolled device, in a signed commit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", help="an enrolled device id")
    p.add_argument("changes", nargs="*", metavar="KEY=VALUE|KEY-",
                   help="labels to set or remove (none: print the labels)")
    add_signing_arguments(p)
    p.add_argument("--no-commit", action="store_true",
                   help="write the file only; commit it yourself with git commit -S")


def run(args: argparse.Namespace) -> int:
    import re
    from dataclasses import replace

    from giter_agent.spec.selectors import LABEL_PATTERN
    from giter_bundle import signing
    from giter_bundle.commands import open_exchange
    from giter_bundle.enrolment import check_name, parse_label
    from giter_bundle.errors import PublisherError, UsageError

    device_id = check_name("device id", args.device)
    with open_exchange(args) as exchange:
        current = exchange.devices(exchange.require_tip()).get(device_id)
        if current is None:
            raise PublisherError(f"{device_id} is not enrolled (giter-bundle enroll)",
                                 reason="UnknownDevice")
        labels = current.label_map
        for change in args.changes:
            if change.endswith("-") and "=" not in change:
                key = change[:-1]
                if not re.fullmatch(LABEL_PATTERN, key):
                    raise UsageError(f"{change!r}: {key!r} is not a label key",
                                     reason="InvalidLabels")
                labels.pop(key, None)
            else:
                key, value = parse_label(change)
                labels[key] = value
        shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
        device = replace(current, labels=tuple(sorted(labels.items())))
        if device == current:
            print(f"{device_id} labels: {shown}" + ("; nothing to change" if args.changes
                                                    else ""))
            return 0
        files = {path: data for path, data in device.files().items()
                 if path.endswith(".yaml")}
        if args.no_commit:
            exchange.write_files(files)
            print(f"wrote {', '.join(files)}; commit it with git commit -S --trailer "
                  f"'Giter-Branch: {exchange.branch}'")
            return 0
        root = exchange.worktree or exchange.git_dir
        path = signing.key_path(args.signing_key, root)
        sha = exchange.commit_files(files, f"Label device {device_id}: {shown}\n",
                                    signing.load_key(path),
                                    signing.identity(args.author, root))
        print(f"{device_id} labels: {shown}; {exchange.branch} at {sha.decode()[:12]}")
    return 0
