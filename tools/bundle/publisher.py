"""The publisher's repository, in pure Python: signed spec commits and bundles for devices.

For machines without git (and for ``giter-agent demo``): commits are built with the
agent's own history layer and signed with an OpenSSH ed25519 key through the agent's
own signature code, so there is one implementation of both. Plain ``git commit -S``
with ``gpg.format=ssh`` produces commits the agent accepts just the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


class PublisherRepo:
    """A bare exchange repository whose branch the publisher signs commits onto."""

    def __init__(self, path: Path, key: Any, *, branch: str = "main",
                 identity: str = "Fleet Operator <ops@example.invalid>") -> None:
        from agent.history import History

        self.history = History(Path(path))
        self.key = key
        self.ref = f"refs/heads/{branch}".encode()
        self.identity = identity.encode()

    @property
    def tip(self) -> bytes | None:
        return self.history.ref(self.ref)

    def commit(self, files: dict[str, bytes], message: str, *, sign: bool = True,
               now: int | None = None) -> bytes:
        """Commit ``files`` (path -> content) on top of the branch; signed unless told not."""
        from dulwich.objects import Commit, Tree

        from agent.signed_commit import sign_commit
        from agent.tree import replace_files

        store = self.history.object_store
        parent = self.tip
        if parent is None:
            empty = Tree()
            store.add_object(empty)
            base = empty.id
        else:
            base = store[parent].tree
        commit = Commit()
        commit.tree = replace_files(store, base, files)
        commit.parents = [parent] if parent else []
        commit.author = commit.committer = self.identity
        commit.author_time = commit.commit_time = int(time.time()) if now is None else now
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = message.encode() if message.endswith("\n") else (message + "\n").encode()
        if sign:
            sign_commit(commit, self.key)
        store.add_object(commit)
        self.history.set_ref(self.ref, parent, commit.id)
        return commit.id

    def bundle(self, path: Path, *, since: list[bytes] | None = None) -> Path:
        """Write the branch as a bundle; ``since`` = commits the devices already hold."""
        tip = self.tip
        if tip is None:
            raise ValueError("nothing to bundle: the branch has no commits")
        self.history.write_bundle(Path(path), {self.ref: tip}, exclude=since or [])
        return Path(path)
