"""Maintenance windows: changes wait for their window, urgent commits do not, and a board
whose clock is not set does not guess.

The schedule rules are checked at a fixed instant (T0 is Friday 2027-01-15 08:00 UTC);
the reconciler with real kinds on a temp files root and a fake clock; and one whole
sync with a real signed commit carrying a ``Giter-Urgent:`` trailer.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from gpiozero.pins.mock import MockFactory
from support.kinds import T0, Clock, Rig, condition, doc, make_ctx, ready

from giter_agent.core.errors import ResourceError
from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile
from giter_agent.spec import windows
from giter_agent.spec.resources import select
from giter_agent.trust.trailers import urgent_of

HOUR = 3600.0
NIGHTLY = {"timeZone": "UTC", "windows": [{"start": "02:00", "end": "04:00"}]}


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- the schedule ---------------------------------------------------------------------------

def test_a_daily_window_is_open_inside_and_says_when_it_opens_outside():
    s = windows.parse_schedule("nightly", NIGHTLY)
    assert s.opening(at("2027-01-15T03:00")) == (True, datetime(2027, 1, 15, 4, 0, tzinfo=s.tz()))
    is_open, when = s.opening(at("2027-01-15T08:00"))
    assert not is_open and when.isoformat() == "2027-01-16T02:00:00+00:00"
    assert s.opening(at("2027-01-15T04:00"))[0] is False  # the end is not inside


def test_a_window_past_midnight_that_began_yesterday_is_still_open():
    s = windows.parse_schedule("late", {"timeZone": "UTC", "windows": [
        {"days": ["Fri"], "start": "22:00", "end": "06:00"}]})
    assert s.opening(at("2027-01-16T01:00"))[0] is True  # Saturday 01:00, Friday's window
    is_open, when = s.opening(at("2027-01-16T07:00"))
    assert not is_open and when.isoformat() == "2027-01-22T22:00:00+00:00"  # next Friday


def test_the_time_zone_is_the_windows_own():
    s = windows.parse_schedule("berlin", {"timeZone": "Europe/Berlin", "windows": [
        {"start": "02:00", "end": "03:00"}]})
    assert s.opening(at("2027-01-15T01:30"))[0] is True  # 02:30 in Berlin (UTC+1)
    assert s.opening(at("2027-01-15T02:30"))[0] is False


@pytest.mark.parametrize(("spec", "says"), [
    ({"windows": []}, "non-empty list"),
    ({"windows": [{"start": 120, "end": "04:00"}]}, "quote it"),
    ({"windows": [{"start": "2:00", "end": "04:00"}]}, "HH:MM"),
    ({"windows": [{"start": "02:00", "end": "24:00"}]}, "HH:MM"),
    ({"windows": [{"days": ["Funday"], "start": "02:00", "end": "04:00"}]}, "Mon, Tue"),
    ({"windows": [{"start": "02:00", "end": "04:00", "every": 2}]}, "unknown field(s) every"),
    ({"timeZone": "Mars/Olympus", "windows": [{"start": "02:00", "end": "04:00"}]},
     "not a time zone"),
    ({"timeZone": "../../etc/passwd", "windows": [{"start": "02:00", "end": "04:00"}]},
     "IANA"),
    ({"unknownClock": "guess", "windows": [{"start": "02:00", "end": "04:00"}]},
     "unknownClock"),
])
def test_bad_schedules_say_what_is_wrong(spec, says):
    with pytest.raises(ResourceError, match=None) as err:
        windows.parse_schedule("w", spec)
    assert says in str(err.value)


def test_urgent_trailer_is_read_from_the_last_paragraph_only():
    assert urgent_of(b"Fix\n\nGiter-Urgent: CVE-2026-1 fix\n") == "CVE-2026-1 fix"
    assert urgent_of(b"Fix\n\nSigned-off-by: a\ngiter-urgent:\n") == ""
    assert urgent_of(b"Giter-Urgent: in the subject\n") is None
    assert urgent_of(b"Fix\n\nGiter-Urgent: old\n\nlater paragraph\n") is None


# -- the reconciler -------------------------------------------------------------------------

@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.close()


def window_doc(spec=None) -> bytes:
    return doc("MaintenanceWindow", "nightly", spec or NIGHTLY)


def file_doc(root, content: str, **extra) -> bytes:
    return doc("File", "app", {"path": str(root / "app.conf"), "content": content, **extra})


def test_a_change_waits_for_its_window_and_the_old_spec_stays(tmp_path, factory):
    clock = Clock(at("2027-01-15T03:00"))  # inside
    ctx = make_ctx(tmp_path, factory, clock)
    root, kinds = tmp_path / "root", builtin_kinds()
    first = reconcile(select([("devices/d/w.yaml", window_doc()),
                              ("devices/d/f.yaml", file_doc(root, "v1\n", window="nightly"))]),
                      ctx, kinds, {}, "c1")
    assert (root / "app.conf").read_text() == "v1\n"
    assert ready(first.records["File/app"]) == (True, "Applied")
    assert first.records["MaintenanceWindow/nightly"].status["observed"]["open"] is True

    clock.now = at("2027-01-15T12:00")  # outside: the change waits
    second = reconcile(select([("devices/d/w.yaml", window_doc()),
                               ("devices/d/f.yaml", file_doc(root, "v2\n", window="nightly"))]),
                       ctx, kinds, first.records, "c2")
    record = second.records["File/app"]
    assert (root / "app.conf").read_text() == "v1\n"
    assert ready(record) == (False, "OutsideWindow")
    assert "pending until 2027-01-16T02:00+00:00 (maintenance window 'nightly')" in \
        condition(record)["message"]
    assert record.spec["content"] == "v1\n"  # what is in effect stays on record
    assert record.status.get("observedGeneration") == 1
    assert second.retry_after == 14 * HOUR  # the daemon wakes when it opens

    # Drift of the spec in effect is put right at any time.
    (root / "app.conf").write_text("tampered\n")
    third = reconcile(select([("devices/d/w.yaml", window_doc()),
                              ("devices/d/f.yaml", file_doc(root, "v2\n", window="nightly"))]),
                      ctx, kinds, second.records, "c2")
    assert (root / "app.conf").read_text() == "v1\n"
    assert ready(third.records["File/app"]) == (False, "OutsideWindow")

    clock.now = at("2027-01-16T02:01")  # the window opens: the change goes in
    fourth = reconcile(select([("devices/d/w.yaml", window_doc()),
                               ("devices/d/f.yaml", file_doc(root, "v2\n", window="nightly"))]),
                       ctx, kinds, third.records, "c2")
    assert (root / "app.conf").read_text() == "v2\n"
    assert ready(fourth.records["File/app"]) == (True, "Applied")


def test_a_removal_waits_for_the_window_too(tmp_path, factory):
    clock = Clock(at("2027-01-15T03:00"))
    ctx = make_ctx(tmp_path, factory, clock)
    root, kinds = tmp_path / "root", builtin_kinds()
    w = ("devices/d/w.yaml", window_doc())
    first = reconcile(select([w, ("devices/d/f.yaml", file_doc(root, "v1\n", window="nightly"))]),
                      ctx, kinds, {}, "c1")
    clock.now = at("2027-01-15T12:00")
    second = reconcile(select([w]), ctx, kinds, first.records, "c2")
    assert second.pruned == [] and (root / "app.conf").exists()
    assert ready(second.records["File/app"]) == (False, "OutsideWindow")
    assert condition(second.records["File/app"])["message"].startswith("removal pending until")
    clock.now = at("2027-01-16T03:00")
    third = reconcile(select([w]), ctx, kinds, second.records, "c2")
    assert third.pruned == ["File/app"] and not (root / "app.conf").exists()


def test_the_agent_default_window_holds_resources_without_their_own(tmp_path, factory):
    ctx = make_ctx(tmp_path, factory, Clock(at("2027-01-15T12:00")))
    root = tmp_path / "root"
    result = reconcile(select([
        ("devices/d/w.yaml", window_doc()),
        ("devices/d/a.yaml", doc("Agent", "agent", {"defaultWindow": "nightly",
                                                    "reportInterval": 900})),
        ("devices/d/f.yaml", file_doc(root, "v1\n")),
    ]), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["File/app"]) == (False, "OutsideWindow")
    assert not (root / "app.conf").exists()
    # The Agent resource itself is never held: the windows can always be changed.
    assert ready(result.records["Agent/agent"]) == (True, "Applied")


def test_urgent_overrides_every_window(tmp_path, factory):
    ctx = make_ctx(tmp_path, factory, Clock(at("2027-01-15T12:00")))
    root = tmp_path / "root"
    result = reconcile(select([("devices/d/w.yaml", window_doc()),
                               ("devices/d/f.yaml", file_doc(root, "fix\n", window="nightly"))]),
                       ctx, builtin_kinds(), {}, "c1", urgent="CVE fix")
    assert (root / "app.conf").read_text() == "fix\n"
    assert ready(result.records["File/app"]) == (True, "Applied")


def test_plan_says_a_change_waits_and_until_when(tmp_path, factory):
    from giter_agent.reconcile.plan import plan

    clock = Clock(at("2027-01-15T03:00"))
    ctx = make_ctx(tmp_path, factory, clock)
    root, kinds = tmp_path / "root", builtin_kinds()
    w = ("devices/d/w.yaml", window_doc())
    first = reconcile(select([w, ("devices/d/f.yaml", file_doc(root, "v1\n", window="nightly")),
                              ("devices/d/g.yaml", doc("File", "gone", {
                                  "path": str(root / "gone"), "content": "x",
                                  "window": "nightly"}))]), ctx, kinds, {}, "c1")
    clock.now = at("2027-01-15T12:00")
    steps = {s.key: s for s in plan(select([w, ("devices/d/f.yaml", file_doc(
        root, "v2\n", window="nightly"))]), ctx, kinds, first.records)}
    assert steps["File/app"].action == "change"
    assert "waits: OutsideWindow: pending until 2027-01-16T02:00+00:00" in steps["File/app"].detail
    assert steps["File/gone"].action == "prune" and "waits: OutsideWindow" in \
        steps["File/gone"].detail
    urgent = {s.key: s for s in plan(select([w, ("devices/d/f.yaml", file_doc(
        root, "v2\n", window="nightly"))]), ctx, kinds, first.records, urgent="now")}
    assert "; waits: " not in urgent["File/app"].detail


@pytest.mark.parametrize(("now", "spec_time"), [
    (100.0, None),                       # 1970: a Pi that booted without NTP
    (at("2027-01-15T03:00"), at("2027-02-01T00:00")),  # before the spec was even made
])
def test_a_clock_that_is_not_set_waits_unless_told_to_apply(tmp_path, factory, now, spec_time):
    ctx = make_ctx(tmp_path, factory, Clock(now))
    root, kinds = tmp_path / "root", builtin_kinds()
    f = ("devices/d/f.yaml", file_doc(root, "v1\n", window="nightly"))
    result = reconcile(select([("devices/d/w.yaml", window_doc()), f]), ctx, kinds, {}, "c1",
                       spec_time=spec_time)
    assert ready(result.records["File/app"]) == (False, "WindowUnknown")
    assert not (root / "app.conf").exists()
    assert result.retry_after is None  # nothing to wake up for: a set clock triggers a pass
    relaxed = window_doc({**NIGHTLY, "unknownClock": "apply"})
    result = reconcile(select([("devices/d/w.yaml", relaxed), f]), ctx, kinds, {}, "c1",
                       spec_time=spec_time)
    assert (root / "app.conf").read_text() == "v1\n"


def test_a_window_that_is_not_in_the_spec_holds_the_change(tmp_path, factory):
    ctx = make_ctx(tmp_path, factory, Clock(at("2027-01-15T03:00")))
    root = tmp_path / "root"
    result = reconcile(select([("devices/d/f.yaml", file_doc(root, "v1\n", window="nightly")),
                               ("devices/d/w.yaml", window_doc({"windows": "always"}))]),
                       ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["File/app"]) == (False, "UnknownWindow")
    assert ready(result.records["MaintenanceWindow/nightly"])[1] == "InvalidSpec"
    assert not (root / "app.conf").exists()


# -- a whole sync: the trailer is signed with the commit ------------------------------------

def test_a_signed_urgent_commit_applies_outside_the_window(tmp_path, publisher):
    rig = Rig(tmp_path, publisher)
    clock = Clock(T0)  # Friday 08:00 UTC: outside 02:00-04:00
    window = doc("MaintenanceWindow", "nightly", NIGHTLY)
    app = doc("File", "app", {"path": str(rig.root / "app.conf"), "content": "v1\n",
                              "window": "nightly"})
    rig.publish({"w.yaml": window, "app.yaml": app}, "App config")
    rig.agent(clock).sync([rig.bundle()], "usb")
    assert not (rig.root / "app.conf").exists()
    (record,) = [r for k, r in rig.state().resources.items() if k == "File/app"]
    assert ready(record) == (False, "OutsideWindow")

    rig.publish({}, "Ship the config now\n\nGiter-Urgent: the old one crashes the app")
    rig.agent(clock).sync([rig.bundle()], "usb")
    assert (rig.root / "app.conf").read_text() == "v1\n"


def test_lint_finds_a_window_that_reaches_no_device(tmp_path, publisher_key):
    from support.fleet import Fleet, enrolled

    fleet = Fleet(tmp_path, publisher_key)
    (pi,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("groups/lobby/app.yaml", doc("File", "app", {
        "path": str(pi.root / "app.conf"), "content": "v1\n", "window": "nightly"}).decode())
    code, out = fleet.cli("lint")
    assert code == 1
    assert ("groups/lobby/app.yaml: UnknownWindow: window 'nightly': no valid "
            "MaintenanceWindow of that name reaches pi-a") in out
    fleet.write("groups/lobby/nightly.yaml", window_doc().decode())
    code, out = fleet.cli("lint")
    assert code == 0, out
