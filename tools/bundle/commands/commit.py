"""``giter-bundle commit -m MSG``: sign the work tree's changes, no git needed.

Does what ``git add -A && git commit -S`` does, for machines without git: every change
in the work tree (``.gitignore`` honoured, deletions included) goes into one commit on
the spec branch, signed with the key git would use (``giter_bundle.signing``: a key file
in-process, a passphrase, ssh-agent or FIDO key through ``ssh-keygen -Y sign``), so
``git verify-commit`` and the devices accept it. An ``Expires:`` already past is warned
about. Before that, it bumps
``metadata.generation`` of each resource whose ``spec`` changed (a new resource gets 1),
editing only that number in the file, and lints the result: a tree that fails lint is
not committed, and nothing is written (``--no-lint`` commits anyway).

``--bump-only`` bumps the generations and stops, for those who then sign with
``git commit -S``. Several ``-m`` make several paragraphs, as with git; the last one may
carry an ``Expires:`` trailer (docs/trust.md).
"""

from __future__ import annotations

import argparse

from giter_bundle.commands import add_signing_arguments

HELP = "sign the work tree's changes without git, bumping changed resources' generation"

_RESOURCE_DIRS = ("devices/", "groups/")  # + <name>/ ... ; fleet/ holds resources directly


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--message", action="append", metavar="MSG",
                   help="commit message (repeatable: one paragraph each)")
    add_signing_arguments(p)
    p.add_argument("--no-lint", action="store_true", help="commit even if lint finds errors")
    p.add_argument("--bump-only", action="store_true",
                   help="only bump metadata.generation in the work tree; commit nothing")


def _is_resource(path: str) -> bool:
    from giter_agent.core.layout import FLEET_FOLDER

    deep = path.startswith(_RESOURCE_DIRS) and path.count("/") >= 2
    return (deep or path.startswith(FLEET_FOLDER + "/")) and path.endswith((".yaml", ".yml"))


def run(args: argparse.Namespace) -> int:
    import time

    from dulwich.repo import Repo

    from giter_agent.core.layout import SPEC_FOLDERS
    from giter_agent.history.tree import read_file
    from giter_bundle import signing
    from giter_bundle.commands import open_exchange
    from giter_bundle.errors import UsageError
    from giter_bundle.generation import bump
    from giter_bundle.lint import expires_findings, lint_tree
    from giter_bundle.publisher import PublisherRepo
    from giter_bundle.secrets import former_keys
    from giter_bundle.worktree import candidate_paths, read_files, stage, tree_of

    if not args.message and not args.bump_only:
        raise UsageError("say what changed and why: -m MESSAGE")
    with open_exchange(args) as exchange:
        if exchange.worktree is None:
            raise UsageError("commit needs a work tree; this repository is bare")
        if not exchange.head_on_branch:
            raise UsageError(f"the work tree is not on {exchange.branch}; check it out, or "
                             "pass --branch")
        if not args.bump_only:  # a missing key must stop us before anything is written
            key = signing.load_key(signing.key_path(args.signing_key, exchange.worktree))
            identity = signing.identity(args.author, exchange.worktree)
        tip = exchange.tip
        tip_tree = exchange.tree_of(tip)
        store = exchange.history.object_store
        with Repo(str(exchange.worktree)) as repo:
            paths = candidate_paths(repo)
            files = read_files(exchange.worktree, paths, SPEC_FOLDERS)
            bumped: dict[str, int] = {}
            for path, (mode, data) in sorted(files.items()):
                if mode == 0o120000 or not _is_resource(path):
                    continue
                old = read_file(store, tip_tree, path) if tip_tree is not None else None
                result = bump(old, data, path)
                if result is not None:
                    files[path] = (mode, result[0])
                    bumped[path] = result[1]
            if not args.no_lint:
                errors = [f for f in lint_tree(*tree_of(files, store),
                                               former_keys=former_keys(exchange)) if f.error]
                if errors:
                    for finding in errors:
                        print(finding.line())
                    print(f"not committed: {len(errors)} lint error(s) (--no-lint to commit "
                          "anyway); nothing was changed")
                    return 1
            for path, generation in bumped.items():
                (exchange.worktree / path).write_bytes(files[path][1])
                print(f"{path}: metadata.generation -> {generation}")
            if args.bump_only:
                return 0
            tree = stage(repo, paths)
        if tree == tip_tree:
            print(f"nothing to commit: the work tree matches {exchange.branch}")
            return 1
        message = "\n\n".join(args.message)
        for finding in expires_findings(message.encode(), time.time(), "commit message"):
            print(finding.line())
        publisher = PublisherRepo(exchange.git_dir, key, branch=exchange.branch,
                                  identity=identity, history=exchange.history)
        sha = publisher.commit_tree(tree, message, parent=tip)
        print(f"[{exchange.branch} {sha.decode()[:12]}] {args.message[0]} (signed)")
    return 0
