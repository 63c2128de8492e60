"""Wheels: a pure-Python wheel's name read, and its importable files laid down.

An ``AgentUpdate`` carries giter-agent (and any library it wants newer than the
installed package's) as wheels. Only pure wheels are taken: tags ``py3-none-any`` (or
``py2.py3``), ``Root-Is-Purelib: true``; a pure wheel is a zip whose entries, apart
from ``<name>.data/``, are the importable tree itself, so installing it is unpacking
it into a folder on the path (``debian/rules`` does the same with the libraries it
bundles). ``<name>.data/purelib/`` is unpacked too; the other ``.data`` folders
(scripts, man pages, completions) are not needed to import and run the agent and are
skipped. An entry that is a symlink, an absolute path, or names ``..`` refuses the
whole wheel (``ArtifactNotAFile``); so does a wheel larger unpacked than ``max_bytes``.

Files are created below an open folder only (``O_EXCL``, ``O_NOFOLLOW``), fsynced,
and their folders fsynced children first: what the caller renames into place is whole.

The rules that decide whether an update's folder of wheels is taken are here, once, for
the device and the publisher's ``giter-bundle lint`` alike: ``select`` (which files are
wheels, giter-agent's of the right version, which pins name no file, which wheels a
partial set of pins leaves unchecked), ``check_pin`` (a wheel's SHA-256 against its
pin) and ``check`` (the wheel's own content: pure, safe entries, within the cap).

Called by ``kinds.agent_envs`` and ``kinds.agent_update`` on the device, by
``giter_bundle.lint_wheels`` on the publisher's side.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from collections.abc import Iterable, Mapping
from typing import BinaryIO

from giter_agent.core.durable import fsync_folders_under, open_dir_under
from giter_agent.core.errors import ArtifactError, Reason
from giter_agent.core.named_tuple import NamedTuple

_NAME = re.compile(r"(?P<dist>[A-Za-z0-9][A-Za-z0-9_.]*)-(?P<version>[A-Za-z0-9_.!+]+)"
                   r"(?:-[0-9][A-Za-z0-9_.]*)?-(?P<py>[a-z0-9_.]+)-(?P<abi>[a-z0-9_.]+)"
                   r"-(?P<platform>[a-z0-9_.]+)\.whl")
_PART = re.compile(r"[A-Za-z0-9_.+-][A-Za-z0-9_.+ ~-]*")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 256 * 1024


class WheelName(NamedTuple):
    """What a wheel's file name says."""

    dist: str  # normalised: lower case, runs of - _ . as one _
    version: str
    pure: bool


def wheel_name(filename: str) -> WheelName | None:
    """The wheel file name ``filename`` read, or None when it is not one."""
    m = _NAME.fullmatch(filename)
    if m is None:
        return None
    pure = (all(t.startswith("py") for t in m["py"].split(".")) and m["abi"] == "none"
            and m["platform"] == "any")
    return WheelName(re.sub(r"[-_.]+", "_", m["dist"]).lower(), m["version"], pure)


class Wheel(NamedTuple):
    """A wheel of the update: its file name, its path in the tree, its pin (or None)."""

    filename: str
    path: str
    sha256: str | None


class Refusal(NamedTuple):
    """Why a folder of wheels is refused (a status reason and its one-line message)."""

    reason: str
    message: str


class Selection(NamedTuple):
    """What ``select`` made of a folder: the wheels, in tree order, and every refusal
    in the order the device meets them (it reports the first). ``unpinned``: the wheels
    without a pin when others have one (installed unchecked: the device accepts them)."""

    wheels: tuple[Wheel, ...]
    refusals: tuple[Refusal, ...]
    unpinned: tuple[str, ...]


def select(folder: str, paths: Iterable[str], version: str,
           pins: Mapping[str, str]) -> Selection:
    """The wheels of the files ``paths`` under ``folder`` (the update's ``wheels``) for
    giter-agent ``version``, with ``pins`` (file name -> SHA-256) attached.

    Refused (``InvalidWheel``): a file that is not a wheel at the top of the folder, a
    wheel that is not pure by its name, giter-agent's wheel of another version, no
    giter-agent wheel of that version. ``ArtifactMissing``: a pin naming no file.
    """
    from giter_agent.core.versions import compare

    refusals: list[Refusal] = []
    wheels: list[Wheel] = []
    seen = False
    prefix = folder.rstrip("/") + "/"
    for path in paths:
        filename = path[len(prefix):] if path.startswith(prefix) else path
        name = wheel_name(filename)
        if "/" in filename or name is None:
            refusals.append(Refusal("InvalidWheel", f"{path} is not a wheel at the top of "
                                    f"{folder}; the update is refused"))
            continue
        if not name.pure:
            refusals.append(Refusal("InvalidWheel", f"{path} is not a pure-Python wheel "
                                    "(py3-none-any); the update is refused"))
        if name.dist == "giter_agent":
            seen = True
            try:
                same = compare(name.version, version) == 0
            except ValueError:
                same = False
            if not same:
                refusals.append(Refusal("InvalidWheel", f"{path} is giter-agent "
                                        f"{name.version}, not {version}; the update is "
                                        "refused"))
        wheels.append(Wheel(filename, path, pins.get(filename)))
    if not seen:
        refusals.append(Refusal("InvalidWheel", f"{folder} holds no giter-agent {version} "
                                "wheel; the update is refused"))
    unknown = sorted(set(pins) - {w.filename for w in wheels})
    if unknown:
        refusals.append(Refusal("ArtifactMissing", f"spec.sha256 pins {', '.join(unknown)}, "
                                f"not in {folder}; the update is refused"))
    unpinned = tuple(w.filename for w in wheels if pins and w.sha256 is None)
    return Selection(tuple(wheels), tuple(refusals), unpinned)


def check_pin(wheel: Wheel, digest: str) -> None:
    """``ArtifactMismatch`` when ``wheel`` has a pin and ``digest`` (the SHA-256 of its
    bytes, hex) is not it."""
    if wheel.sha256 and digest != wheel.sha256:
        raise ArtifactError(f"{wheel.path} has sha256 {digest}, but the spec pins "
                            f"{wheel.sha256}; the update is refused",
                            reason=Reason.ArtifactMismatch)


def _refused(filename: str, why: str) -> ArtifactError:
    return ArtifactError(f"{filename}: {why}; the update is refused",
                         reason=Reason.ArtifactNotAFile)


def _parts(filename: str, info: zipfile.ZipInfo, data_dir: str) -> tuple[str, ...] | None:
    """Where entry ``info`` goes below the folder (None: skipped); refusals raise."""
    name = info.filename
    mode = info.external_attr >> 16
    if "\\" in name or "\0" in name or name.startswith("/"):
        raise _refused(filename, f"entry {name!r} is not a plain relative path")
    if mode and stat.S_ISLNK(mode):
        raise _refused(filename, f"entry {name!r} is a symlink")
    parts = tuple(p for p in name.split("/") if p)
    if any(p in (".", "..") or not _PART.fullmatch(p) for p in parts):
        raise _refused(filename, f"entry {name!r} has an odd name")
    if parts and parts[0] == data_dir:
        if len(parts) > 2 and parts[1] == "purelib":
            return parts[2:]
        return None
    return parts


def _opened(filename: str, wheel: BinaryIO, max_bytes: int
            ) -> tuple[zipfile.ZipFile, list[tuple[zipfile.ZipInfo, tuple[str, ...] | None]]]:
    """The wheel opened and each entry's place below the folder (None: skipped), once
    every rule that needs no writing has passed; ``ArtifactError`` otherwise."""
    name = wheel_name(filename)
    if name is None:
        raise _refused(filename, "not a wheel file name (name-version-py-abi-platform.whl)")
    if not name.pure:
        raise _refused(filename, "not a pure-Python wheel (py3-none-any)")
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _refused(filename, f"not a zip file ({exc})") from None
    try:
        infos = archive.infolist()
        prefix = next((i.filename.split("/")[0] for i in infos
                       if i.filename.endswith(".dist-info/WHEEL")), None)
        if prefix is None or prefix.count("/"):
            raise _refused(filename, "holds no .dist-info/WHEEL")
        try:
            meta = archive.read(f"{prefix}/WHEEL").decode("utf-8", "replace")
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise _refused(filename, f"a damaged entry ({exc})") from None
        if not re.search(r"^Root-Is-Purelib:\s*true\s*$", meta, re.M | re.I):
            raise _refused(filename, "is not Root-Is-Purelib")
        data_dir = prefix[: -len(".dist-info")] + ".data"
        if sum(i.file_size for i in infos) > max_bytes:
            raise ArtifactError(f"{filename} unpacks to more than [limits] "
                                f"max_artifact_mib ({max_bytes // 2**20} MiB)",
                                reason=Reason.ArtifactTooLarge)
        return archive, [(i, _parts(filename, i, data_dir)) for i in infos]
    except BaseException:
        archive.close()
        raise


def check(filename: str, wheel: BinaryIO, max_bytes: int) -> None:
    """``ArtifactError`` when ``unpack`` would refuse wheel ``wheel`` (named
    ``filename``) before writing anything: not pure, not a zip, no ``WHEEL``, not
    ``Root-Is-Purelib``, an unsafe entry, more than ``max_bytes`` declared unpacked."""
    archive, _plan = _opened(filename, wheel, max_bytes)
    archive.close()


def unpack(filename: str, wheel: BinaryIO, dir_fd: int, max_bytes: int) -> int:
    """Unpack pure wheel ``wheel`` (named ``filename``) below open folder ``dir_fd``;
    the bytes written. ``ArtifactError`` for a wheel that is not pure or not safe."""
    archive, plan = _opened(filename, wheel, max_bytes)
    with archive:
        folders: set[tuple[str, ...]] = set()
        written = 0
        try:
            for info, parts in plan:
                if not parts or info.is_dir():
                    continue
                for depth in range(1, len(parts)):
                    folders.add(parts[:depth])
                written += _write(archive, info, parts, dir_fd)
                if written > max_bytes:
                    raise ArtifactError(f"{filename} unpacks to more than it declares",
                                        reason=Reason.ArtifactTooLarge)
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise _refused(filename, f"a damaged entry ({exc})") from None
        except FileExistsError as exc:
            raise _refused(filename, f"{exc.filename} is in two wheels") from None
    fsync_folders_under(dir_fd, folders)
    return written


def _write(archive: zipfile.ZipFile, info: zipfile.ZipInfo, parts: tuple[str, ...],
           dir_fd: int) -> int:
    folder = open_dir_under(dir_fd, parts[:-1], create=True)
    try:
        fd = os.open(parts[-1], _NEW_FILE, 0o644, dir_fd=folder)
        size = 0
        with os.fdopen(fd, "wb") as out, archive.open(info) as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        return size
    finally:
        os.close(folder)
