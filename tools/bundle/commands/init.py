"""``giter-bundle init [DIR]``: make an exchange repository, or adopt an existing git one.

Lays out ``.giter/trust/allowed_signers`` (the publisher keys: the signing key's public
half, plus any ``--signer``), READMEs for ``devices/`` and ``groups/``, and a README for
the people who edit the repository; sets ``gpg.format=ssh``, ``commit.gpgsign`` and
``user.signingkey`` where they are not set, so ``git commit -S`` works at once; and makes
the first signed commit. Files that already exist are never overwritten.

Adopting a repository whose spec branch already has commits: devices verify every
commit from the first one, so that history must already be signed by the publisher
keys; if it is not, nothing is changed and the command says which commit fails. Start
a fresh spec branch in the same repository with ``--branch`` instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from giter_bundle.exchange import Exchange

from giter_bundle.commands import add_signing_arguments

HELP = "create an exchange repository (or adopt a git repository)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", nargs="?", type=Path,
                   help="where (default: -C, or the current folder)")
    add_signing_arguments(p)
    p.add_argument("--signer", type=Path, action="append", default=[], metavar="PUBFILE",
                   help="also trust this publisher public key (repeatable)")
    p.add_argument("--principal", default="publisher",
                   help="name for the signing key in the trust file (informational)")
    p.add_argument("--no-commit", action="store_true",
                   help="write the files only; commit them yourself with git commit -S")


def _public_line(key: Path) -> str:
    """``<type> <base64>`` of a key pair, from its ``.pub`` or from the private half."""
    from giter_agent.trust import sshsig
    from giter_bundle.signing import load_key

    pub = key.with_name(key.name + ".pub")
    if pub.is_file():
        return sshsig.PublicKey.from_openssh(pub.read_text()).openssh()
    return sshsig.public_key_of(load_key(key)).openssh()


def _trust_file(args: argparse.Namespace, key: Path) -> bytes:
    from giter_agent.trust import allowed_signers
    from giter_agent.trust.sshsig import PublicKey
    from giter_bundle.enrolment import check_name

    check_name("principal", args.principal)
    lines = [f'{args.principal} namespaces="git" {_public_line(key)}']
    for i, path in enumerate(args.signer, start=2):
        lines.append(f'{args.principal}-{i} namespaces="git" '
                     f"{PublicKey.from_openssh(path.read_text()).openssh()}")
    data = ("\n".join(lines) + "\n").encode()
    allowed_signers.parse(data, "allowed_signers")  # what devices will parse
    return data


def _configure_git(repo_root: Path, key: Path) -> list[str]:
    """Set what ``git commit -S`` needs, where the repository does not say otherwise."""
    from dulwich.repo import Repo

    changed = []
    with Repo(str(repo_root)) as repo:
        config = repo.get_config()
        for section, name, value in ((b"gpg", b"format", b"ssh"),
                                     (b"commit", b"gpgsign", b"true"),
                                     (b"user", b"signingkey", str(key.absolute()).encode())):
            try:
                config.get((section,), name)
            except KeyError:
                config.set((section,), name, value)
                changed.append(f"{section.decode()}.{name.decode()}={value.decode()}")
        config.write_to_path()
    return changed


def _check_history(exchange: Exchange, trust: bytes) -> None:
    """Refuse to adopt a branch whose history devices would refuse."""
    from giter_agent.core.errors import TrustError
    from giter_agent.trust import allowed_signers
    from giter_agent.trust.verify import TrustRoot, verify_update
    from giter_bundle.errors import PublisherError

    tip = exchange.tip
    if tip is None:
        return
    root = TrustRoot(allowed_signers.keys_for(allowed_signers.parse(trust)))
    try:
        verify_update(exchange.history.object_store, None, tip, root)
    except TrustError as exc:
        raise PublisherError(
            f"{exchange.branch} cannot be adopted: devices verify every commit from the "
            f"first, and {exc}. Nothing was changed; start a new spec branch with "
            f"--branch NAME (or re-sign the history)", reason=exc.reason) from None


def _roots(exchange: Exchange, tip: bytes) -> list[str]:
    return sorted(sha.decode() for sha in exchange.ancestors(tip)
                  if not exchange.commit(sha).parents)


def run(args: argparse.Namespace) -> int:
    from dulwich.repo import Repo

    from giter_agent.history.tree import read_file
    from giter_bundle import signing
    from giter_bundle.errors import UsageError
    from giter_bundle.exchange import TRUST_FILE, Exchange
    from giter_bundle.layout import layout_files

    root = (args.directory or args.repo).absolute()
    adopting = (root / ".git").exists() or (root / "HEAD").is_file()
    key = signing.key_path(args.signing_key, root if adopting else None)
    trust = _trust_file(args, key)
    if not adopting:
        root.mkdir(parents=True, exist_ok=True)
        Repo.init(str(root), default_branch=args.branch.encode()).close()
    with Exchange.open(root, args.branch) as exchange:
        if exchange.worktree is None and args.no_commit:
            raise UsageError("a bare repository has no work tree to write files into")
        tip = exchange.tip
        tree = exchange.tree_of(tip)
        store = exchange.history.object_store

        def committed(path: str) -> bool:
            return tree is not None and read_file(store, tree, path) is not None

        has_trust = committed(TRUST_FILE)
        _check_history(exchange, read_file(store, tree, TRUST_FILE) if has_trust else trust)
        readme = "README.md"
        if committed(readme) or (exchange.worktree and (exchange.worktree / readme).exists()):
            readme = ".giter/README.md"
        wanted = {TRUST_FILE: trust, **layout_files(args.branch, readme_path=readme)}
        files = {p: data for p, data in wanted.items() if not committed(p)
                 and not (exchange.worktree and (exchange.worktree / p).exists())}
        if exchange.worktree is not None:
            for change in _configure_git(exchange.worktree, key):
                print(f"git config {change}")
        for path in files:
            print(f"wrote {path}")
        if not files:
            print(f"{root} is already an exchange repository; nothing to do")
            return 0
        if args.no_commit:
            exchange.write_files(files)
            print("now review and commit them: git add -A && git commit -S -m 'Start the "
                  "exchange repository'")
            return 0
        sha = exchange.commit_files(files, "Start the exchange repository: trust file and "
                                    "layout", signing.load_key(key),
                                    signing.identity(args.author, root))
        print(f"{'adopted' if adopting else 'created'} {root}: {args.branch} at "
              f"{sha.decode()[:12]} (signed)")
        roots = _roots(exchange, sha)
        print(f"genesis commit (pin it as `genesis` in each agent.toml): {', '.join(roots)}")
        print(f"install {TRUST_FILE} as each device's allowed_signers file")
    return 0

