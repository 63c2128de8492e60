"""The layout of a git commit object, read strictly: the one commit parser.

Git writes a commit's headers in one order, once each (``tree``, ``parent``s, ``author``,
``committer``, then optional ``encoding``, ``mergetag``s and ``gpgsig``), with lower-case
hex ids, ``Name <email> seconds +hhmm`` identities and continuation lines only inside
the multi-line headers. ``parse_layout`` accepts that layout and nothing else, in time
linear in the object's length, and splits off the ``gpgsig`` header (the payload that
was signed and the armour, unchecked). The import gate (``history.store``) parses every
commit it walks with it before anything else reads it; ``trust.signed_commit`` adds
the check that the armour is exactly what ``ssh-keygen -Y sign`` writes.
"""

from __future__ import annotations

import re

from giter_agent.core.errors import TrustError
from giter_agent.core.named_tuple import NamedTuple

_HEX40 = re.compile(rb"[0-9a-f]{40}")
# "Name <email> seconds +hhmm", as git writes it; fsck's rule, a little looser on the name.
# The seconds fit in 64 bits as git's fsck demands (so no reader's int() can choke on them).
_IDENT = re.compile(rb"[^<>\n]*<[^<>\n]*> [0-9]{1,20} [+-][0-9]{4}")

# Header order git writes; "*" repeats, "?" optional. gpgsig must come last.
_ORDER = (("tree", "1"), ("parent", "*"), ("author", "1"), ("committer", "1"),
          ("encoding", "?"), ("mergetag", "*"), ("gpgsig", "?"))
_MULTILINE = {"mergetag", "gpgsig"}
_CONTINUATION = re.compile(rb"(?: [^\n]*\n)*")  # lines that continue a multi-line header


class CommitParts(NamedTuple):
    """What trust needs from one commit, all read from its exact stored bytes."""

    tree: bytes                 # hex id
    parents: tuple[bytes, ...]  # hex ids, in order (first parent first)
    message: bytes
    payload: bytes              # the commit minus its gpgsig header: what was signed
    signature: bytes | None     # the armour, exactly as ssh-keygen wrote it


def malformed(commit: str | None, detail: str) -> TrustError:
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
                raise malformed(commit, "continuation line outside a multi-line header")
            lines.append(line[1:])
            headers[-1] = (name, lines, start, end)
        else:
            key, sep, value = line.partition(b" ")
            if not sep:
                raise malformed(commit, f"header line without a value: {line[:40]!r}")
            name, lines, start = key.decode("ascii", errors="replace"), [value], pos
            if name in _MULTILINE:
                # Its continuation lines in one step (a signature's armour is a dozen
                # of them on every commit): the same lines the loop would take.
                found = _CONTINUATION.match(head, end)  # matches, if only nothing
                block = found.end() if found else end
                if block > end:
                    lines.extend(part[1:] for part in head[end:block - 1].split(b"\n"))
                    end = block
            headers.append((name, lines, start, end))
        pos = end
    return headers


_RANK = {name: index for index, (name, _) in enumerate(_ORDER)}


def _check_order(names: list[str], commit: str | None) -> None:
    rank = _RANK
    last = -1
    for name in names:
        if name == "gpgsig-sha256":
            raise malformed(commit, "gpgsig-sha256 header is not accepted")
        if name not in rank:
            raise malformed(commit, f"unknown header {name!r}")
        here = rank[name]
        if here < last or (here == last and _ORDER[here][1] != "*"):
            raise malformed(commit, f"duplicated or misplaced {name} header")
        last = here
    for name, count in _ORDER:
        if count == "1" and name not in names:
            raise malformed(commit, f"missing {name} header")


def parse_layout(raw: bytes, commit: str | None = None) -> CommitParts:
    """Parse a commit object's stored body strictly; ``commit`` names it in errors.

    Linear in ``len(raw)``. Refusals are ``TrustError(reason="MalformedCommit")``.
    """
    split = raw.find(b"\n\n")
    if split < 0:
        raise malformed(commit, "no blank line between headers and message")
    head = raw[:split + 1]
    if b"\0" in head or b"\r" in head:
        raise malformed(commit, "NUL or CR in headers")
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
                raise malformed(commit, f"{name} is not a 40-digit lowercase hex id")
            if name == "tree":
                tree = value
            else:
                parents.append(value)
        elif name in ("author", "committer") and not _IDENT.fullmatch(value):
            raise malformed(commit, f"malformed {name} line")
        elif name == "encoding" and not value:
            raise malformed(commit, "empty encoding header")
        elif name == "gpgsig":
            signature = b"\n".join(lines) + b"\n"
            payload = raw[:start] + raw[end:]
    return CommitParts(tree, tuple(parents), raw[split + 2:], payload, signature)
