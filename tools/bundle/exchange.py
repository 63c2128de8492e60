"""The exchange repository as the publisher's tools see it: spec branch, trust, devices.

A plain git repository: with a work tree (what operators edit and commit in), or bare (a
hub that any git server may serve). ``Exchange`` finds its git directory and opens the
agent's ``History`` on it, the one piece of code that touches the object store, bundles
and refs. What the tools decide on is read from committed trees only, never from the
work tree: the trust file and the enrolled devices on the spec branch's tip, and each
device's ``refs/heads/status/<id>``.

Called by every ``giter-bundle`` command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dulwich.objects import Commit
from dulwich.refs import DiskRefsContainer

from giter_agent.config.agent_toml import BRANCH_RE, Limits
from giter_agent.core.layout import STATUS_PREFIX, TRUST_FILE, status_ref
from giter_agent.history.objects import oid, ref_name
from giter_agent.history.store import Caps, History
from giter_agent.trust.trust_files import TrustRoot
from giter_bundle.enrolment import EnrolledDevice, read_devices
from giter_bundle.errors import PublisherError, UsageError

__all__ = ["STATUS_PREFIX", "TRUST_FILE", "Exchange", "signed_by", "status_ref"]


def signed_by(object_store: Any, sha: bytes, key: Any) -> bool:
    """Whether commit ``sha`` carries a signature made with ``key`` (not re-verified).

    For telling a re-enrolled device's old status history from its new one: the old
    one was verified on import, against the key enrolled then.
    """
    from giter_agent.trust import signed_commit, sshsig

    parts = signed_commit.parse(object_store.get_raw(sha)[1], sha.decode())
    return parts.signature is not None and sshsig.signer_of(parts.signature) == key


class Exchange:
    """One exchange repository, opened for reading and for ref moves through ``History``."""

    def __init__(self, git_dir: Path, worktree: Path | None, branch: str) -> None:
        if not BRANCH_RE.fullmatch(branch):
            raise UsageError(f"branch {branch!r} is not a plain branch name")
        self.git_dir = git_dir
        self.worktree = worktree
        self.branch = branch
        # The same caps as a device with default [limits]: the hub takes in nothing a
        # device would refuse to send it.
        self.history = History(git_dir, Caps.from_limits(Limits()))
        self._refs = DiskRefsContainer(str(git_dir))

    @classmethod
    def open(cls, path: Path, branch: str = "main") -> Exchange:
        """The repository at ``path`` (its top folder, or a bare repository's folder)."""
        path = Path(path).absolute()
        dot_git = path / ".git"
        if dot_git.is_dir():
            return cls(dot_git, path, branch)
        if dot_git.is_file():
            # A linked worktree or submodule keeps its objects elsewhere; History needs them.
            raise UsageError(f"{path} is a linked worktree or submodule; run giter-bundle "
                             "in the repository's main checkout", reason="NotARepository")
        if (path / "HEAD").is_file() and (path / "objects").is_dir():
            return cls(path, None, branch)
        raise UsageError(f"{path} is not a git repository (giter-bundle init makes one, "
                         "-C names another)", reason="NotARepository")

    def close(self) -> None:
        self.history.close()

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the spec branch ---------------------------------------------------------------

    @property
    def branch_ref(self) -> bytes:
        return f"refs/heads/{self.branch}".encode()

    @property
    def tip(self) -> bytes | None:
        return self.history.ref(self.branch_ref)

    def require_tip(self) -> bytes:
        tip = self.tip
        if tip is None:
            raise PublisherError(f"{self.branch_ref.decode()} has no commits yet "
                                 "(giter-bundle init makes the first one)",
                                 reason="NoSpecBranch")
        return tip

    def commit(self, sha: bytes) -> Commit:
        obj = self.history.object_store[oid(sha)]
        if not isinstance(obj, Commit):
            raise PublisherError(f"{sha.decode()} is not a commit", reason="NotACommit")
        return obj

    def tree_of(self, commit: bytes | None) -> bytes | None:
        return None if commit is None else self.commit(commit).tree

    def ancestors(self, tip: bytes | None) -> set[bytes]:
        """``tip`` and every commit reachable from it, in the accepted store (the
        one walker, ``history.walk.ancestors``)."""
        from giter_agent.history.walk import ancestors

        return set() if tip is None else ancestors(self.history.object_store, tip)

    def on_branch(self, tip: bytes) -> Callable[[bytes], bool]:
        """Whether a commit is ``tip`` or one of its ancestors, remembered per commit.

        A walk from ``tip`` down to the commit asked about: a device that is up to date
        observed the tip or a commit just below it, so the whole spec history is not
        read for each device (a commit not on the branch costs a whole walk).
        """
        from giter_agent.core.errors import HistoryError
        from giter_agent.history.objects import has_object

        known: dict[bytes, bool] = {}

        def on_branch(sha: bytes) -> bool:
            if sha not in known:
                try:
                    known[sha] = (has_object(self.history.object_store, sha)
                                  and self.history.is_ancestor(sha, tip))
                except HistoryError:
                    known[sha] = False
            return known[sha]

        return on_branch

    # -- what the spec branch says ------------------------------------------------------

    def devices(self, commit: bytes | None = None) -> dict[str, EnrolledDevice]:
        """The devices enrolled on ``commit`` (default: the spec branch's tip)."""
        commit = commit or self.tip
        if commit is None:
            return {}
        devices, _problems = read_devices(self.history.object_store, self.commit(commit).tree)
        return devices

    def trust_root(self, commit: bytes | None = None, allowed_signers: Path | None = None
                   ) -> TrustRoot:
        """What a device pinned with this repository's trust file would trust.

        ``allowed_signers`` (a file) replaces the committed trust file, as a device's
        pinned file would.
        """
        from giter_agent.history.tree import read_file
        from giter_agent.trust import allowed_signers as signers_file

        if allowed_signers is not None:
            return TrustRoot.load(allowed_signers)
        commit = commit or self.tip
        data = None
        if commit is not None:
            data = read_file(self.history.object_store, self.commit(commit).tree, TRUST_FILE)
        if data is None:
            raise UsageError(f"{TRUST_FILE} is not on {self.branch}; name the publisher "
                             "keys with --allowed-signers", reason="NoTrustFile")
        keys = signers_file.keys_for(signers_file.parse(data, f"{self.branch}:{TRUST_FILE}"))
        return TrustRoot(keys)

    # -- the devices' status branches ---------------------------------------------------

    def status_tips(self) -> dict[str, bytes]:
        """device id -> tip of ``refs/heads/status/<id>``."""
        out: dict[str, bytes] = {}
        for name in self._refs.keys(base=ref_name(STATUS_PREFIX.rstrip(b"/"))):
            sha = self._refs[ref_name(STATUS_PREFIX + name)]
            out[name.decode(errors="replace")] = sha
        return out

    # -- signed commits of tool-written files ---------------------------------------------

    @property
    def head_on_branch(self) -> bool:
        """Whether the work tree's HEAD is the spec branch (then its index follows it)."""
        head = (self.git_dir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
        return self.worktree is not None and head == f"ref: {self.branch_ref.decode()}"

    def write_files(self, files: dict[str, bytes]) -> None:
        """Write ``files`` into the work tree (for ``--no-commit``: git commits them)."""
        if self.worktree is None:
            raise UsageError("a bare repository has no work tree to write files into")
        for path, data in files.items():
            target = self.worktree / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def commit_files(self, files: dict[str, bytes], message: str, key: Any,
                     identity: str) -> bytes:
        """Commit ``files`` over the tip, signed with ``key``; the work tree follows.

        Only these paths change, in the commit, the work tree and the index: whatever
        else the operator has staged or edited stays as it was (``git commit --only``).
        """
        from dulwich.repo import Repo

        from giter_bundle.publisher import PublisherRepo
        from giter_bundle.worktree import stage

        publisher = PublisherRepo(self.git_dir, key, branch=self.branch, identity=identity,
                                  history=self.history)
        sha = publisher.commit(files, message)
        if self.head_on_branch:
            self.write_files(files)
            with Repo(str(self.worktree)) as repo:
                stage(repo, sorted(files))
        return sha
