"""Split a raw git commit object into the payload that was signed and its SSH signature.

``trust.verify`` calls ``parse`` on the exact stored bytes of every commit it verifies;
``sign_commit`` signs a dulwich commit the way ``git commit -S`` with ``gpg.format=ssh``
does (device status commits, tests, the benchmark).

Git finds the signature leniently: duplicated ``gpgsig`` headers, a ``gpgsig-sha256``
header beside it, re-wrapped or space-padded armour all still verify, yet each gives the
same signed content a new commit id. We accept one layout only: the headers git writes,
in git's order, once each, and armour byte-identical to what ``ssh-keygen -Y sign`` wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dulwich.objects import Commit

from giter_agent.core.errors import TrustError
from giter_agent.trust import sshsig

_HEX40 = re.compile(rb"[0-9a-f]{40}")
# "Name <email> seconds +hhmm", as git writes it; fsck's rule, a little looser on the name.
# The seconds fit in 64 bits as git's fsck demands (so no reader's int() can choke on them).
_IDENT = re.compile(rb"[^<>\n]*<[^<>\n]*> [0-9]{1,20} [+-][0-9]{4}")

# Header order git writes; "*" repeats, "?" optional. gpgsig must come last.
_ORDER = (("tree", "1"), ("parent", "*"), ("author", "1"), ("committer", "1"),
          ("encoding", "?"), ("mergetag", "*"), ("gpgsig", "?"))
_MULTILINE = {"mergetag", "gpgsig"}


@dataclass(frozen=True)
class CommitParts:
    """What trust needs from one commit, all read from its exact stored bytes."""

    tree: bytes                 # hex id
    parents: tuple[bytes, ...]  # hex ids, in order (first parent first)
    message: bytes
    payload: bytes              # the commit minus its gpgsig header: what was signed
    signature: bytes | None     # the armour, exactly as ssh-keygen wrote it


def _malformed(commit: str | None, detail: str) -> TrustError:
    where = f"commit {commit}: " if commit else ""
    return TrustError(f"{where}{detail}", reason="MalformedCommit", commit=commit)


def _headers(head: bytes, commit: str | None) -> list[tuple[str, list[bytes], int, int]]:
    """(name, value lines, start, end) per header; continuation lines lose their space.

    Linear in the header's length: a continuation line is appended to its header's list
    in place (copying the list per line made 400,000 one-byte lines cost minutes).
    """
    headers: list[tuple[str, list[bytes], int, int]] = []
    lines: list[bytes] = []
    name = ""
    start = 0
    pos = 0
    while pos < len(head):
        end = head.index(b"\n", pos) + 1
        line = head[pos:end - 1]
        if line.startswith(b" "):
            if not headers or name not in _MULTILINE:
                raise _malformed(commit, "continuation line outside a multi-line header")
            lines.append(line[1:])
            headers[-1] = (name, lines, start, end)
        else:
            key, sep, value = line.partition(b" ")
            if not sep:
                raise _malformed(commit, f"header line without a value: {line[:40]!r}")
            name, lines, start = key.decode("ascii", errors="replace"), [value], pos
            headers.append((name, lines, start, end))
        pos = end
    return headers


def _check_order(names: list[str], commit: str | None) -> None:
    rank = {name: index for index, (name, _) in enumerate(_ORDER)}
    last = -1
    for name in names:
        if name == "gpgsig-sha256":
            raise _malformed(commit, "gpgsig-sha256 header is not accepted")
        if name not in rank:
            raise _malformed(commit, f"unknown header {name!r}")
        here = rank[name]
        if here < last or (here == last and _ORDER[here][1] != "*"):
            raise _malformed(commit, f"duplicated or misplaced {name} header")
        last = here
    for name, count in _ORDER:
        if count == "1" and name not in names:
            raise _malformed(commit, f"missing {name} header")


def parse(raw: bytes, commit: str | None = None, *, check_armour: bool = True) -> CommitParts:
    """Parse a commit object's stored body strictly; ``commit`` names it in errors.

    Linear in ``len(raw)``. ``check_armour=False`` checks the layout only (the import
    gate, which decides nothing about signatures); trust always checks the armour too.
    """
    split = raw.find(b"\n\n")
    if split < 0:
        raise _malformed(commit, "no blank line between headers and message")
    head = raw[:split + 1]
    if b"\0" in head or b"\r" in head:
        raise _malformed(commit, "NUL or CR in headers")
    headers = _headers(head, commit)
    _check_order([name for name, _, _, _ in headers], commit)

    tree = b""
    parents: list[bytes] = []
    signature = None
    payload = raw
    for name, lines, start, end in headers:
        value = lines[0]
        if name in ("tree", "parent"):
            if not _HEX40.fullmatch(value):
                raise _malformed(commit, f"{name} is not a 40-digit lowercase hex id")
            if name == "tree":
                tree = value
            else:
                parents.append(value)
        elif name in ("author", "committer") and not _IDENT.fullmatch(value):
            raise _malformed(commit, f"malformed {name} line")
        elif name == "encoding" and not value:
            raise _malformed(commit, "empty encoding header")
        elif name == "gpgsig":
            signature = b"\n".join(lines) + b"\n"
            payload = raw[:start] + raw[end:]
    if signature is not None and check_armour:
        if signature.startswith(b"-----BEGIN ") and not signature.startswith(sshsig.BEGIN):
            raise TrustError(f"commit {commit}: signature is not an SSH signature "
                             "(only gpg.format=ssh is supported)",
                             reason="UnsupportedSignatureFormat", commit=commit)
        try:
            sshsig.dearmor(signature)
        except TrustError as exc:
            raise _malformed(commit, f"signature armour altered: {exc}") from None
    return CommitParts(tree, tuple(parents), raw[split + 2:], payload, signature)


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
