"""The publisher's signed commits and bundles, for machines without git.

Commits are built in the agent's own history layer and signed through the agent's own
signature code (``trust.signed_commit.sign_commit``), with an in-memory key or a
``giter_bundle.signing.KeygenSigner`` (ssh-keygen: passphrase, ssh-agent, FIDO), so there
is one implementation of both, and ``git verify-commit`` accepts what comes out. Plain
``git commit -S`` with ``gpg.format=ssh`` produces commits the agent accepts just the
same; nothing here is needed for that path.

Called by ``giter-bundle`` (init, enroll, commit) and by ``giter-agent demo``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

DEFAULT_IDENTITY = "Fleet Operator <ops@example.invalid>"


class PublisherRepo:
    """A repository whose branch the publisher signs commits onto (compare-and-swap)."""

    def __init__(self, path: Path, key: Any, *, branch: str = "main",
                 identity: str = DEFAULT_IDENTITY, history: Any = None) -> None:
        from giter_agent.history.store import History

        self.history = history if history is not None else History(Path(path))
        self.key = key
        self.branch = branch
        self.ref = f"refs/heads/{branch}".encode()
        self.identity = identity.encode()

    @property
    def tip(self) -> bytes | None:
        return self.history.ref(self.ref)

    def commit(self, files: dict[str, bytes], message: str, *, sign: bool = True,
               now: int | None = None) -> bytes:
        """Commit ``files`` (path -> content) over the branch's tree; signed unless told not."""
        from giter_agent.history.tree import replace_files

        parent = self.tip
        from giter_agent.history.objects import read_commit

        base = read_commit(self.history.object_store, parent).tree if parent is not None else None
        tree = replace_files(self.history.object_store, base, files)
        return self.commit_tree(tree, message, sign=sign, now=now, parent=parent)

    def commit_tree(self, tree: bytes, message: str, *, sign: bool = True,
                    now: int | None = None, parent: bytes | None = None) -> bytes:
        """Commit ``tree`` on top of ``parent`` (default: the tip) and move the branch.

        The message gets a ``Giter-Branch: <branch>`` trailer (unless it has one), which
        binds the signed commit to the branch it is for (docs/trust.md). The branch
        moves only if it still points at that parent: a concurrent commit by someone
        else is an error, never overwritten.
        """
        from dulwich.objects import Commit

        from giter_agent.history.objects import oid
        from giter_agent.trust.signed_commit import sign_commit
        from giter_agent.trust.trailers import with_branch_trailer

        parent = self.tip if parent is None else parent
        commit = Commit()
        commit.tree = oid(tree)
        commit.parents = [oid(parent)] if parent else []
        commit.author = commit.committer = self.identity
        commit.author_time = commit.commit_time = int(time.time()) if now is None else now
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = with_branch_trailer(message, self.branch).encode()
        if sign:
            sign_commit(commit, self.key)
        self.history.object_store.add_object(commit)
        self.history.set_ref(self.ref, parent, commit.id)
        return commit.id

    def bundle(self, path: Path, *, since: list[bytes] | None = None) -> Path:
        """Write the branch as a bundle; ``since`` = commits the devices already hold."""
        tip = self.tip
        if tip is None:
            raise ValueError("nothing to bundle: the branch has no commits")
        self.history.write_bundle(Path(path), {self.ref: tip}, exclude=since or [])
        return Path(path)
