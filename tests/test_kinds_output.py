"""The Output kind on gpiozero mock pins: levels, PWM, counted blinks, fades, drift, prune."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from support.kinds import doc, make_ctx, ready, specset

from giter_agent.kinds import builtin_kinds
from giter_agent.reconcile.engine import reconcile


@pytest.fixture
def factory():
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


@pytest.fixture
def ctx(tmp_path, factory, clock):
    c = make_ctx(tmp_path, factory, clock)
    yield c
    c.close()


def out(name: str, **spec) -> bytes:
    return doc("Output", name, spec)


def wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_pwm_value_is_written_to_the_pin(ctx, factory):
    pin = factory.pin("GPIO18")
    result = reconcile(specset(out("dim", pin="led2", state="pwm", value=0.25)), ctx,
                       builtin_kinds(), {}, "c1")
    rec = result.records["Output/dim"]
    assert ready(rec) == (True, "Set")
    assert rec.status["observed"] == {"pin": "GPIO18", "state": "pwm", "value": 0.25}
    assert pin.state == pytest.approx(0.25)
    assert pin.frequency == 100
    brighter = reconcile(specset(out("dim", pin="led2", state="pwm", value=0.75,
                                     frequency=200)), ctx, builtin_kinds(), result.records,
                         "c2")
    assert ready(brighter.records["Output/dim"]) == (True, "Set")
    assert pin.state == pytest.approx(0.75) and pin.frequency == 200
    assert [round(s.state, 2) for s in pin.states][-1] == 0.75


def test_blink_count_stops_after_n_and_is_not_restarted(ctx, factory):
    pin = factory.pin("GPIO17")
    spec = specset(out("b", pin="led1", state="blink", onTime=0.02, offTime=0.02, count=3))
    first = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    assert ready(first.records["Output/b"]) == (True, "Blinking")
    assert "3 times" in first.records["Output/b"].status["conditions"][0]["message"]
    wait_for(lambda: sum(1 for s in pin.states if s.state) >= 3 and not pin.state)
    time.sleep(0.15)
    assert [s.state for s in pin.states].count(True) == 3  # exactly three flashes
    # Another pass with the same spec leaves the finished pattern alone.
    reconcile(spec, ctx, builtin_kinds(), first.records, "c1")
    time.sleep(0.1)
    assert [s.state for s in pin.states].count(True) == 3


def test_fade_blink_uses_pwm_levels(ctx, factory):
    pin = factory.pin("GPIO17")
    result = reconcile(specset(out("f", pin="led1", state="blink", onTime=0.01, offTime=0.01,
                                   fadeInTime=0.1, fadeOutTime=0.1, count=1)),
                       ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Output/f"]) == (True, "Blinking")
    wait_for(lambda: any(0 < s.state < 1 for s in pin.states))
    levels = [s.state for s in pin.states]
    assert any(0.2 < v < 0.8 for v in levels)  # it really fades, not just on/off


@pytest.mark.parametrize("spec, reason", [
    ({"pin": "led1", "state": "pwm"}, "InvalidSpec"),  # pwm without a value
    ({"pin": "led1", "state": "pwm", "value": 1.5}, "InvalidSpec"),
    ({"pin": "led1", "state": "on", "value": 0.5}, "InvalidSpec"),
    ({"pin": "led1", "state": "on", "count": 2}, "InvalidSpec"),
    ({"pin": "led1", "state": "blink", "count": 0}, "InvalidSpec"),
    ({"pin": "led1", "state": "on", "frequency": 50}, "InvalidSpec"),
    ({"pin": "led1", "state": "on", "dependsOn": "x"}, "InvalidSpec"),
    ({"pin": "led1", "state": "on", "reconcile": "sometimes"}, "InvalidSpec"),
    ({"pin": "nope", "state": "on"}, "PinUnknown"),
])
def test_output_schema(ctx, spec, reason):
    result = reconcile(specset(out("x", **spec)), ctx, builtin_kinds(), {}, "c1")
    assert ready(result.records["Output/x"]) == (False, reason)


def test_flipped_pin_is_put_back_and_reported_as_drift(ctx, factory, clock):
    pin = factory.pin("GPIO27")
    spec = specset(out("relay", pin="relay1", state="on"))
    first = reconcile(spec, ctx, builtin_kinds(), {}, "c1")
    assert pin.state == 1 and "drift" not in first.records["Output/relay"].status
    pin.state = 0  # someone else drove the relay off
    clock.advance(60)
    second = reconcile(spec, ctx, builtin_kinds(), first.records, "c1")
    assert pin.state == 1
    drift = second.records["Output/relay"].status["drift"]
    assert drift["corrections"] == 1 and drift["lastCorrected"] == "2027-01-15T08:01:00Z"
    assert drift["changes"] == ["relay1 (GPIO27) was off, spec says on"]
    # No drift, no new record: the drift report stays as it was.
    third = reconcile(spec, ctx, builtin_kinds(), second.records, "c1")
    assert third.records["Output/relay"].status == second.records["Output/relay"].status


def test_prune_in_a_fresh_process_drives_the_pin_off(tmp_path, factory):
    spec = specset(out("l", pin="led1", state="on"))
    first_ctx = make_ctx(tmp_path, factory)
    first = reconcile(spec, first_ctx, builtin_kinds(), {}, "c1")
    first_ctx.close()  # the process ended and released the pin...
    factory.pin("GPIO17").drive_high()  # ...whose level stayed up (or a pull-up holds it)
    later = make_ctx(tmp_path, factory)
    result = reconcile(specset(), later, builtin_kinds(), first.records, "c2")
    assert result.pruned == ["Output/l"]
    assert factory.pin("GPIO17").state == 0


def test_plan_reads_live_pins_and_otherwise_trusts_the_record(ctx, factory):
    kinds = builtin_kinds()
    kind = kinds["Output"]
    spec = kind.validate({"pin": "led1", "state": "on"})
    assert kind.plan("Output/l", spec, ctx) == "would set led1 (GPIO17) is on"
    first = reconcile(specset(out("l", pin="led1", state="on")), ctx, kinds, {}, "c1")
    ctx.records = first.records
    assert kind.plan("Output/l", spec, ctx) is None
    factory.pin("GPIO17").state = 0
    assert kind.plan("Output/l", spec, ctx) == "would set led1 (GPIO17) is on (now off)"
    from giter_agent.device.outputs import HeldOutputs

    ctx.outputs = HeldOutputs(lambda: factory)  # another process: the record says it was applied
    assert kind.plan("Output/l", spec, ctx) is None
    assert factory.pin("GPIO17").state == 0  # planning changed nothing


def test_a_one_shot_sync_reports_what_outlives_it(ctx, factory):
    """``giter-agent sync`` exits when it is done: no blink thread survives it."""
    ctx.lasting = False
    led1, led2, buzzer = (factory.pin(p) for p in ("GPIO17", "GPIO18", "GPIO23"))
    result = reconcile(specset(
        out("beacon", pin="led1", state="blink", onTime=0.1, offTime=0.1),
        out("dim", pin="led2", state="pwm", value=0.25),
        out("beeps", pin="buzzer", state="blink", onTime=0.01, offTime=0.01, count=3),
    ), ctx, builtin_kinds(), {}, "c1")
    # An endless blink and a dimmed level need the service: not Ready, and said why.
    for key, pin in (("Output/beacon", led1), ("Output/dim", led2)):
        is_ready, reason = ready(result.records[key])
        assert (is_ready, reason) == (False, "NeedsDaemon"), key
        assert "giter-agent" in result.records[key].status["conditions"][0]["message"]
        assert not pin.state  # left off, as it will be once the process is gone
    # Three beeps are over before the sync returns: what is true afterwards is "done".
    assert ready(result.records["Output/beeps"]) == (True, "Blinked")
    assert [s.state for s in buzzer.states].count(True) == 3 and not buzzer.state
