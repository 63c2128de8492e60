"""Parse git/ssh-keygen ``allowed_signers`` files into pinned public keys.

``trust.trust_files`` calls this for the device's pinned trust root, its offline root
keys and each ``.giter/trust/allowed_signers`` it finds in a verified parent tree.

The format (``ssh-keygen(1)``, ALLOWED SIGNERS) is one entry a line:
``principals [options] keytype base64 [comment]``. What we do with it differs from
``ssh-keygen`` on purpose:

- principals are kept for messages only; a signature is trusted by its raw key;
- ``namespaces=`` is honoured: an entry that does not admit ``git`` signs no commit;
- ``cert-authority`` is refused (certificates are not supported);
- ``valid-after``/``valid-before`` are checked for form and then ignored: the only time
  they could be compared with is a committer date, which the signer writes themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

from giter_agent.core.errors import TrustError
from giter_agent.core.named_tuple import NamedTuple
from giter_agent.trust.sshsig import PublicKey

# Past this a trust file is a mistake or an attack, never a fleet's signer list.
MAX_TRUST_FILE_BYTES = 256 * 1024

_TIME = r"\d{8}(\d{4}(\d{2})?)?Z?"  # compiled when first used (re's cache)
_OPTION_NAME = re.compile(r"[A-Za-z-]+")


class AllowedSigner(NamedTuple):
    """One entry: who it names (informational), the pinned key, and its option values."""

    principals: tuple[str, ...]
    key: PublicKey
    namespaces: tuple[str, ...] | None  # None: no namespaces= option, every namespace
    line: int

    def allows(self, namespace: str) -> bool:
        """Whether this entry may sign in ``namespace`` (OpenSSH pattern-list rules)."""
        return self.namespaces is None or _match_list(namespace, self.namespaces)


def _match_pattern(text: str, pattern: str) -> bool:
    """OpenSSH ``match_pattern``: ``*`` and ``?`` wildcards, nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, flags=re.DOTALL) is not None


def _match_list(text: str, patterns: tuple[str, ...]) -> bool:
    """OpenSSH ``match_pattern_list``: any negated match denies, else any positive allows."""
    allowed = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _match_pattern(text, pattern[1:]):
                return False
        elif _match_pattern(text, pattern):
            allowed = True
    return allowed


def _token(rest: str, lineno: int, source: str) -> tuple[str, str]:
    """Split the next whitespace-delimited token, honouring double quotes within it."""
    i = 0
    quoted = False
    while i < len(rest) and (quoted or not rest[i].isspace()):
        if rest[i] == '"':
            quoted = not quoted
        i += 1
    if quoted:
        raise _bad(source, lineno, "unterminated quote")
    return rest[:i], rest[i:].lstrip()


def _bad(source: str, lineno: int, detail: str) -> TrustError:
    return TrustError(f"{source}:{lineno}: {detail}", reason="InvalidTrustFile")


def _split_options(text: str, lineno: int, source: str) -> list[tuple[str, str | None]]:
    """``a,b="x,y",c`` -> [(a, None), (b, "x,y"), (c, None)]: commas inside quotes kept."""
    parts: list[str] = []
    current = ""
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    options: list[tuple[str, str | None]] = []
    for part in parts:
        name, eq, value = part.partition("=")
        if not _OPTION_NAME.fullmatch(name):
            raise _bad(source, lineno, f"malformed option {part!r}")
        if not eq:
            options.append((name.lower(), None))
        elif len(value) >= 2 and value[0] == value[-1] == '"' and '"' not in value[1:-1]:
            options.append((name.lower(), value[1:-1]))
        elif '"' in value:
            raise _bad(source, lineno, f"malformed quoting in option {part!r}")
        else:
            options.append((name.lower(), value))
    return options


def _parse_line(text: str, lineno: int, source: str) -> AllowedSigner | None:
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    principals_field, rest = _token(stripped, lineno, source)
    if principals_field.startswith('"') and principals_field.endswith('"'):
        principals_field = principals_field[1:-1]
    principals = tuple(p for p in principals_field.split(",") if p)
    if not principals or not rest:
        raise _bad(source, lineno, "expected 'principals [options] keytype base64'")

    options_field = None
    first, after = _token(rest, lineno, source)
    if first not in _KNOWN_KEY_TYPES:
        options_field, rest = first, after
    keytype, rest = _token(rest, lineno, source)
    blob, _comment = _token(rest, lineno, source)
    if not keytype or not blob:
        raise _bad(source, lineno, "missing key")
    try:
        key = PublicKey.from_openssh(f"{keytype} {blob}", reason="InvalidTrustFile")
    except TrustError as exc:
        raise _bad(source, lineno, str(exc)) from None

    namespaces: tuple[str, ...] | None = None
    seen: set[str] = set()
    for name, value in _split_options(options_field, lineno, source) if options_field else []:
        if name in seen:
            raise _bad(source, lineno, f"option {name} given twice")
        seen.add(name)
        if name == "cert-authority":
            raise _bad(source, lineno, "cert-authority entries are not supported; "
                                       "list each signer's own key")
        if name == "namespaces" and value:
            namespaces = tuple(value.split(","))
        elif name in ("valid-after", "valid-before") and value and re.fullmatch(_TIME, value):
            pass  # well-formed and deliberately ignored: see the module docstring
        else:
            raise _bad(source, lineno, f"unsupported or malformed option {name!r}")
    return AllowedSigner(principals, key, namespaces, lineno)


# A key-type token means "no options field". Unsupported types are still recognised here
# so that the error says "unsupported key type" rather than "malformed option".
_KNOWN_KEY_TYPES = frozenset({
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "ssh-rsa", "ssh-dss", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})


def parse(data: bytes | str, source: str = "allowed_signers") -> list[AllowedSigner]:
    """Every entry in ``data``; the first malformed line raises InvalidTrustFile."""
    if isinstance(data, bytes):
        if len(data) > MAX_TRUST_FILE_BYTES:
            raise TrustError(f"{source}: larger than {MAX_TRUST_FILE_BYTES} bytes",
                             reason="InvalidTrustFile")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise TrustError(f"{source}: not UTF-8", reason="InvalidTrustFile") from None
    entries = []
    for lineno, text in enumerate(data.split("\n"), start=1):
        entry = _parse_line(text, lineno, source)
        if entry is not None:
            entries.append(entry)
    return entries


def keys_for(entries: list[AllowedSigner], namespace: str = "git") -> tuple[PublicKey, ...]:
    """The distinct keys allowed to sign in ``namespace``, in file order."""
    keys: dict[bytes, PublicKey] = {}
    for entry in entries:
        if entry.allows(namespace):
            keys.setdefault(entry.key.blob, entry.key)
    return tuple(keys.values())


def load(path: Path, namespace: str = "git") -> tuple[PublicKey, ...]:
    """The keys a file on disk trusts for ``namespace``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TrustError(f"{path}: cannot read ({exc.strerror})",
                         reason="InvalidTrustFile") from None
    return keys_for(parse(data, str(path)), namespace)
