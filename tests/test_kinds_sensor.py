"""The Sensor kind: sources on a temp sysfs and mock pins, and when status may change.

The rule under test: a sample alone never changes the status; leaving the deadband,
a threshold condition flipping, or the report interval passing does.
"""

from __future__ import annotations

import time

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin, MockSPIDevice
from support.kinds import T0, condition, doc, make_ctx, ready, specset

from giter_agent.config.settings import SettingsConfig
from giter_agent.kinds import builtin_kinds
from giter_agent.kinds.base import Done, Retry
from giter_agent.reconcile.engine import reconcile


@pytest.fixture
def factory():
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


@pytest.fixture
def ctx(tmp_path, factory, clock):
    c = make_ctx(tmp_path, factory, clock,
                 settings_config=SettingsConfig(report_interval=900.0))
    yield c
    c.close()


def set_temp(ctx, celsius: float, zone: int = 0) -> None:
    folder = ctx.sysfs / "class" / "thermal" / f"thermal_zone{zone}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "temp").write_text(f"{round(celsius * 1000)}\n")


def cpu(**extra) -> bytes:
    return doc("Sensor", "cpu", {"source": "cpu-temperature", "interval": 10, **extra})


class Passes:
    """Run passes of one spec, keeping the records, as the agent does."""

    def __init__(self, ctx, clock, spec) -> None:
        self.ctx, self.clock, self.spec = ctx, clock, spec
        self.records: dict = {}
        self.kinds = builtin_kinds()

    def run(self, key: str = "Sensor/cpu") -> dict:
        self.records = reconcile(self.spec, self.ctx, self.kinds, self.records, "c1").records
        return self.records[key]

    def next(self, key: str = "Sensor/cpu") -> dict:
        wake = self.ctx.next_wakeup()
        assert wake is not None and wake > self.clock.now
        self.clock.now = wake
        return self.run(key)


def test_samples_inside_the_deadband_do_not_change_status(ctx, clock):
    set_temp(ctx, 48.0)
    p = Passes(ctx, clock, specset(cpu(deadband=1.0)))
    first = p.run()
    assert ready(first) == (True, "Sampling")
    observed = first.status["observed"]
    assert observed["value"] == 48.0 and observed["unit"] == "°C"
    assert observed["time"] == "2027-01-15T08:00:00Z"
    assert observed["window"] == {"since": "2027-01-15T08:00:00Z", "samples": 1, "min": 48.0,
                                  "max": 48.0, "mean": 48.0}
    assert ctx.next_wakeup() == T0 + 10
    for value in (48.4, 47.6, 48.9, 47.2):
        set_temp(ctx, value)
        assert p.next().status == first.status  # sampled, not reported
    set_temp(ctx, 49.5)  # 1.5 from the last report: out of the deadband
    moved = p.next().status["observed"]
    assert moved["value"] == 49.5 and moved["time"] == "2027-01-15T08:00:50Z"
    assert moved["window"] == {"since": "2027-01-15T08:00:10Z", "samples": 5, "min": 47.2,
                               "max": 49.5, "mean": 48.32}


def test_report_interval_reports_a_steady_value(ctx, clock):
    set_temp(ctx, 40.0)
    p = Passes(ctx, clock, specset(cpu(deadband=5)))
    first = p.run().status
    statuses = [p.next().status for _ in range(89)]  # 890 s of samples
    assert all(s == first for s in statuses)
    report = p.next().status["observed"]  # t = 900 s: the report interval passed
    assert report["time"] == "2027-01-15T08:15:00Z"
    assert report["window"]["samples"] == 90


def test_interval_reports_of_all_sensors_share_one_pass(ctx, clock):
    """Reports fall on the interval's clock boundaries, whatever each sensor's own
    cadence or its last deadband report: one status commit carries them all."""
    set_temp(ctx, 40.0, zone=0)
    set_temp(ctx, 30.0, zone=1)
    spec = specset(cpu(deadband=1),
                   doc("Sensor", "case", {"source": "cpu-temperature", "zone": 1,
                                          "interval": 45, "deadband": 5}))
    p = Passes(ctx, clock, spec)
    clock.advance(7)  # start off the grid
    p.run()
    for _ in range(30):
        p.next()
    set_temp(ctx, 42.0, zone=0)  # a deadband report of one sensor, mid-interval
    assert p.next().status["observed"]["value"] == 42.0
    while clock.now < T0 + 900:
        p.next()
    assert clock.now == T0 + 900  # a pass lands on the boundary itself
    times = {key: rec.status["observed"]["time"] for key, rec in p.records.items()}
    assert times == {"Sensor/cpu": "2027-01-15T08:15:00Z", "Sensor/case": "2027-01-15T08:15:00Z"}


def test_agent_kind_report_interval_is_used(ctx, clock):
    set_temp(ctx, 40.0)
    ctx.settings["report_interval"] = 60.0
    p = Passes(ctx, clock, specset(cpu(deadband=5)))
    first = p.run().status
    for _ in range(5):
        assert p.next().status == first
    assert p.next().status["observed"]["window"]["samples"] == 6


def test_threshold_condition_with_hysteresis(ctx, clock):
    set_temp(ctx, 69.0)
    p = Passes(ctx, clock, specset(cpu(deadband=2, thresholds={"above": 70, "below": 5})))
    rec = p.run()
    above = condition(rec, "AboveThreshold")
    assert (above["status"], above["reason"], above["message"]) == \
        ("False", "ValueWithinThreshold", "not above 70 °C")
    assert condition(rec, "BelowThreshold")["status"] == "False"
    set_temp(ctx, 70.5)  # inside the deadband, but over the threshold: a report
    rec = p.next()
    above = condition(rec, "AboveThreshold")
    assert (above["status"], above["reason"]) == ("True", "ValueAboveThreshold")
    assert above["lastTransitionTime"] == "2027-01-15T08:00:10Z"
    assert ready(rec) == (True, "Sampling")  # an observation, not a failure
    assert rec.status["observed"]["value"] == 70.5
    set_temp(ctx, 69.0)  # below 70 but within the 2-degree hysteresis: still above
    assert condition(p.next(), "AboveThreshold")["status"] == "True"
    set_temp(ctx, 67.9)
    rec = p.next()
    assert condition(rec, "AboveThreshold")["status"] == "False"
    assert condition(rec, "AboveThreshold")["lastTransitionTime"] == "2027-01-15T08:00:30Z"


def test_ds18b20_reads_and_checks_crc(ctx, clock):
    device = ctx.sysfs / "bus" / "w1" / "devices" / "28-0316a279f3ff"
    device.mkdir(parents=True)
    slave = device / "w1_slave"
    slave.write_text("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n"
                     "72 01 4b 46 7f ff 0e 10 57 t=23125\n")
    spec = specset(doc("Sensor", "tank", {"source": "ds18b20", "device": "28-0316a279f3ff",
                                          "interval": 30}))
    kinds = builtin_kinds()
    rec = reconcile(spec, ctx, kinds, {}, "c1").records["Sensor/tank"]
    assert ready(rec) == (True, "Sampling")
    assert rec.status["observed"]["value"] == 23.125
    kind = kinds["Sensor"]
    checked = kind.validate({"source": "ds18b20", "device": "28-0316a279f3ff", "interval": 30})
    for text, reason in [
        ("72 01 4b 46 7f ff 0e 10 57 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
         "ReadFailed"),
        ("50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
         "ReadFailed"),
    ]:
        slave.write_text(text)
        clock.advance(30)
        outcome = kind.apply("Sensor/tank", checked, ctx)
        assert isinstance(outcome, Retry) and outcome.reason == reason, outcome
    slave.unlink()
    clock.advance(30)
    outcome = kind.apply("Sensor/tank", checked, ctx)
    assert isinstance(outcome, Retry) and outcome.reason == "SensorNotFound"


def test_missing_thermal_zone_retries_with_backoff(ctx, clock):
    p = Passes(ctx, clock, specset(cpu()))
    rec = p.run()
    assert ready(rec) == (False, "SensorNotFound")
    assert rec.status["retryAfterSeconds"] == 10
    clock.advance(10)
    assert p.run().status["retryAfterSeconds"] == 20  # backing off
    set_temp(ctx, 41.0)
    clock.advance(20)
    assert ready(p.run()) == (True, "Sampling")


def test_button_presses_are_counted_between_samples(ctx, factory, clock):
    pin = factory.pin("GPIO24")
    spec = specset(doc("Sensor", "door", {"source": "digital", "pin": "button1",
                                          "input": "button", "interval": 5}))
    p = Passes(ctx, clock, spec)
    first = p.run("Sensor/door")
    assert first.status["observed"]["value"] == 0.0
    for _ in range(3):  # three short presses between two samples
        pin.drive_low()
        pin.drive_high()
    # No deadband: presses wait for the report interval...
    assert p.next("Sensor/door").status == first.status
    clock.now = T0 + 900
    report = p.run("Sensor/door").status["observed"]
    assert report["activations"] == 3 and report["value"] == 0.0


def test_digital_input_with_zero_deadband_reports_each_change(ctx, factory, clock):
    pin = factory.pin("GPIO25")
    spec = specset(doc("Sensor", "pir", {"source": "digital", "pin": "motion",
                                         "interval": 1, "deadband": 0}))
    p = Passes(ctx, clock, spec)
    first = p.run("Sensor/pir").status
    assert p.next("Sensor/pir").status == first
    pin.drive_high()
    high = p.next("Sensor/pir").status["observed"]
    assert high["value"] == 1.0 and high["activations"] == 1
    pin.drive_low()
    pin.drive_high()  # low and high again between samples: same level, one activation
    again = p.next("Sensor/pir").status["observed"]
    assert again["value"] == 1.0 and again["activations"] == 1
    assert again["time"] != high["time"]


def test_motion_sensor_source(ctx, factory, clock):
    pin = factory.pin("GPIO25")
    kind = builtin_kinds()["Sensor"]
    spec = kind.validate({"source": "digital", "pin": "motion", "input": "motion",
                          "interval": 1, "deadband": 0})
    assert isinstance(kind.apply("Sensor/pir", spec, ctx), Done)
    pin.drive_high()
    time.sleep(0.3)  # MotionSensor smooths in a background thread
    clock.advance(1)
    outcome = kind.apply("Sensor/pir", spec, ctx)
    assert isinstance(outcome, Done) and outcome.observed["value"] == 1.0


class FakeMCP3008(MockSPIDevice):
    """The chip side of an MCP3008 on mock SPI pins: answers reads with ``levels``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.levels = [0.0] * 8

    def on_bit(self) -> None:
        if 1 in self.rx_buf:
            start = self.rx_buf.index(1)  # start bit, then single/diff and 3 channel bits
            if len(self.rx_buf) - start == 5:
                channel = self.rx_word() & 0b111
                self.tx_word(round(self.levels[channel] * 1023), 12)


def test_adc_channel_through_gpiozero_mock_spi(tmp_path, clock, monkeypatch):
    # Plain mock pins: the SPI mock pins are MockPin subclasses, not MockPWMPin ones.
    factory = MockFactory()
    ctx = make_ctx(tmp_path, factory, clock)
    # gpiozero 2.0.1's software SPI bus builds a Device without passing pin_factory on,
    # so it needs a default factory: the test sets it (and restores it) for this test.
    monkeypatch.setattr(Device, "pin_factory", factory)
    chip = FakeMCP3008(11, 10, 9, 8, pin_factory=factory)
    chip.levels[2] = 0.5
    spec = specset(doc("Sensor", "soil", {"source": "adc", "chip": "MCP3008", "channel": 2,
                                          "scale": 3.3, "unit": "V", "interval": 60}))
    rec = reconcile(spec, ctx, builtin_kinds(), {}, "c1").records["Sensor/soil"]
    assert ready(rec) == (True, "Sampling")
    assert rec.status["observed"]["value"] == pytest.approx(3.3 * 512 / 1023, abs=0.001)
    assert rec.status["observed"]["unit"] == "V"
    chip.levels[2] = 0.25
    clock.advance(60)
    ctx.settings["report_interval"] = 60.0
    rec = reconcile(spec, ctx, builtin_kinds(), {"Sensor/soil": rec}, "c1").records
    assert rec["Sensor/soil"].status["observed"]["value"] == pytest.approx(0.825, abs=0.004)
    ctx.close()
    chip.close()
    factory.close()


@pytest.mark.parametrize("spec", [
    {"source": "lidar"},
    {"source": "cpu-temperature", "pin": "led1"},
    {"source": "digital"},
    {"source": "digital", "pin": "button1", "input": "lever"},
    {"source": "ds18b20", "device": "../../etc"},
    {"source": "adc", "chip": "MCP3008", "channel": 8},
    {"source": "adc", "chip": "ADS1115"},
    {"source": "cpu-temperature", "interval": 0},
    {"source": "cpu-temperature", "thresholds": {"above": 5, "below": 10}},
    {"source": "cpu-temperature", "thresholds": {"over": 5}},
])
def test_sensor_schema(ctx, spec):
    rec = reconcile(specset(doc("Sensor", "s", spec)), ctx, builtin_kinds(), {}, "c1")
    assert ready(rec.records["Sensor/s"]) == (False, "InvalidSpec")


def test_a_restart_alone_makes_no_new_report(tmp_path, factory, clock):
    first_ctx = make_ctx(tmp_path, factory, clock)
    set_temp(first_ctx, 50.0)
    spec = specset(cpu(deadband=1))
    kinds = builtin_kinds()
    before = reconcile(spec, first_ctx, kinds, {}, "c1").records
    first_ctx.close()
    clock.advance(120)
    restarted = make_ctx(tmp_path, factory, clock)
    after = reconcile(spec, restarted, kinds, before, "c1").records
    assert after["Sensor/cpu"].status == before["Sensor/cpu"].status
    set_temp(restarted, 52.0)
    clock.advance(10)
    moved = reconcile(spec, restarted, kinds, after, "c1").records
    assert moved["Sensor/cpu"].status["observed"]["value"] == 52.0
    restarted.close()


def test_status_commits_follow_reports_not_samples(tmp_path, publisher, clock, factory):
    """Through the agent: one signed status commit per report, none per sample."""
    from support.kinds import Rig

    rig = Rig(tmp_path, publisher)
    rig.publish({"cpu.yaml": cpu(deadband=1.0, thresholds={"above": 70})})
    agent = rig.agent(clock, factory)
    agent.ctx.sysfs = tmp_path / "sysfs"  # the Context's sysfs is a dependency like the clock
    set_temp(agent.ctx, 50.0)
    try:
        assert agent.sync([rig.bundle()], source="test").exit_code == 0
        commits = [rig.state().status_tip]

        def passes(n: int, celsius: float) -> None:
            for _ in range(n):
                set_temp(agent.ctx, celsius)
                clock.now = agent.next_wakeup()
                agent.reconcile_pass()

        passes(30, 50.6)  # 5 minutes of samples inside the deadband
        assert rig.state().status_tip == commits[-1]
        passes(1, 51.5)  # out of the deadband: one commit
        assert rig.state().status_tip != commits[-1]
        commits.append(rig.state().status_tip)
        passes(1, 72.0)  # above the threshold: one commit
        commits.append(rig.state().status_tip)
        passes(5, 72.3)
        assert rig.state().status_tip == commits[-1]
        passes(90, 72.3)  # the 15-minute boundary passes: one more
        commits.append(rig.state().status_tip)
        assert len(set(commits)) == 4
        assert len(rig.status_commits()) == 4
        shown = rig.show(f"devices/{rig.id}/cpu.yaml")
        assert "type: AboveThreshold" in shown
        assert "time: '2027-01-15T08:15:00Z'" in shown and "samples: 58" in shown
    finally:
        agent.close()
