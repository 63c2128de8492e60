"""What docs/kinds.md says a File may hold is what the agent accepts.

The binding limit is the 256 KiB cap on a resource document (``giter_agent.spec.resources``), not
the File kind's own cap; through base64 that leaves about 191 KiB of binary.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from giter_agent.core.errors import ResourceError
from giter_agent.kinds.file import FileKind
from giter_agent.spec.resources import MAX_DOCUMENT_BYTES, parse_resource

DOCS = Path(__file__).resolve().parent.parent / "docs" / "kinds.md"
HEAD = (b"apiVersion: giter.dev/v1alpha1\nkind: File\nmetadata: {name: blob}\nspec:\n"
        b"  path: /srv/blob.bin\n  contentBase64: ")


def accepted(size: int) -> bool:
    doc = HEAD + base64.b64encode(b"\x00" * size) + b"\n"
    try:
        FileKind().validate(dict(parse_resource("groups/a/blob.yaml", doc).spec))
    except ResourceError:
        return False
    return True


def largest_binary() -> int:
    lo, hi = 0, MAX_DOCUMENT_BYTES
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if accepted(mid) else (lo, mid - 1)
    return lo


def test_the_documented_content_limit_is_the_one_the_agent_applies():
    row = next(line for line in DOCS.read_text().splitlines()
               if line.startswith("| `content` / `contentBase64`"))
    assert "1 MiB" not in row
    assert f"{MAX_DOCUMENT_BYTES // 1024} KiB" in row
    stated = re.search(r"about (\d+) KiB of binary", row)
    assert stated, row
    largest = largest_binary()
    assert int(stated.group(1)) == largest // 1024
    assert not accepted(largest + 3)  # the next whole base64 group is refused


def test_a_document_over_the_cap_is_refused_as_too_large():
    with pytest.raises(ResourceError) as caught:
        parse_resource("groups/a/blob.yaml", HEAD + b"A" * MAX_DOCUMENT_BYTES)
    assert caught.value.reason == "DocumentTooLarge"
