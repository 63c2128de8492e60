"""``Secret``: an age-encrypted value the device decrypts with its own key and writes.

The spec carries an armoured age file (``spec.ciphertext``) made to the enrolled keys
of the devices that may read it (``giter-bundle secret set``); the device opens it in
memory with its own ed25519 key (``giter_agent.core.age``) and writes the plaintext only to
``spec.path``, through ``File``'s own path rules and atomic write (under the
``[files] roots``, a temp file beside the target that is mode 0600 from its creation,
owner and mode set before the rename), mode 0600 unless ``spec.mode`` says otherwise.

Nothing derived from the plaintext alone leaves this module: status reports the path,
mode, owner and the SHA-256 of the *ciphertext*; messages, drift notes and logs name the
path and sizes of the ciphertext only. A secret this device cannot open (not a
recipient, altered, truncated, another recipient type) fails this resource alone, and
whatever was written before stays in place.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

from giter_agent.core.durable import UnsafePath
from giter_agent.core.errors import ResourceError
from giter_agent.core.log import get_logger
from giter_agent.kinds.base import Context, Done, Failed, Outcome, Retry, is_outcome, would_fail
from giter_agent.kinds.fields import Field, check_declared
from giter_agent.kinds.file import (
    GROUP_FIELD,
    OWNER_FIELD,
    PATH_FIELD,
    FileKind,
    Place,
    account_fields,
    attribute_drift,
    check_mode,
    check_path,
    refused,
)

log = get_logger("giter.kinds.secret")


def read_ciphertext(spec: dict[str, Any]) -> bytes:
    """The binary age file of ``spec.ciphertext``, parsed far enough to be usable here.

    ``ResourceError`` (an ``giter_agent.core.age.AgeError``) when it is not armoured age, is over
    the cap, does not parse, or has a recipient stanza other than ssh-ed25519. Shared
    by the device and ``giter-bundle lint``.
    """
    from giter_agent.core import age

    text = spec["ciphertext"]
    if not isinstance(text, str):
        raise ResourceError("spec.ciphertext must be an armoured age file "
                            f"({age.ARMOR_BEGIN} ...)", reason="InvalidSpec")
    data = age.dearmor(text)
    age.check_recipient_types(age.parse(data))
    return data


def check_recipients(spec: dict[str, Any]) -> tuple[str, ...]:
    """``spec.recipients``: the device ids and publisher names the publisher says can
    read the value (``lint`` checks it against the ciphertext; the device ignores it)."""
    value = spec.get("recipients", [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) \
            or len(value) > 64:
        raise ResourceError("spec.recipients must be a list of device ids",
                            reason="InvalidSpec")
    return tuple(value)


class SecretKind(FileKind):
    kind = "Secret"

    DESCRIPTION = ("A file whose content is an age file sealed to the devices' keys; "
                   "written with the plaintext, which is never stored or logged.")
    FIELDS = (
        PATH_FIELD,
        Field("ciphertext", "string", "the armoured age file (giter-bundle secret)",
              required=True, message="must be an armoured age file (giter-bundle secret "
              "seal makes one)"),
        Field("mode", "string", "octal permissions, quoted: \"0600\"", default="0600",
              pattern=r"[0-7]{1,4}", message="must be an octal string like \"0600\""),
        OWNER_FIELD,
        GROUP_FIELD,
        Field("recipients", "array", "the device ids it is sealed to, for readers of a diff "
              "(lint checks it against the ciphertext)", max_items=64,
              items=Field("recipients", "string", "a device id", pattern=r".+"),
              message="must be a list of device ids"),
    )

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_declared(spec, self.FIELDS)
        path = check_path(spec)
        data = read_ciphertext(spec)
        check_recipients(spec)
        return {"path": path, "ciphertext": data,
                "digest": hashlib.sha256(data).hexdigest(), "mode": check_mode(spec, "0600"),
                **account_fields(spec), "prune": spec.get("prune", True)}

    # -- what differs, without saying anything about the value ---------------------------

    @staticmethod
    def _open(spec: dict[str, Any], ctx: Context) -> bytes | Failed:
        """The plaintext, in memory only; ``Failed`` naming why it cannot be had."""
        from giter_agent.core import age

        if ctx.identity is None:
            return Failed("NoDeviceKey", "this agent has no device key to open secrets with")
        try:
            return age.decrypt(spec["ciphertext"], ctx.identity())
        except age.AgeError as exc:
            return Failed(exc.reason, str(exc))

    @staticmethod
    def _secret_differences(place: Place, spec: dict[str, Any], plaintext: bytes,
                            uid: int | None, gid: int | None) -> list[str]:
        """What differs between the file and the secret; the value itself is never named.

        Read through the file's open folder, as ``File`` reads (``Place.current``).
        """
        mode, target = spec["mode"], place.target
        found_now = place.current()
        if found_now is None:
            return [f"{target} is missing"]
        if isinstance(found_now, str):
            return [found_now]
        st, content = found_now
        found = []
        if not hmac.compare_digest(content, plaintext):
            found.append(f"{target} content is not the secret's value")
        return found + attribute_drift(target, st, mode, uid, gid, spec)

    @staticmethod
    def _in_sync(target: Path, spec: dict[str, Any]) -> str:
        return (f"{target} holds the secret (ciphertext sha256 {spec['digest'][:12]}, "
                f"mode {spec['mode']:04o})")

    # -- the Kind interface --------------------------------------------------------------

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        place = self._target(spec, ctx)
        if isinstance(place, Failed):
            return place
        target = place.target
        observed: dict[str, Any] = {"path": str(target), "ciphertext": spec["digest"],
                                    "mode": f"{spec['mode']:04o}"}
        for name in ("owner", "group"):
            if spec[name] is not None:
                observed[name] = spec[name]
        ids = self._ids(spec, ctx)
        if is_outcome(ids):
            return ids
        plaintext = self._open(spec, ctx)
        if isinstance(plaintext, Failed):
            kept = (f"; {target} is left as it was" if place.exists()
                    else "; nothing was written")
            return Failed(plaintext.reason, plaintext.message + kept, observed)
        uid, gid = ids
        try:
            changes = self._secret_differences(place, spec, plaintext, uid, gid)
        except UnsafePath as exc:
            return refused(place, exc)
        except OSError as exc:
            return Retry("ReadFailed", f"cannot read {target}: {exc.strerror}", 30, observed)
        if not changes:
            return Done("Applied", self._in_sync(target, spec), observed)
        try:
            self.write(place, plaintext, spec["mode"], uid, gid)
        except UnsafePath as exc:
            return refused(place, exc)
        except OSError as exc:
            return Retry("WriteFailed", f"cannot write {target}: {exc.strerror}", 30, observed)
        log.info("wrote the secret of ciphertext sha256 %s to %s", spec["digest"][:12], target)
        return Done("Applied", self._in_sync(target, spec), observed, changes=tuple(changes))

    def plan(self, key: str, spec: dict[str, Any], ctx: Context) -> str | None:
        place = self._target(spec, ctx)
        if isinstance(place, Failed):
            return would_fail(place)
        target = place.target
        ids = self._ids(spec, ctx)
        if is_outcome(ids):
            return would_fail(ids)
        plaintext = self._open(spec, ctx)
        if isinstance(plaintext, Failed):
            return would_fail(plaintext)
        try:
            changes = self._secret_differences(place, spec, plaintext, *ids)
        except UnsafePath as exc:
            return would_fail(refused(place, exc))
        except OSError as exc:
            return f"cannot read {target}: {exc.strerror}"
        if not changes:
            return None
        return (f"would write the secret (ciphertext sha256 {spec['digest'][:12]}, value not "
                "shown): " + "; ".join(changes))
