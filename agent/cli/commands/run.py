"""``giter-agent run``: the daemon. Syncs on an interval, when a USB stick appears and
when asked (SIGUSR1), re-runs reconcile passes when resources ask, and speaks systemd's
notify protocol (READY, STATUS, WATCHDOG, STOPPING). Stops cleanly on SIGTERM.

When an ``AgentUpdate`` selects another version of the agent, the daemon exits 75 after
the pass for systemd to start it again: the installed giter-agent then runs the selected
version (docs/operating.md).

With ``[serial] port`` set it also serves that port (the console and the sync
protocol, docs/serial.md) from this process, the one that owns the pins and the LED."""

from __future__ import annotations

import argparse

HELP = "run as a daemon: sync on triggers until SIGTERM"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options: the log level is the ``[agent] log_level`` setting (``-v``: debug)."""


def run(args: argparse.Namespace) -> int:
    import logging

    from giter_agent.cli.commands import load_config
    from giter_agent.core.lifetime import long_lived
    from giter_agent.daemon import logs
    from giter_agent.daemon.loop import Daemon
    from giter_agent.daemon.sd_notify import Notifier
    from giter_agent.daemon.worker_passes import WorkerPasses
    from giter_agent.device.board import load_board, make_pin_factory
    from giter_agent.device.status_led import StatusLed

    long_lived()  # the daemon: Python's own collector thresholds
    config = load_config(args)
    board = load_board(config.board, config.source.resolve().parent if config.source else None)
    factory = make_pin_factory(board)
    # Each pass runs in a short-lived worker process; this one keeps the loop, the pins
    # it must hold, the LED and the serial console (docs/architecture.md, "Processes").
    passes = WorkerPasses(config, args.config, board=board, pin_factory=lambda: factory)
    fixed = logging.DEBUG if args.verbose else None

    def current_spec() -> str | None:
        # Read from the state file lazily, only when a line is written.
        try:
            return passes.state_store.load().applied
        except Exception:
            return None

    logs.setup(config.device_id, current_spec, level=fixed or logging.INFO)
    # The technician's LED shows the same state the console and `status` put in words.
    led = StatusLed(board, factory)
    from giter_agent.cli import boot

    daemon = Daemon(passes, notifier=Notifier.from_environ(), log_level=fixed,
                    on_health=lambda now: led.show(now.state),
                    restart_wanted=lambda: boot.restart_reason(config.state_dir))
    if boot.on_trial(config.state_dir):
        daemon.pass_now()  # the new version's first status commit confirms it
    if config.serial_port:
        from giter_agent.daemon.worker_passes import DaemonDevice
        from giter_agent.transport.serial.endpoint import SerialEndpoint, SerialService

        # The status line is printed when the daemon's health changes, not on a timer.
        # A serial peer's sync runs in this process (on the serial thread), which loads
        # the sync path only then.
        endpoint = SerialEndpoint(config.serial_port, config.serial_baud,
                                  DaemonDevice(passes), status_interval=None)
        daemon.add_trigger(SerialService(endpoint, on_change=daemon.wake))
    try:
        return daemon.run()
    finally:
        led.close()
