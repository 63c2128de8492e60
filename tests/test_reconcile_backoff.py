"""Backoff of repeated retries: delays double up to a cap, passes in between leave the
resource alone, and a new spec starts afresh. A fake kind counts what it is asked."""

from __future__ import annotations

from typing import Any

from support.kinds import T0, doc, ready, specset

from giter_agent.kinds.base import Context, Done, Kind, Outcome, Retry, check_fields
from giter_agent.reconcile.engine import MAX_BACKOFF_S, reconcile


class Flaky(Kind):
    """Retries (after ``spec.after`` s) until told to work; counts its applies."""

    kind = "Flaky"

    def __init__(self) -> None:
        self.applies = 0
        self.works = False
        self.crash = False

    def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        check_fields(spec, set(), {"after", "label"})
        return dict(spec)

    def apply(self, key: str, spec: dict[str, Any], ctx: Context) -> Outcome:
        self.applies += 1
        if self.crash:
            raise RuntimeError("bug in the handler")
        if self.works:
            return Done("Working", "works now")
        return Retry("NotYet", "the device is not ready", spec.get("after", 30))


def test_delays_double_up_to_the_cap_and_passes_between_skip(ctx, clock):
    flaky = Flaky()
    kinds = {"Flaky": flaky}
    spec = specset(doc("Flaky", "f", {}))
    records: dict = {}
    delays = []
    for _ in range(9):
        records = reconcile(spec, ctx, kinds, records, "c1").records
        status = records["Flaky/f"].status
        delays.append(status["retryAfterSeconds"])
        assert ctx.next_wakeup() == clock.now + status["retryAfterSeconds"]
        applies = flaky.applies
        clock.advance(status["retryAfterSeconds"] / 2)  # an early pass (a sensor's, say)
        early = reconcile(spec, ctx, kinds, records, "c1").records
        assert flaky.applies == applies  # left alone while backing off
        assert early["Flaky/f"].status == status
        assert ctx.next_wakeup() == records["Flaky/f"].backoff.not_before
        clock.now = records["Flaky/f"].backoff.not_before
    assert delays == [30, 60, 120, 240, 480, 960, 1920, MAX_BACKOFF_S, MAX_BACKOFF_S]
    assert records["Flaky/f"].backoff.attempts == 9
    flaky.works = True
    done = reconcile(spec, ctx, kinds, records, "c1").records["Flaky/f"]
    assert ready(done) == (True, "Working")
    assert done.backoff is None and "retryAfterSeconds" not in done.status


def test_a_new_spec_starts_the_backoff_afresh(ctx, clock):
    flaky = Flaky()
    kinds = {"Flaky": flaky}
    records = reconcile(specset(doc("Flaky", "f", {})), ctx, kinds, {}, "c1").records
    clock.advance(30)
    records = reconcile(specset(doc("Flaky", "f", {})), ctx, kinds, records, "c1").records
    assert records["Flaky/f"].status["retryAfterSeconds"] == 60
    clock.advance(1)  # still backing off, but the publisher changed the spec: act now
    changed = reconcile(specset(doc("Flaky", "f", {"label": "v2"})), ctx, kinds, records,
                        "c2").records
    assert flaky.applies == 3
    assert changed["Flaky/f"].status["retryAfterSeconds"] == 30


def test_a_handler_exception_is_a_backed_off_retry(ctx, clock):
    flaky = Flaky()
    flaky.crash = True
    records = reconcile(specset(doc("Flaky", "f", {})), ctx, {"Flaky": flaky}, {}, "c1").records
    status = records["Flaky/f"].status
    assert ready(records["Flaky/f"]) == (False, "HandlerError")
    assert "RuntimeError: bug in the handler" in status["conditions"][0]["message"]
    assert status["retryAfterSeconds"] == 60


def test_an_immediate_retry_cannot_spin(ctx, clock):
    flaky = Flaky()
    records = reconcile(specset(doc("Flaky", "f", {"after": 0})), ctx, {"Flaky": flaky}, {},
                        "c1").records
    assert records["Flaky/f"].status["retryAfterSeconds"] == 1
    assert ctx.next_wakeup() == T0 + 1
