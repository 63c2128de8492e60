"""``giter-bundle hub gitolite ADMIN``: make the hub enforce who writes which branch.

Writes into ``ADMIN``, a clone of the hub's gitolite-admin repository, the rules and
keys that let each enrolled device read the repository and create or fast-forward
only ``refs/heads/status/<its id>`` (no deletion, no rewind), and the publisher keys
(default: those in the spec branch's trust file) write the spec branch. Re-run it after
every ``enroll``, ``enroll --replace`` or removal of a device, then commit and push
``ADMIN``: the hub follows enrolment. Devices log in with their enrolled key
(``[network] ssh_key`` left out of agent.toml). docs/network.md has the whole recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from giter_agent.trust.sshsig import PublicKey

HELP = "generate the git server's per-device write rules (gitolite) from the enrolment"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="server", required=True, metavar="SERVER")
    g = sub.add_parser("gitolite", help="conf/giter/<repo>.conf and keydir/giter/<repo>/ "
                       "in a gitolite-admin clone", description=__doc__)
    g.add_argument("admin", type=Path, help="a work tree of the hub's gitolite-admin repository")
    g.add_argument("--repo-name", default="fleet", metavar="NAME",
                   help="the repository's name on the hub (default fleet: "
                   "ssh://git@HUB/fleet)")
    g.add_argument("--publisher-key", action="append", type=Path, default=None,
                   metavar="FILE", help="an SSH public key (.pub) that may push the spec "
                   "branch (repeatable; default: the keys of .giter/trust/allowed_signers)")


def _publisher_keys(files: list[Path]) -> list[PublicKey]:
    from giter_agent.core.errors import TrustError
    from giter_agent.trust.sshsig import PublicKey
    from giter_bundle.errors import UsageError

    keys: list[PublicKey] = []
    for path in files:
        try:
            keys.append(PublicKey.from_openssh(path.read_text(encoding="utf-8").strip()))
        except OSError as exc:
            raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
        except (TrustError, UnicodeDecodeError, IndexError) as exc:
            raise UsageError(f"{path}: not an SSH public key line ({exc})",
                             reason="InvalidKey") from None
    return keys


def run(args: argparse.Namespace) -> int:
    from giter_bundle.commands import open_exchange
    from giter_bundle.hub_gitolite import apply, gitolite_files

    with open_exchange(args) as exchange:
        tip = exchange.require_tip()
        devices = exchange.devices(tip)
        if args.publisher_key:
            publishers = _publisher_keys(args.publisher_key)
        else:
            publishers = list(exchange.trust_root(tip).signers)
        files = gitolite_files(args.repo_name, exchange.branch, devices.values(), publishers,
                               f"{exchange.branch} at {tip.decode()}")
    changes = apply(args.admin, files)
    for what, users in (("added", changes.added), ("replaced", changes.replaced),
                        ("removed", changes.removed)):
        if users:
            shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more"
                                              if len(users) > 10 else "")
            print(f"{what} {len(users)} key(s): {shown}")
    if changes.include_added:
        print(f"added `{files.include_line}` to conf/gitolite.conf")
    if not changes.any:
        print(f"{args.admin} already matches {exchange.branch} at {tip.decode()[:12]}; "
              "nothing to push")
        return 0
    print(f"{files.conf_path}: {len(devices)} device(s), {len(publishers)} publisher key(s). "
          f"Now: git -C {args.admin} add -A && git -C {args.admin} commit -m 'giter fleet' "
          f"&& git -C {args.admin} push")
    return 0
