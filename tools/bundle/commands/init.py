"""``giter-bundle init [DIR]``: make an exchange repository, or adopt an existing git one.

Lays out ``.giter/trust/allowed_signers`` (the publisher keys: the signing key's public
half, plus any ``--signer``), for a new fleet ``.giter/trust/policy.toml`` with
``bind_branch = true`` (every tip must carry a signed ``Giter-Branch:`` trailer naming
its branch; docs/trust.md), READMEs for ``devices/`` and ``groups/``, and a README for
the people who edit the repository; sets ``gpg.format=ssh``, ``commit.gpgsign`` and
``user.signingkey`` so ``git commit -S`` works at once (a ``user.signingkey`` naming a
key the trust file does not list is replaced, and said so); and makes the first signed
commit. Files that already exist are never overwritten. It is all or nothing: the key,
the author and the history are checked before anything is written, and a commit that
fails (a passphrase not given, a security key not touched) leaves no repository and no
git setting behind.

Adopting a repository whose spec branch already has commits: devices verify every
commit from the first one, so that history must already be signed by the publisher
keys; if it is not, nothing is changed and the command says which commit fails. Start
a fresh spec branch in the same repository with ``--branch`` instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def _trust_file(args: argparse.Namespace, public: Any) -> bytes:
    from giter_agent.trust import allowed_signers
    from giter_agent.trust.sshsig import PublicKey
    from giter_bundle.enrolment import check_name
    from giter_bundle.errors import UsageError

    check_name("principal", args.principal)
    lines = [f'{args.principal} namespaces="git" {public.openssh()}']
    for i, path in enumerate(args.signer, start=2):
        try:
            line = PublicKey.from_openssh(path.read_text()).openssh()
        except OSError as exc:
            raise UsageError(f"--signer {path}: cannot read ({exc.strerror})") from None
        lines.append(f'{args.principal}-{i} namespaces="git" {line}')
    data = ("\n".join(lines) + "\n").encode()
    allowed_signers.parse(data, "allowed_signers")  # what devices will parse
    return data


def _signingkey_value(spec: str) -> str:
    """``user.signingkey`` as git wants it: an absolute path, or ``key::`` and a literal."""
    if spec.startswith("key::") or " " in spec.strip():
        return spec if spec.startswith("key::") else f"key::{spec}"
    return str(Path(spec).expanduser().absolute())


def _trusts(spec: str, trusted: tuple[Any, ...]) -> bool:
    """Whether the key ``spec`` names is one of ``trusted`` (False when it cannot be read)."""
    from giter_bundle import signing
    from giter_bundle.errors import UsageError

    try:
        return signing.public_key(signing.load_key(spec)) in trusted
    except UsageError:
        return False


def _configure_git(repo_root: Path, spec: str, trusted: tuple[Any, ...]) -> list[str]:
    """Make ``git commit -S`` in this repository sign with a key the trust file lists.

    Sets ``gpg.format=ssh`` and ``commit.gpgsign=true`` where unset; ``gpg.format`` set
    to anything but ssh, and a ``user.signingkey`` naming a key the trust file does not
    list (say, left by an earlier init with another key), are replaced, and said so.
    """
    from dulwich.repo import Repo

    changed = []
    with Repo(str(repo_root)) as repo:
        config = repo.get_config()

        def current(section: bytes, name: bytes) -> str | None:
            try:
                return config.get((section,), name).decode("utf-8", errors="replace")
            except KeyError:
                return None

        wanted = (("gpg", "format", "ssh", lambda v: v == "ssh"),
                  ("commit", "gpgsign", "true", lambda v: True),
                  ("user", "signingkey", _signingkey_value(spec),
                   lambda v: _trusts(v, trusted)))
        for section, name, value, keep in wanted:
            old = current(section.encode(), name.encode())
            if old is not None and keep(old):
                continue
            config.set((section.encode(),), name.encode(), value.encode())
            note = "" if old is None else f" (was {old}: "
            if old is not None:
                note += ("the trust file does not list that key)" if name == "signingkey"
                         else "devices only accept ssh signatures)")
            changed.append(f"{section}.{name}={value}{note}")
        config.write_to_path()
    return changed


def _check_history(exchange: Exchange, trust: bytes) -> None:
    """Refuse to adopt a branch whose history devices would refuse."""
    from giter_agent.core.errors import TrustError
    from giter_agent.trust import allowed_signers
    from giter_agent.trust.spec_rule import TrustRoot, verify_update
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
    """Everything that can fail is checked before anything is written; a commit that
    fails (a passphrase not given, a security key not touched) leaves no repository and
    no git setting behind."""
    import shutil

    from dulwich.repo import Repo

    from giter_bundle import signing

    root = (args.directory or args.repo).absolute()
    adopting = (root / ".git").exists() or (root / "HEAD").is_file()
    spec = signing.key_path(args.signing_key, root if adopting else None)
    signer = signing.load_key(spec)
    public = signing.public_key(signer)
    trust = _trust_file(args, public)
    who = None if args.no_commit else signing.identity(args.author,
                                                      root if adopting else None)
    made_root = not root.exists()
    if not adopting:
        root.mkdir(parents=True, exist_ok=True)
        Repo.init(str(root), default_branch=args.branch.encode()).close()
    try:
        return _init(args, root, adopting, spec, signer, trust, who)
    except BaseException:
        if not adopting:  # leave the folder as we found it
            shutil.rmtree(root if made_root else root / ".git", ignore_errors=True)
        raise


def _init(args: argparse.Namespace, root: Path, adopting: bool, spec: str, signer: Any,
          trust: bytes, who: str | None) -> int:
    from giter_agent.history.tree import read_file
    from giter_agent.trust import allowed_signers
    from giter_bundle import signing
    from giter_bundle.errors import PublisherError, UsageError
    from giter_bundle.exchange import TRUST_FILE, Exchange
    from giter_bundle.layout import POLICY, POLICY_FILE, layout_files

    public = signing.public_key(signer)
    with Exchange.open(root, args.branch) as exchange:
        if exchange.worktree is None and args.no_commit:
            raise UsageError("a bare repository has no work tree to write files into")
        tip = exchange.tip
        tree = exchange.tree_of(tip)
        store = exchange.history.object_store

        def committed(path: str) -> bool:
            return tree is not None and read_file(store, tree, path) is not None

        committed_trust = read_file(store, tree, TRUST_FILE) if tree is not None else None
        in_force = committed_trust if committed_trust is not None else trust
        trusted = allowed_signers.keys_for(allowed_signers.parse(in_force, TRUST_FILE))
        if public not in trusted:
            raise PublisherError(
                f"{spec} ({public.fingerprint()}) is not in the committed {TRUST_FILE}, so "
                "devices would refuse what it signs; nothing was changed. Sign with a "
                "listed key, or add this one to the trust file in a commit signed by one",
                reason="UntrustedSigningKey")
        _check_history(exchange, in_force)
        readme = "README.md"
        if committed(readme) or (exchange.worktree and (exchange.worktree / readme).exists()):
            readme = ".giter/README.md"
        wanted = {TRUST_FILE: trust, **layout_files(args.branch, readme_path=readme)}
        if tip is None:  # a new fleet: its tips name their branch from the first commit on
            wanted[POLICY_FILE] = POLICY.encode()
        files = {p: data for p, data in wanted.items() if not committed(p)
                 and not (exchange.worktree and (exchange.worktree / p).exists())}

        def configure() -> None:
            if exchange.worktree is not None:
                for change in _configure_git(exchange.worktree, spec, trusted):
                    print(f"git config {change}")

        if not files:
            configure()
            print(f"{root} is already an exchange repository; nothing to do")
            return 0
        if args.no_commit:
            exchange.write_files(files)
            configure()
            for path in files:
                print(f"wrote {path}")
            print("now review and commit them: git add -A && git commit -S --trailer "
                  "'Giter-Branch: " + args.branch + "' -m 'Start the "
                  "exchange repository'")
            return 0
        assert who is not None
        sha = exchange.commit_files(files, "Start the exchange repository: trust file and "
                                    "layout", signer, who)
        configure()
        for path in files:
            print(f"wrote {path}")
        print(f"{'adopted' if adopting else 'created'} {root}: {args.branch} at "
              f"{sha.decode()[:12]} (signed)")
        roots = _roots(exchange, sha)
        print(f"genesis commit (pin it as `genesis` in each agent.toml): {', '.join(roots)}")
        print(f"install {TRUST_FILE} as each device's allowed_signers file")
    return 0
