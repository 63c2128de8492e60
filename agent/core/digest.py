"""SHA-256 of the small digests every pass makes, without loading OpenSSL.

``kinds.base.fingerprint`` (did the last pass apply this spec?), the File kind's
content check and ``status.documents.inputs_digest`` hash a few hundred bytes to a few
kilobytes at each pass. ``import hashlib`` loads OpenSSL's ``_hashlib`` (about 2.3 ms
of a process's start, and its memory in the daemon) for them; CPython's own SHA-256
module (``_sha2`` from 3.12, ``_sha256`` before) gives the same digests. An interpreter
built without it gets ``hashlib``'s. Large data (packs, artifacts, signatures) keeps
using ``hashlib`` where it is read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def _sha256_constructor() -> Callable[[bytes], Any]:
    for name in ("_sha2", "_sha256"):  # CPython's own module: 3.12 and later, 3.11
        try:
            constructor: Callable[[bytes], Any] = importlib.import_module(name).sha256
            return constructor
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256


_SHA256 = _sha256_constructor()


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, in lower-case hex (``hashlib.sha256(data).hexdigest()``)."""
    digest: str = _SHA256(data).hexdigest()
    return digest
