"""The trailers a publisher writes in a signed commit's message: ``Expires:``,
``Giter-Branch:`` and ``Giter-Urgent:``.

``trust.spec_rule`` reads them from a new tip (a spec frozen by its expiry date, a tip
bound to its branch); ``giter-bundle lint`` and ``commit`` use the same parsers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from giter_agent.core.layout import BRANCH_TRAILER
from giter_agent.trust.checked_objects import refuse as _refuse

_RFC3339 = (  # compiled when first used (re's cache): few commits carry an expiry
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))")
_EXPIRES = re.compile(r"expires[ \t]*:(.*)", re.IGNORECASE)
_BRANCH = re.compile(re.escape(BRANCH_TRAILER) + r"[ \t]*:(.*)", re.IGNORECASE)


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 date-time with an explicit offset, as an aware UTC datetime."""
    match = re.fullmatch(_RFC3339, value)
    if match is None:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time with offset")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micro = int((match[7] or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if match[9]:
        if int(match[10]) > 23 or int(match[11]) > 59:
            raise ValueError(f"{value!r} has an impossible offset")
        offset = timedelta(hours=int(match[10]), minutes=int(match[11]))
        offset = -offset if match[9] == "-" else offset
    when = datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
    return when.astimezone(UTC)


def trailer_values(message: bytes, pattern: re.Pattern[str]) -> list[str]:
    """Values of the lines matching ``pattern`` in the last paragraph of a commit message.

    Any matching line in that paragraph counts, even among non-trailer lines: a
    publisher who meant to freeze or bind a spec must never be ignored on a formatting
    detail. The first paragraph is the subject, never trailers.
    """
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", message.decode("utf-8", "replace").strip())
                  if p.strip()]
    if len(paragraphs) < 2:
        return []
    return [m[1].strip() for line in paragraphs[-1].split("\n")
            if (m := pattern.fullmatch(line.strip()))]


def expires_of(message: bytes, commit: bytes | None = None) -> datetime | None:
    """The ``Expires:`` trailer in the last paragraph of a commit message, if any.

    Two of them, or one that does not parse, is a rejection.
    """
    values = trailer_values(message, _EXPIRES)
    if not values:
        return None
    name = commit.decode() if commit else "the new tip"
    if len(values) > 1:
        raise _refuse("InvalidExpires", f"commit {name} has {len(values)} Expires: trailers",
                      commit)
    try:
        return parse_rfc3339(values[0])
    except ValueError as exc:
        raise _refuse("InvalidExpires", f"commit {name}: Expires: {exc}", commit) from None


URGENT_TRAILER = "Giter-Urgent"
_URGENT = re.compile(re.escape(URGENT_TRAILER) + r"[ \t]*:(.*)", re.IGNORECASE)


def urgent_of(message: bytes) -> str | None:
    """The ``Giter-Urgent:`` trailer's reason ("" when it gives none), or None: a spec
    commit that overrides maintenance windows (``spec.windows``)."""
    values = trailer_values(message, _URGENT)
    return values[0] if values else None


def branch_of(message: bytes, commit: bytes | None = None) -> str | None:
    """The branch a commit names in its ``Giter-Branch:`` trailer, if any (two: refused)."""
    values = trailer_values(message, _BRANCH)
    if len(values) > 1:
        name = commit.decode() if commit else "the new tip"
        raise _refuse("WrongBranch", f"commit {name} has {len(values)} {BRANCH_TRAILER}: "
                      "trailers", commit)
    return values[0] if values else None


def with_branch_trailer(message: str, branch: str) -> str:
    """``message`` with ``Giter-Branch: <branch>`` added as its last trailer (once).

    What ``git commit --trailer 'Giter-Branch: main'`` does: appended to the last
    paragraph when that paragraph is already trailers, else as a paragraph of its own.
    """
    if branch_of(message.encode()) is not None:
        return message if message.endswith("\n") else message + "\n"
    body = message.rstrip("\n")
    paragraphs = re.split(r"\n[ \t]*\n", body)
    last = paragraphs[-1].split("\n")
    is_trailers = len(paragraphs) > 1 and all(
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*[ \t]*:.*", line) for line in last)
    return f"{body}{chr(10) if is_trailers else chr(10) * 2}{BRANCH_TRAILER}: {branch}\n"
