"""``giter-agent serve-serial``: serve the serial port in the foreground until Ctrl-C or SIGTERM.

A person with ``screen``/``minicom`` on the other end sees a status line every few
seconds and can type ``status``, ``sync`` and ``help``; a laptop running
``giter-bundle serial`` syncs the device over the same cable (docs/serial.md).
The port and speed come from ``[serial]`` in the config (the port defaults to the
board's ``serial_port``); ``--port``/``--baud`` override them for one run.
"""

from __future__ import annotations

import argparse

HELP = "serve the serial console and sync protocol in the foreground"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", metavar="DEVICE", help="serial device (default: [serial] port, "
                   "else the board's serial_port)")
    p.add_argument("--baud", type=int, metavar="RATE", help="line speed (default: [serial] "
                   "baud, 115200)")
    p.add_argument("--status-interval", type=float, default=5.0, metavar="SECONDS",
                   help="how often the console prints the status line (default 5)")


def run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from giter_agent.cli.commands import load_config
    from giter_agent.core.errors import ConfigError
    from giter_agent.core.lifetime import long_lived
    from giter_agent.sync.agent import Agent
    from giter_agent.transport.serial.endpoint import SerialEndpoint, configured_port

    long_lived()  # serves the port until stopped: Python's own collector thresholds
    config = load_config(args)
    agent = Agent(config)
    port = args.port or configured_port(agent)
    if not port:
        raise ConfigError("no serial port: set [serial] port in the config (or serial_port "
                          "in the board config), or pass --port")
    baud = args.baud or config.serial_baud
    if args.status_interval < 0.5:
        raise ConfigError("--status-interval must be at least 0.5 s")
    endpoint = SerialEndpoint(port, baud, agent, status_interval=args.status_interval)
    endpoint.open()  # a port that cannot be opened at start is an error, not a retry loop
    logging.getLogger("giter.serial").warning(
        "serving %s at %d baud (Ctrl-C to stop)", port, baud)
    # Ctrl-C and SIGTERM stop it anywhere, mid-session too (a sync is safe to abandon at
    # any instant). Set here, not inherited: a shell that started it in the background
    # may have left SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        endpoint.serve_forever()
    finally:
        endpoint.close()
        agent.close()
    return 0
