"""Split a raw git commit object into the payload that was signed and its SSH signature.

``trust.spec_rule`` and ``trust.status_rule`` call ``parse`` on the exact stored bytes
of every commit they verify;
``sign_commit`` signs a dulwich commit the way ``git commit -S`` with ``gpg.format=ssh``
does (device status commits, tests, the benchmark).

Git finds the signature leniently: duplicated ``gpgsig`` headers, a ``gpgsig-sha256``
header beside it, re-wrapped or space-padded armour all still verify, yet each gives the
same signed content a new commit id. We accept one layout only: the headers git writes,
in git's order, once each, and armour byte-identical to what ``ssh-keygen -Y sign`` wrote.
"""

from __future__ import annotations

from dulwich.objects import Commit

from giter_agent.core.errors import TrustError
from giter_agent.history.commit_layout import CommitParts, malformed, parse_layout
from giter_agent.trust import sshsig


def parse(raw: bytes, commit: str | None = None) -> CommitParts:
    """Parse a commit's stored body strictly (``history.commit_layout``) and check that
    its signature armour, if any, is exactly what ``ssh-keygen -Y sign`` wrote."""
    parts = parse_layout(raw, commit)
    signature = parts.signature
    if signature is not None:
        if signature.startswith(b"-----BEGIN ") and not signature.startswith(sshsig.BEGIN):
            raise TrustError(f"commit {commit}: signature is not an SSH signature "
                             "(only gpg.format=ssh is supported)",
                             reason="UnsupportedSignatureFormat", commit=commit)
        try:
            sshsig.dearmor(signature)
        except TrustError as exc:
            raise malformed(commit, f"signature armour altered: {exc}") from None
    return parts


def split(raw: bytes, commit: str | None = None) -> tuple[bytes, bytes]:
    """(payload that was signed, armoured signature); a missing signature is refused."""
    parts = parse(raw, commit)
    if parts.signature is None:
        where = f"commit {commit} " if commit else "commit "
        raise TrustError(f"{where}is not signed", reason="UnsignedCommit", commit=commit)
    return parts.payload, parts.signature


def sign_commit(commit: Commit, private_key: sshsig.PrivateKey | sshsig.Signer) -> None:
    """Sign ``commit`` in place exactly as ``git commit -S`` would (ssh format, ns "git")."""
    commit.gpgsig = None
    payload = commit.as_raw_string()
    # dulwich stores the header value without the armour's final newline and writes
    # each further line as a continuation: the same bytes git's add_header_signature makes.
    commit.gpgsig = sshsig.sign_with(private_key, payload)[:-1]
    if split(commit.as_raw_string()) != (payload, commit.gpgsig + b"\n"):
        raise AssertionError("dulwich serialised the signed commit unlike git")
