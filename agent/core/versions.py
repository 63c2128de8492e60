"""Version numbers: the PEP 440 subset giter-agent's own releases use, compared properly.

``1.2``, ``1.2.0``, ``1.10.3``, ``2.0rc1``, ``2.0.post1``, ``2.1.dev3``: a release of one
to six numbers, then optionally a pre-release (``a``, ``b``, ``rc`` and a number), a
post-release and a dev-release, in PEP 440's order (``1.0.dev1 < 1.0a1 < 1.0rc1 < 1.0
< 1.0.post1``; ``1.0 == 1.0.0``). Local versions (``+abc``) and epochs are refused: an
agent release is never named that way, and a refusal is clearer than a guess.

Called by ``kinds.agent_update`` (which way an update goes) and ``kinds.wheels`` (a
wheel's version against the spec's).
"""

from __future__ import annotations

import re

from giter_agent.core.errors import ResourceError

_VERSION = re.compile(r"v?(?P<release>[0-9]+(?:\.[0-9]+){0,5})"
                      r"(?:[-_.]?(?P<pre>a|b|rc|alpha|beta|c)[-_.]?(?P<pren>[0-9]+)?)?"
                      r"(?:[-_.]?post[-_.]?(?P<post>[0-9]+)?)?"
                      r"(?:[-_.]?dev[-_.]?(?P<dev>[0-9]+)?)?", re.IGNORECASE)
_PRE = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "rc": 2, "c": 2}
PATTERN = r"v?[0-9]+(\.[0-9]+){0,5}([-_.]?(a|b|rc)[0-9]+)?([-_.]?post[0-9]+)?([-_.]?dev[0-9]+)?"

Key = tuple[tuple[int, ...], tuple[int, ...], int, tuple[int, int]]


def key(text: str) -> Key:
    """The sort key of version ``text``; ``ResourceError`` (InvalidSpec) when it is not
    one of the forms above."""
    m = _VERSION.fullmatch(text.strip())
    if m is None:
        raise ResourceError(f"{text!r} is not a version like 1.2.0, 2.0rc1 or 2.0.post1",
                            reason="InvalidSpec")
    release = tuple(int(p) for p in m["release"].split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    post = int(m["post"] or 0) if m["post"] is not None or "post" in text.lower() else -1
    dev = (0, int(m["dev"] or 0)) if m["dev"] is not None or "dev" in text.lower() else (1, 0)
    if m["pre"]:
        pre: tuple[int, ...] = (0, _PRE[m["pre"].lower()], int(m["pren"] or 0))
    elif dev[0] == 0 and post < 0:
        pre = (-1,)  # 1.0.dev1 comes before 1.0a1
    else:
        pre = (1,)
    return release, pre, post, dev


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, the same as, or newer than ``b``."""
    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)
