"""Alerts on divergence: ``giter-bundle status --diverged-for`` and ``giter-bundle watch``.

A three-device fleet on one stick, with real git and real signatures: one device keeps
up, one falls behind, one never reports, and one applies a resource it cannot make
Ready. The checks say who is late and since when; ``watch`` raises one alert per change
(to a command and to a webhook on 127.0.0.1), remembers what it sent across runs, and
retries what it could not deliver.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
from support.fleet import Fleet, enrolled, motd

from giter_agent.core.errors import UsageError
from giter_bundle import divergence
from giter_bundle.exchange import Exchange
from giter_bundle.fleet_status import fleet_status


def commit_time(fleet: Fleet, rev: str) -> int:
    return int(fleet.git("log", "-1", "--format=%ct", rev).stdout)


def late(fleet: Fleet, *, now: float, threshold: int = 0) -> dict[str, divergence.Divergence]:
    with Exchange.open(fleet.root) as exchange:
        doc = fleet_status(exchange)
        found = divergence.diverged(exchange, doc, now=now, threshold=threshold)
    return {d.device: d for d in divergence.overdue(found, now=now, threshold=threshold)}


def sync_and_import(fleet: Fleet, stick: Path, *devices) -> None:
    fleet.ok("create", stick)
    for d in devices:
        assert d.cli("sync", "--usb", stick) in (0, 3)
    fleet.ok("import", stick)


def test_who_is_late_and_since_when(tmp_path, fleet, stick):
    pi_a, pi_b, pi_c = enrolled(fleet, tmp_path, "pi-a", "pi-b", "pi-c")
    enrolled_at = commit_time(fleet, "main")
    for d in (pi_a, pi_b, pi_c):
        fleet.write(f"devices/{d.id}/motd.yaml", motd(d, f"hello {d.id}\n"))
    fleet.ok("commit", "-m", "Welcome")
    sync_and_import(fleet, stick, pi_a, pi_b)
    now = time.time() + 3600

    found = late(fleet, now=now)
    assert set(found) == {"pi-c"}  # pi-a and pi-b observed the tip, all Ready
    assert found["pi-c"].reason == "never reported"
    # Late since it was enrolled, not since the branch began.
    assert found["pi-c"].since == enrolled_at and not found["pi-c"].at_least

    # A new spec for pi-b; only pi-a syncs. pi-b is late since that commit was published.
    fleet.write("devices/pi-b/motd.yaml", motd(pi_b, "second\n"))
    fleet.ok("commit", "-m", "Second motd for pi-b")
    published = commit_time(fleet, "main")
    sync_and_import(fleet, stick, pi_a)
    found = late(fleet, now=now)
    assert set(found) == {"pi-b", "pi-c"}
    assert found["pi-b"].since == published
    assert found["pi-b"].reason == "behind by 1 spec commit(s)"

    # pi-a gets a resource it cannot make Ready: it observed the tip but has not
    # converged on it since the tip was published (it was on an older spec before).
    fleet.write("devices/pi-a/bad.yaml", motd(pi_a, "x\n").replace(
        "name: motd", "name: bad").replace(f"{pi_a.root}/motd", "/proc/giter-forbidden"))
    fleet.ok("commit", "-m", "A file pi-a may not write")
    published = commit_time(fleet, "main")
    sync_and_import(fleet, stick, pi_a, pi_b)
    found = late(fleet, now=now)
    assert set(found) == {"pi-a", "pi-c"}  # pi-b caught up
    assert found["pi-a"].reason.startswith("not ready File/bad: ")
    assert found["pi-a"].since == published

    # Reported again, still not Ready on the same tip: the run's start does not move.
    fleet.ok("create", stick)
    assert pi_a.cli("sync", "--usb", stick) in (0, 3)
    fleet.ok("import", stick)
    assert late(fleet, now=now)["pi-a"].since == published

    # A threshold longer than any of that: nobody is overdue.
    assert late(fleet, now=time.time(), threshold=7 * 86400) == {}


def test_status_diverged_for_lists_and_exits_3(tmp_path, fleet, stick):
    pi_a, pi_b = enrolled(fleet, tmp_path, "pi-a", "pi-b")
    for d in (pi_a, pi_b):
        fleet.write(f"devices/{d.id}/motd.yaml", motd(d, "hi\n"))
    fleet.ok("commit", "-m", "Welcome")
    sync_and_import(fleet, stick, pi_a)

    code, out = fleet.cli("status", "--diverged-for", "0s")
    assert code == 3, out
    assert "DIVERGED for 0s or more: 1 device(s)" in out
    assert "pi-b" in out.split("DIVERGED")[1] and "pi-a" not in out.split("DIVERGED")[1]
    code, out = fleet.cli("status", "--diverged-for", "0s", "-o", "json")
    assert code == 3
    assert [d["device"] for d in json.loads(out)["diverged"]] == ["pi-b"]
    code, out = fleet.cli("status", "--diverged-for", "30d")
    assert code == 0 and "no device diverged for 30d or more" in out
    code, out = fleet.cli("status", "--diverged-for", "soon")
    assert code == 2 and "UsageError: 'soon' is not a duration" in out


def alert_script(tmp_path: Path, fail_flag: Path | None = None) -> tuple[str, Path]:
    """A command that appends each alert (stdin JSON + its environment) to a log."""
    log = tmp_path / "alerts.jsonl"
    script = tmp_path / "alert.py"
    fail = f"if Path({str(fail_flag)!r}).exists(): sys.exit('receiver down')\n" if fail_flag else ""
    script.write_text(
        "import json, os, sys\nfrom pathlib import Path\n" + fail +
        "event = json.load(sys.stdin)\n"
        "event['env'] = {k: v for k, v in os.environ.items() if k.startswith('GITER_ALERT_')}\n"
        f"with open({str(log)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps(event) + '\\n')\n")
    return f"{sys.executable} {script}", log


def read_alerts(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_watch_alerts_once_per_change_and_retries_what_it_could_not_send(
        tmp_path, fleet, stick):
    pi_a, pi_b = enrolled(fleet, tmp_path, "pi-a", "pi-b")
    for d in (pi_a, pi_b):
        fleet.write(f"devices/{d.id}/motd.yaml", motd(d, "hi\n"))
    fleet.ok("commit", "-m", "Welcome")
    sync_and_import(fleet, stick, pi_a)
    down = tmp_path / "receiver-down"
    command, log = alert_script(tmp_path, down)
    state = tmp_path / "watch-state.json"
    watch = ("watch", "--diverged-for", "0s", "--exec", command, "--state", state, "--once")

    # The receiver is down: nothing counts as sent, and it says so.
    down.touch()
    code, out = fleet.cli(*watch)
    assert code == 1 and "AlertNotDelivered: diverged pi-b" in out and "receiver down" in out
    assert read_alerts(log) == []
    down.unlink()

    code, out = fleet.cli(*watch)
    assert code == 3, out
    (alert,) = read_alerts(log)
    assert (alert["event"], alert["device"], alert["reason"]) == (
        "diverged", "pi-b", "never reported")
    assert alert["tip"] == fleet.rev() and alert["branch"] == "main"
    assert alert["env"]["GITER_ALERT_EVENT"] == "diverged"
    assert alert["env"]["GITER_ALERT_DEVICE"] == "pi-b"

    # Still late: no second alert, however often it checks.
    for _ in range(2):
        assert fleet.cli(*watch)[0] == 3
    assert len(read_alerts(log)) == 1

    # pi-b converges: one "resolved", then silence.
    sync_and_import(fleet, stick, pi_b)
    code, out = fleet.cli(*watch)
    assert code == 0, out
    assert [(a["event"], a["device"]) for a in read_alerts(log)] == [
        ("diverged", "pi-b"), ("resolved", "pi-b")]
    assert fleet.cli(*watch)[0] == 0
    assert len(read_alerts(log)) == 2
    assert json.loads(state.read_text()) == {"diverged": {}}


class Receiver(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[tuple[dict, dict]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append((json.loads(body), dict(self.headers)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_watch_posts_json_to_a_webhook(tmp_path, fleet, stick):
    (pi_a,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(pi_a, "hi\n"))
    fleet.ok("commit", "-m", "Welcome")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks/giter"
        watch = ("watch", "--diverged-for", "0s", "--webhook", url, "--header",
                 "Authorization: Bearer t0ken", "--state", tmp_path / "s.json", "--once")
        Receiver.status = 500
        code, out = fleet.cli(*watch)
        assert code == 1 and "AlertNotDelivered" in out and "answered 500" in out
        Receiver.status = 204
        assert fleet.cli(*watch)[0] == 3
        assert fleet.cli(*watch)[0] == 3
        bodies = [b for b, _h in Receiver.posts]
        assert [b["event"] for b in bodies] == ["diverged", "diverged"]  # the 500, the retry
        assert Receiver.posts[-1][1]["Authorization"] == "Bearer t0ken"
        assert Receiver.posts[-1][1]["Content-Type"] == "application/json"
    finally:
        server.shutdown()
        server.server_close()


def test_watch_refuses_what_it_cannot_do(tmp_path, fleet):
    code, out = fleet.cli("watch", "--diverged-for", "1h", "--once", "--state",
                          tmp_path / "s.json")
    assert code == 2 and "needs somewhere to send alerts" in out
    code, out = fleet.cli("watch", "--diverged-for", "1h", "--exec", "true", "--once")
    assert code == 2 and "--once needs --state FILE" in out
    code, out = fleet.cli("watch", "--diverged-for", "1h", "--webhook", "ftp://x", "--once",
                          "--state", tmp_path / "s.json")
    assert code == 2 and "not an http:// or https:// URL" in out
    (tmp_path / "bad.json").write_text("{not json")
    code, out = fleet.cli("watch", "--diverged-for", "1h", "--exec", "true", "--once",
                          "--state", tmp_path / "bad.json")
    assert code == 1 and "StateCorrupt" in out and "Traceback" not in out


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("45s", 45), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1w", 604800),
    ("1h30m", 5400), ("0s", 0)])
def test_durations(text, seconds):
    assert divergence.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "1x", "1h 30m", "-5m", "1.5h", "30m!"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(UsageError):
        divergence.parse_duration(text)
