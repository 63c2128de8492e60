"""``giter-agent demo``: the whole signed round trip, in a temporary folder, on mock pins.

A publisher key and fleet repository are made, signed resources committed, a bundle
written to a fake USB stick, the agent syncs from it, and the demo shows what happened:
the file written, the pin's recorded states, each resource's status, and the status
bundle on the stick verified against the device key. Then a ``Secret`` sealed to the
board's key goes to the folder of a group it shares with a second board: ``plan`` shows
the change without the value, the first board writes it (mode 0600), the second cannot
open it and writes nothing. Last, an unsigned commit is slipped onto the stick, and the
demo shows it refused with nothing changed. Uses
nothing but the installed package (git is used only to agree, when it is there).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from giter_agent.trust.sshsig import PublicKey
    from giter_bundle.publisher import PublisherRepo

DEVICE = "demo-pi"

MOTD = """\
apiVersion: giter.dev/v1alpha1
kind: File
metadata:
  name: motd
  generation: 1
spec:
  path: {root}/etc/motd
  content: |
    Welcome to demo-pi.
    This file was put here by a signed commit, carried on a USB stick.
  mode: "0644"
"""

BEACON = """\
apiVersion: giter.dev/v1alpha1
kind: Output
metadata:
  name: beacon
  generation: 1
spec:
  pin: led1
  state: blink
  onTime: 0.1
  offTime: 0.1
"""

SECRET = """\
apiVersion: giter.dev/v1alpha1
kind: Secret
metadata:
  name: wifi
  generation: 1
spec:
  path: {root}/etc/wifi.psk
  recipients: [demo-pi]
  ciphertext: |
{ciphertext}"""
NEIGHBOUR = "demo-pi-2"


class Narrator:
    """Prints numbered steps and indented facts, with colour only on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.color = out.isatty() and os.environ.get("NO_COLOR") is None
        self.n = 0

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def step(self, title: str) -> None:
        self.n += 1
        print(f"\n{self._c('1', f'{self.n}. {title}')}", file=self.out)

    def fact(self, text: str) -> None:
        print(f"   {text}", file=self.out)

    def ok(self, text: str) -> None:
        print(f"   {self._c('32', 'OK')}  {text}", file=self.out)

    def no(self, text: str) -> None:
        print(f"   {self._c('31', 'NO')}  {text}", file=self.out)


def run_demo(keep: Path | None = None, out: TextIO | None = None) -> int:
    """Run the demo; returns 0 when every step behaved as it should."""
    out = out or sys.stdout
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            print(f"giter-agent demo: {keep} is not empty", file=sys.stderr)
            return 2
        return _run(keep.resolve(), out, kept=True)
    work = Path(tempfile.mkdtemp(prefix="giter-demo-"))
    try:
        return _run(work, out, kept=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, out: TextIO, *, kept: bool) -> int:
    # The narration reports refusals itself; the agent's log lines would only repeat them.
    # The level is put back afterwards: the demo runs inside tests and other callers too.
    logger = logging.getLogger("giter")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _narrate(work, out, kept=kept)
    finally:
        logger.setLevel(previous)


def _narrate(work: Path, out: TextIO, *, kept: bool) -> int:
    from giter_agent.config import agent_toml as config_mod
    from giter_agent.sync.agent import Agent
    from giter_agent.transport.usb import sync_stick
    from giter_agent.trust import ssh_keyfile, sshsig
    from giter_bundle.publisher import PublisherRepo

    say = Narrator(out)
    print(f"giter-agent demo: a signed spec goes in on a USB stick, the device acts,\n"
          f"and a signed status comes back out. Working in {work}", file=out)
    failures = 0

    say.step("The publisher makes a signing key and a fleet repository")
    pub_key = sshsig.generate_ed25519()
    key_file = work / "publisher_ed25519"
    key_file.write_bytes(ssh_keyfile.private_key_openssh_bytes(pub_key))
    key_file.chmod(0o600)
    pub_line = sshsig.public_key_of(pub_key).openssh()
    (work / "publisher_ed25519.pub").write_text(pub_line + " publisher\n")
    signers = work / "allowed_signers"
    signers.write_text(f'publisher namespaces="git" {pub_line}\n')
    say.fact(f"key  {sshsig.public_key_of(pub_key).fingerprint()}  ({key_file.name})")
    root = work / "device-root"
    (root / "etc").mkdir(parents=True)
    fleet = PublisherRepo(work / "fleet.git", pub_key)
    tip = fleet.commit({
        ".giter/trust/allowed_signers": signers.read_bytes(),
        f"devices/{DEVICE}/motd.yaml": MOTD.format(root=root).encode(),
        f"devices/{DEVICE}/beacon.yaml": BEACON.encode(),
    }, "Welcome file and a blinking beacon for demo-pi")
    say.fact(f"signed commit {tip.decode()[:12]}  \"Welcome file and a blinking beacon\"")
    say.fact(f"  devices/{DEVICE}/motd.yaml    File    -> {root}/etc/motd")
    say.fact(f"  devices/{DEVICE}/beacon.yaml  Output  -> pin led1, blinking 0.1 s on/off")

    say.step("The bundle goes onto a USB stick")
    stick = work / "usb-stick"
    inbox = stick / "giter" / "inbox"
    inbox.mkdir(parents=True)
    bundle = fleet.bundle(inbox / "fleet.bundle")
    say.fact(f"{bundle.relative_to(work)}  ({bundle.stat().st_size} bytes)")

    say.step(f"The device syncs  (giter-agent -c agent.toml sync --usb {stick.name})")
    cfg_file = work / "agent.toml"
    cfg_file.write_text(
        f'device_id = "{DEVICE}"\nstate_dir = "state"\nboard = "generic-mock"\n'
        f'allowed_signers = "allowed_signers"\ngroups = ["lobby"]\n\n'
        f'[usb]\nroots = ["{stick}"]\n\n[files]\nroots = ["{root}"]\n')
    cfg = config_mod.load(cfg_file)
    agent = Agent(cfg)
    try:
        report = sync_stick(agent, stick)
        (say.ok if report.exit_code == 0 else say.no)(f"{report.outcome}: {report.message}")
        failures += report.exit_code != 0
        time.sleep(0.65)  # let the beacon blink a few times on the mock pin

        say.step("What the device did")
        motd = root / "etc" / "motd"
        if motd.is_file():
            say.ok(f"{motd} (mode {motd.stat().st_mode & 0o777:04o}):")
            for line in motd.read_text().splitlines():
                say.fact(f"      | {line}")
        else:
            say.no(f"{motd} was not written")
            failures += 1
        pin = agent.ctx.pin_factory.pin(agent.board.pin("led1"))
        elapsed, changes = 0.0, []
        for change in pin.states[:9]:  # gpiozero records the time since the previous change
            elapsed += change.timestamp
            changes.append(f"{int(change.state)}@{elapsed:.2f}s")
        say.ok(f"pin led1 ({agent.board.pin('led1')}) recorded {len(pin.states)} states: "
               + " ".join(changes) + (" ..." if len(pin.states) > 9 else ""))
        say.fact("resources:")
        from giter_agent.status.rows import resource_rows

        for row in resource_rows(report.resources):
            say.fact(row)

        say.step("The status comes back on the stick, signed by the device")
        outbox = stick / "giter" / "outbox"
        for f in sorted(outbox.iterdir()):
            say.fact(f"{f.relative_to(work)}  ({f.stat().st_size} bytes)")
        device_key = sshsig.PublicKey.from_openssh(agent.public_key_line().split(" ", 2)[2])
        say.fact(f"device key {device_key.fingerprint()}  (giter-agent key)")
        try:
            status_tip = _import_status(fleet, outbox / f"{DEVICE}.bundle", device_key)
            say.ok(f"status commit {status_tip.decode()[:12]} is signed by {DEVICE}'s key "
                   "and changes nothing but status")
        except Exception as exc:
            say.no(f"status commit refused: {exc}")
            failures += 1
        failures += _git_agrees(say, work, fleet, outbox / f"{DEVICE}.bundle",
                                f'{DEVICE} namespaces="git" {device_key.openssh()}')

        tip, bad = _secret_step(say, work, fleet, agent, stick, root)
        failures += bad

        say.step("Someone slips an unsigned commit onto the stick")
        before = motd.read_bytes()
        fleet.commit({f"devices/{DEVICE}/motd.yaml":
                      MOTD.format(root=root).replace("Welcome", "Owned").encode()},
                     "Unsigned change", sign=False)
        (inbox / "fleet.bundle").unlink()
        fleet.bundle(inbox / "evil.bundle", since=[tip])
        report = sync_stick(agent, stick)
        if report.outcome == "refused" and motd.read_bytes() == before \
                and report.applied == tip.decode():
            say.ok(f"refused: {report.reason}: {report.message}")
            say.ok(f"{motd.name} unchanged, spec {tip.decode()[:12]} still applied")
        else:
            say.no(f"expected a refusal, got {report.outcome}: {report.message}")
            failures += 1
        say.fact(f"the receipt on the stick, {(outbox / f'{DEVICE}.txt').relative_to(work)}:")
        for line in (outbox / f"{DEVICE}.txt").read_text().splitlines():
            say.fact(f"      | {line}")
    finally:
        agent.close()

    print(f"\n{'Demo complete.' if not failures else f'{failures} step(s) went wrong.'}",
          file=out)
    if kept:
        print(f"Everything is kept in {work}; look closer with:\n"
              f"  giter-agent -c {cfg_file} status", file=out)
    else:
        print("To keep the folder and look closer: giter-agent demo --keep DIR", file=out)
    return 1 if failures else 0


def _secret_step(say: Narrator, work: Path, fleet: Any, agent: Any, stick: Path,
                 root: Path) -> tuple[bytes, int]:
    """A Secret sealed to demo-pi's key, in the group folder both boards read: demo-pi
    writes it (mode 0600), its neighbour cannot open it and writes nothing. Returns the
    new spec tip and the number of steps that went wrong."""
    from giter_agent.config import agent_toml as config_mod
    from giter_agent.core import age
    from giter_agent.reconcile.plan import plan
    from giter_agent.spec.resources import select
    from giter_agent.sync.agent import Agent
    from giter_agent.transport.usb import sync_stick
    from giter_agent.trust import sshsig

    bad = 0
    say.step(f"A secret goes to {DEVICE} and not to its neighbour {NEIGHBOUR}")
    cfg_file = work / "agent-2.toml"
    cfg_file.write_text(
        f'device_id = "{NEIGHBOUR}"\nstate_dir = "state-2"\nboard = "generic-mock"\n'
        f'allowed_signers = "allowed_signers"\ngroups = ["lobby"]\n\n'
        f'[usb]\nroots = ["{stick}"]\n\n[files]\nroots = ["{root}"]\n')
    neighbour = Agent(config_mod.load(cfg_file))
    try:
        # What `giter-bundle secret set wifi --device demo-pi` does, put by mistake in
        # the folder of a group both boards are in: sealed to demo-pi's key only.
        value = os.urandom(12).hex().encode() + b"\n"
        sealed = age.armor(age.encrypt([sshsig.public_key_of(agent.device_key())], value))
        doc = SECRET.format(root=root, ciphertext="".join(
            f"    {line}\n" for line in sealed.splitlines()))
        path = "groups/lobby/wifi.yaml"
        tip = fleet.commit({path: doc.encode()}, "A Wi-Fi passphrase sealed to demo-pi's key")
        say.fact(f"signed commit {tip.decode()[:12]}  {path}  Secret, an age file to "
                 f"{DEVICE}'s key")
        (step,) = [s for s in plan(select([(path, doc.encode())]), agent.ctx, agent.kinds, {})
                   if s.key == "Secret/wifi"]
        say.fact(f"giter-agent plan on {DEVICE}: {step.key}: {step.detail}")
        inbox = stick / "giter" / "inbox"
        (inbox / "fleet.bundle").unlink(missing_ok=True)
        fleet.bundle(inbox / "fleet.bundle")
        psk = root / "etc" / "wifi.psk"
        first = sync_stick(agent, stick)
        wrote = psk.is_file() and psk.read_bytes() == value
        if first.exit_code == 0 and wrote and psk.stat().st_mode & 0o777 == 0o600:
            observed = first.resources["Secret/wifi"].status["observed"]
            say.ok(f"{DEVICE} wrote {psk} (mode 0600, {len(value)} bytes; the value is "
                   f"shown nowhere); status names ciphertext sha256 "
                   f"{observed['ciphertext'][:12]}")
        else:
            say.no(f"{DEVICE} did not write the secret: {first.outcome}: {first.message}")
            bad += 1
        before = psk.read_bytes() if psk.is_file() else None
        second = sync_stick(neighbour, stick)
        wifi = second.resources.get("Secret/wifi")
        cond = wifi.conditions[0] if wifi is not None and wifi.conditions else {}
        if cond.get("reason") == "NotARecipient" and psk.is_file() \
                and psk.read_bytes() == before:
            say.ok(f"{NEIGHBOUR} refused it: {cond['reason']}: {cond['message']}; "
                   "it wrote nothing")
        else:
            say.no(f"{NEIGHBOUR} should have refused the secret, got {cond}")
            bad += 1
    finally:
        neighbour.close()
    return tip, bad


def _import_status(fleet: PublisherRepo, bundle: Path, device_key: PublicKey) -> bytes:
    """Bring the device's status bundle into the fleet repository: verified while still
    in quarantine (the device's key, nothing but status changed), then promoted."""
    from giter_agent.trust.status_rule import verify_status_commit

    with fleet.history.quarantine(bundle) as q:
        ((ref, tip),) = q.refs.items()
        verify_status_commit(q.object_store, tip, DEVICE, device_key)
        q.promote()
    fleet.history.set_ref(ref, fleet.history.ref(ref), tip)
    return tip


def _git_agrees(say: Narrator, work: Path, fleet: PublisherRepo, bundle: Path,
                signer_line: str) -> int:
    """Cross-check with plain git when it is installed; 0 failures when it is not."""
    if shutil.which("git") is None:
        say.fact("(git is not installed: skipping the cross-check with git)")
        return 0
    signers = work / "device_signers"
    signers.write_text(signer_line + "\n")
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(work)}
    git = ["git", "-C", str(fleet.history.path), "-c", "gpg.format=ssh",
           "-c", f"gpg.ssh.allowedSignersFile={signers}"]
    checks = [("git bundle verify", [*git, "bundle", "verify", str(bundle)]),
              ("git verify-commit", [*git, "verify-commit", f"status/{DEVICE}"])]
    bad = 0
    for label, cmd in checks:
        proc = subprocess.run(cmd, capture_output=True, env=env, check=False)
        if proc.returncode == 0:
            say.ok(f"{label} agrees")
        else:
            say.no(f"{label} says: {proc.stderr.decode(errors='replace').strip()}")
            bad += 1
    return bad
