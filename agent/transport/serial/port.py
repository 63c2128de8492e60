"""Opening a serial port with pyserial, the same way on the device and the laptop.

``transport.serial.endpoint`` (the device) and ``giter_bundle.serial_peer`` (the
laptop) both open their end here, so the line settings and the typed error are one.
"""

from __future__ import annotations

from giter_agent.core.errors import SerialPortError
from giter_agent.transport.serial.frames import MAX_ENCODED
from giter_agent.transport.serial.link import Port


def open_port(port: str, baud: int) -> Port:
    """Open ``port`` with pyserial: 8N1, no flow control, exclusive, non-blocking reads.

    A write may wait for the UART to drain a full frame ahead of it: the write timeout
    allows twice the largest frame's time on the wire (74 s at 1200 baud, 6 s at 115200)
    before the line counts as stuck.
    """
    import serial

    frame_s = (MAX_ENCODED + 1) * 10 / baud if baud > 0 else 0.0
    try:
        return serial.Serial(port, baud, bytesize=8, parity="N", stopbits=1, timeout=0,
                             write_timeout=5.0 + 2 * frame_s, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialPortError(f"cannot open serial port {port} at {baud} baud: {exc}") from None
