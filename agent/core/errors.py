"""One tree of typed errors for the whole project, device and publisher alike.

Every refusal the agent or ``giter-bundle`` makes is one of these classes, all declared
here so a reader sees the whole vocabulary in one place. Each carries a ``reason`` from
``Reason`` (the CamelCase condition reason written into status, on the receipt and the
console) and a one-line message a person can act on. Each also inherits the builtin
that fits, so callers outside the project can catch ``ValueError`` and friends.

Callers branch on the class, never on the reason string: ``UsageError`` (exit 2 in
both CLIs), ``HubOffline`` vs ``HubIdentityError`` vs ``HubAuthError``,
``MissingPrerequisite``, ``RemoteRefMoved``. The reason is what a person reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from giter_agent.transport.serial.link import Message


class Reason:
    """Every reason an error can carry: each is a plain ``str``, its own name
    (``Reason.Fork == "Fork"``; ``REASONS`` holds them all).

    A class of constants, not an ``Enum``: every process imports this module, and
    making an enum of this many members cost each start about 2 ms."""

    # configuration and usage
    Error = "Error"
    InvalidConfig = "InvalidConfig"
    MalformedKeyFile = "MalformedKeyFile"
    UsageError = "UsageError"
    NotAGiterStick = "NotAGiterStick"
    StickRemoved = "StickRemoved"
    UnsafeStickPath = "UnsafeStickPath"
    RequiresRoot = "RequiresRoot"
    Busy = "Busy"
    WorkerFailed = "WorkerFailed"
    PermissionDenied = "PermissionDenied"
    RunningAsRoot = "RunningAsRoot"
    StateCorrupt = "StateCorrupt"
    DiskFull = "DiskFull"
    StorageFailed = "StorageFailed"
    InvalidName = "InvalidName"
    InvalidKey = "InvalidKey"
    NoSigningKey = "NoSigningKey"
    NoAuthor = "NoAuthor"
    SigningFailed = "SigningFailed"
    UntrustedSigningKey = "UntrustedSigningKey"
    Refused = "Refused"
    NotGitoliteAdmin = "NotGitoliteAdmin"  # giter-bundle hub gitolite: not an admin tree
    NoPublisherKey = "NoPublisherKey"  # ... and no key may push the spec branch
    # bundles and history
    InvalidBundle = "InvalidBundle"
    NotABundle = "NotABundle"
    UnsupportedBundle = "UnsupportedBundle"
    MalformedBundle = "MalformedBundle"
    MalformedTree = "MalformedTree"
    TruncatedBundle = "TruncatedBundle"
    IncompleteBundle = "IncompleteBundle"
    CorruptBundle = "CorruptBundle"
    UnreadableBundle = "UnreadableBundle"
    TooLarge = "TooLarge"
    FileTooLarge = "FileTooLarge"
    TooManyCommits = "TooManyCommits"
    TimeBudgetExceeded = "TimeBudgetExceeded"
    HistoryRejected = "HistoryRejected"
    NotARepository = "NotARepository"
    MissingPrerequisite = "MissingPrerequisite"
    MissingObject = "MissingObject"
    CorruptObject = "CorruptObject"
    HashMismatch = "HashMismatch"
    RefChanged = "RefChanged"
    RepositoryLocked = "RepositoryLocked"
    RefTargetMissing = "RefTargetMissing"
    RefTargetNotCommit = "RefTargetNotCommit"
    RemoteRefMoved = "RemoteRefMoved"
    QuarantineClosed = "QuarantineClosed"
    NotACommit = "NotACommit"
    UnknownCommit = "UnknownCommit"
    NoSpecBranch = "NoSpecBranch"
    UnexpectedRefs = "UnexpectedRefs"
    InvalidTree = "InvalidTree"
    UnsafeTreeEntry = "UnsafeTreeEntry"
    UnexpectedName = "UnexpectedName"
    BrokenTree = "BrokenTree"
    # trust
    UntrustedCommit = "UntrustedCommit"
    UnsignedCommit = "UnsignedCommit"
    UnknownSigner = "UnknownSigner"
    BadSignature = "BadSignature"
    MalformedCommit = "MalformedCommit"
    MalformedSignature = "MalformedSignature"
    MalformedKey = "MalformedKey"  # an SSH key blob or key file that does not parse
    UnsupportedSignatureFormat = "UnsupportedSignatureFormat"
    InvalidTrustFile = "InvalidTrustFile"
    NoTrustFile = "NoTrustFile"
    InvalidExpires = "InvalidExpires"
    SpecExpired = "SpecExpired"
    UserPresenceMissing = "UserPresenceMissing"
    Rollback = "Rollback"
    Fork = "Fork"
    NewRoot = "NewRoot"
    WrongGenesis = "WrongGenesis"
    WrongBranch = "WrongBranch"
    BranchNotBound = "BranchNotBound"
    NonCanonicalSignature = "NonCanonicalSignature"
    OwnershipViolation = "OwnershipViolation"
    UnknownSpecCommit = "UnknownSpecCommit"
    # resources and kinds
    InvalidResource = "InvalidResource"
    InvalidSpec = "InvalidSpec"
    InvalidYAML = "InvalidYAML"
    YAMLAliasRefused = "YAMLAliasRefused"
    YAMLDuplicateKey = "YAMLDuplicateKey"
    YAMLTooDeep = "YAMLTooDeep"
    DocumentTooLarge = "DocumentTooLarge"
    DuplicateKey = "DuplicateKey"
    DuplicateResource = "DuplicateResource"
    UnsupportedAPIVersion = "UnsupportedAPIVersion"
    UnknownKind = "UnknownKind"
    PluginFailed = "PluginFailed"
    PathNotAllowed = "PathNotAllowed"
    UnknownOwner = "UnknownOwner"
    OutOfBounds = "OutOfBounds"
    CommandNotAllowed = "CommandNotAllowed"
    CommandNotRunnable = "CommandNotRunnable"
    CommandTimedOut = "CommandTimedOut"
    SystemctlFailed = "SystemctlFailed"
    SystemctlNotFound = "SystemctlNotFound"
    SystemctlTimedOut = "SystemctlTimedOut"
    UnitNotFound = "UnitNotFound"
    UnitMasked = "UnitMasked"
    UnknownJob = "UnknownJob"
    EnableFailed = "EnableFailed"
    PinUnknown = "PinUnknown"
    PinReserved = "PinReserved"
    PinUnavailable = "PinUnavailable"
    PlanTouchesPins = "PlanTouchesPins"
    SensorNotFound = "SensorNotFound"
    ReadFailed = "ReadFailed"
    WriteFailed = "WriteFailed"
    NoSample = "NoSample"
    UnknownStatusCode = "UnknownStatusCode"
    # fleet targeting (spec.selectors, spec.placeholders, spec.targeting)
    InvalidLabels = "InvalidLabels"
    InvalidSelector = "InvalidSelector"
    AmbiguousResource = "AmbiguousResource"
    InvalidPlaceholder = "InvalidPlaceholder"
    MissingValue = "MissingValue"
    AmbiguousValue = "AmbiguousValue"
    InvalidValues = "InvalidValues"
    InvalidRollout = "InvalidRollout"
    RolloutBaselineUnknown = "RolloutBaselineUnknown"
    RolloutGateClosed = "RolloutGateClosed"
    RolloutTimedOut = "RolloutTimedOut"
    RolloutPaused = "RolloutPaused"
    RolloutAborted = "RolloutAborted"
    RolloutComplete = "RolloutComplete"
    UnknownRollout = "UnknownRollout"
    # the hub
    Offline = "Offline"
    AuthFailed = "AuthFailed"
    RemoteError = "RemoteError"
    HostKeyMismatch = "HostKeyMismatch"
    UnknownHostKey = "UnknownHostKey"
    TlsVerifyFailed = "TlsVerifyFailed"
    # the serial line
    SerialError = "SerialError"
    SerialPortUnavailable = "SerialPortUnavailable"
    LinkLost = "LinkLost"
    ProtocolError = "ProtocolError"
    PeerError = "PeerError"
    Restarted = "Restarted"
    TransferFailed = "TransferFailed"
    UnsupportedVersion = "UnsupportedVersion"
    NoDevice = "NoDevice"
    WrongDevice = "WrongDevice"
    # the publisher
    AlreadyEnrolled = "AlreadyEnrolled"
    InvalidEnrolment = "InvalidEnrolment"
    UnknownDevice = "UnknownDevice"
    UnknownGroup = "UnknownGroup"
    CannotBumpGeneration = "CannotBumpGeneration"
    # secrets (giter_agent.core.age, the Secret kind, giter-bundle secret)
    SecretTooLarge = "SecretTooLarge"
    MalformedSecret = "MalformedSecret"
    SecretTruncated = "SecretTruncated"
    SecretCorrupt = "SecretCorrupt"
    UnsupportedRecipient = "UnsupportedRecipient"
    NotARecipient = "NotARecipient"
    InvalidRecipient = "InvalidRecipient"
    NoDeviceKey = "NoDeviceKey"
    NotASecret = "NotASecret"
    NotEnrolled = "NotEnrolled"
    NoMembers = "NoMembers"
    NoSecretsKey = "NoSecretsKey"
    NotAPublisherKey = "NotAPublisherKey"
    InvalidRecipients = "InvalidRecipients"
    CannotRekey = "CannotRekey"
    ReadableOutsideScope = "ReadableOutsideScope"
    RecipientsMismatch = "RecipientsMismatch"
    # artifacts: files of the verified tree under artifacts/ (history.artifacts, File)
    ArtifactNotAllowed = "ArtifactNotAllowed"
    ArtifactMissing = "ArtifactMissing"
    ArtifactNotAFile = "ArtifactNotAFile"
    ArtifactTooLarge = "ArtifactTooLarge"
    ArtifactMismatch = "ArtifactMismatch"
    ArtifactCorrupt = "ArtifactCorrupt"


REASONS = frozenset(value for name, value in vars(Reason).items() if not name.startswith("_"))


class GiterError(Exception):
    """Base of every error the project raises on purpose."""

    reason: str = Reason.Error

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self)


# -- usage: the command cannot start (both CLIs exit 2) --------------------------------------

class UsageError(GiterError, ValueError):
    """The command cannot start: bad arguments, configuration or folder."""

    reason = Reason.UsageError


class ConfigError(UsageError):
    """The agent or board configuration is missing, malformed or out of range."""

    reason = Reason.InvalidConfig


class KeyFileError(ConfigError):
    """A private key file cannot be used: malformed, encrypted, or of an unusable type.

    The message names the file and the check that failed, never the key's bytes.
    """

    reason = Reason.MalformedKeyFile


class StickError(UsageError, FileNotFoundError):
    """The folder is not a giter stick (no ``giter/inbox``)."""

    reason = Reason.NotAGiterStick


class AccessError(GiterError, PermissionError):
    """A file of the agent cannot be used by this user, or must not be, by root
    (``core.access``: the message names the owner and the command to run instead)."""

    reason = Reason.PermissionDenied


class StickGone(GiterError, FileNotFoundError):
    """The stick was removed (or replaced) during the sync: nothing more is written."""

    reason = Reason.StickRemoved


class UnsafeStick(GiterError, PermissionError):
    """A folder on the stick is a symlink, not a folder, or on another filesystem."""

    reason = Reason.UnsafeStickPath


class LockedError(GiterError):
    """Another agent process holds the state directory."""

    reason = Reason.Busy


class WorkerError(GiterError):
    """The daemon's pass worker process died, or failed in a way it could not report."""

    reason = Reason.WorkerFailed


class StorageError(GiterError, OSError):
    """A disk refused a write: full (``DiskFull``), read-only or failing (``StorageFailed``).

    Raised in place of the bare ``OSError``: what was being written, where, and what
    stays in force. Nothing half-written is left; the next pass, once there is room,
    carries on from the last durable state (docs/reliability.md).
    """

    reason = Reason.StorageFailed

    @classmethod
    def of(cls, exc: OSError, where: str, still: str = "") -> StorageError:
        """The typed form of ``exc``, raised while writing ``where``; ``still`` says what
        stays in force (e.g. the applied spec)."""
        import errno

        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        what = exc.strerror or type(exc).__name__
        name = f" ({exc.filename})" if exc.filename else ""
        message = f"cannot write {where}{name}: {what}"
        if full:
            message += "; free some space and sync again"
        if still:
            message += f"; {still}"
        err = cls(message, reason=Reason.DiskFull if full else Reason.StorageFailed)
        err.errno = exc.errno
        return err


# -- history ----------------------------------------------------------------------------------

class BundleError(GiterError, ValueError):
    """A bundle file is malformed, truncated, corrupt or over a size cap."""

    reason = Reason.InvalidBundle


class UnreadableBundle(BundleError):
    """The bundle file cannot be read at all (an I/O error, not its content)."""

    reason = Reason.UnreadableBundle


class HistoryError(GiterError):
    """The object store refused an import: missing prerequisite, bad ref, lost race."""

    reason = Reason.HistoryRejected


class MissingPrerequisite(HistoryError):
    """An incremental bundle builds on a commit this repository does not have."""

    reason = Reason.MissingPrerequisite


class RemoteRefMoved(HistoryError):
    """The hub's ref moved between our fetch and our push: fetch, then try again."""

    reason = Reason.RemoteRefMoved


class TreeError(GiterError, ValueError):
    """A tree holds an entry outside the allowlist (symlink, submodule, bad name)."""

    reason = Reason.InvalidTree


# -- trust ------------------------------------------------------------------------------------

class TrustError(GiterError):
    """A commit failed verification: unsigned, unknown key, bad signature, rollback."""

    reason = Reason.UntrustedCommit

    def __init__(self, message: str, *, reason: str | None = None, commit: str | None = None):
        super().__init__(message, reason=reason)
        self.commit = commit


# -- resources, kinds and the device ------------------------------------------------------------

class ResourceError(GiterError, ValueError):
    """A resource document is malformed or fails its kind's schema."""

    reason = Reason.InvalidResource


class ArtifactError(GiterError, ValueError):
    """An artifact (a file of the verified tree under ``artifacts/``) that cannot be laid
    down: ``ArtifactNotAllowed`` (a path outside ``artifacts/``), ``ArtifactMissing``,
    ``ArtifactNotAFile`` (a symlink, a folder, a submodule), ``ArtifactTooLarge`` (over
    ``[limits] max_artifact_mib``), ``ArtifactMismatch`` (not the pinned sha256),
    ``ArtifactCorrupt`` (the object store holds something else under its id). The
    resource fails alone; the file in place stays as it was."""

    reason = Reason.ArtifactMissing


class AgeError(ResourceError):
    """An age file (a ``Secret``'s ciphertext) that cannot be used here; the reason says
    which way: ``SecretTooLarge``, ``MalformedSecret`` (armour or header does not parse),
    ``SecretTruncated``, ``UnsupportedRecipient`` (a stanza other than ssh-ed25519),
    ``NotARecipient``, ``SecretCorrupt`` (header MAC or payload does not authenticate),
    ``InvalidRecipient`` (a key age cannot seal to). Never quotes the plaintext."""

    reason = Reason.MalformedSecret


class CommandTimedOut(GiterError, TimeoutError):
    """The command ran past its timeout and was killed."""

    reason = Reason.CommandTimedOut


class SystemctlError(GiterError, OSError):
    """systemctl timed out or refused; ``reason`` says which."""

    reason = Reason.SystemctlFailed


class SystemctlNotFound(SystemctlError):
    """There is no systemctl on this machine (not a systemd system)."""

    reason = Reason.SystemctlNotFound


class SensorReadError(GiterError, OSError):
    """A reading could not be taken (missing device, bad CRC, unparsable value)."""

    reason = Reason.ReadFailed


class StatusLedError(GiterError, ValueError):
    """``show`` was given a code that is not one of ``state.health.STATES``."""

    reason = Reason.UnknownStatusCode


class NoPins(GiterError):
    """A kind asked for a pin during a plan (plans must not claim pins)."""

    reason = Reason.PlanTouchesPins


# -- the hub ----------------------------------------------------------------------------------

class NetworkError(GiterError, ConnectionError):
    """The hub could not be reached, or would not serve us; the subclass says which."""

    reason = Reason.Offline


class HubOffline(NetworkError):
    """No route, refused, timed out, cut mid-transfer: try again later."""

    reason = Reason.Offline


class HubAuthError(NetworkError):
    """The hub does not accept our credentials."""

    reason = Reason.AuthFailed


class HubRemoteError(NetworkError):
    """The hub answered, but not with the repository (or with nonsense)."""

    reason = Reason.RemoteError


class HubIdentityError(NetworkError):
    """The server is not the pinned hub (host key, TLS): a refusal a person must look
    at, like a bad signature, never a network outage, never bypassed."""

    reason = Reason.HostKeyMismatch


_HUB_ERRORS: dict[str, type[NetworkError]] = {
    Reason.Offline: HubOffline, Reason.AuthFailed: HubAuthError,
    Reason.RemoteError: HubRemoteError, Reason.HostKeyMismatch: HubIdentityError,
    Reason.UnknownHostKey: HubIdentityError, Reason.TlsVerifyFailed: HubIdentityError,
}


def hub_error(message: str, reason: str) -> NetworkError:
    """The ``NetworkError`` subclass that ``reason`` belongs to."""
    return _HUB_ERRORS.get(reason, NetworkError)(message, reason=reason)


# -- the serial line ------------------------------------------------------------------------------

class SerialError(GiterError, OSError):
    """Base of the serial transport's errors."""

    reason = Reason.SerialError


class SerialPortError(GiterError, OSError):
    """The serial port cannot be opened or has gone away."""

    reason = Reason.SerialPortUnavailable


class LinkLost(SerialError, TimeoutError):
    """Nothing valid came over the line for too long: cable pulled, peer gone."""

    reason = Reason.LinkLost


class ProtocolError(SerialError):
    """The other side sent a well-framed message that breaks the protocol."""

    reason = Reason.ProtocolError


class PeerError(SerialError):
    """The other side reported a fatal error (an ERROR message) and ended the session."""

    reason = Reason.PeerError

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"the other side reports {reason}: {message}", reason=reason)
        self.peer_reason = reason


class Restarted(SerialError):
    """The laptop started a new session (a HELLO with a new nonce) in the middle of one."""

    reason = Reason.Restarted

    def __init__(self, hello: Message) -> None:
        super().__init__("the peer started a new session")
        self.hello = hello


class TransferError(SerialError):
    """The transfer cannot go on (refused, corrupt end to end, impossible offer)."""

    reason = Reason.TransferFailed


class NoDeviceError(SerialError):
    """Nothing on the port answered like a giter device."""

    reason = Reason.NoDevice


class WrongDeviceError(SerialError):
    """The device on the cable is not the one named with ``--device``."""

    reason = Reason.WrongDevice


# -- the publisher ----------------------------------------------------------------------------

class PublisherError(GiterError):
    """The toolkit refused to do something: the message says what and why."""

    reason = Reason.Refused


class PublisherUsageError(UsageError, PublisherError):
    """``giter-bundle`` cannot start: not an exchange repository, no key, bad input."""

    reason = Reason.UsageError


def reason_of(exc: BaseException) -> str:
    """The reason of any exception, for a log line or a receipt."""
    return exc.reason if isinstance(exc, GiterError) else type(exc).__name__


__all__ = [name for name, value in list(globals().items())
           if isinstance(value, type) and issubclass(value, GiterError)
           ] + ["Reason", "REASONS", "hub_error", "reason_of"]
