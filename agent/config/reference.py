"""What each ``agent.toml`` key means, for the ``agent.toml(5)`` man page.

``KEYS`` describes every key the loader (``giter_agent.config.agent_toml``) knows, by
``key`` or ``section.key``; a test checks that the two name exactly the same keys, so a
new key cannot ship undocumented. Defaults and allowed ranges are read from the loader's
own tables and records (their field defaults), not repeated here. ``manpage()`` renders
the page.

Not imported by the agent at run time (the man page is built on a workstation).
"""

from __future__ import annotations

SECTION_HELP = {
    "": "Top level: who the device is and whom it trusts.",
    "usb": "USB sticks (docs/sneakernet.md).",
    "files": "Where File resources may write.",
    "serial": "The serial console and sync protocol over a UART (docs/serial.md).",
    "metrics": "Prometheus metrics in a node_exporter textfile (docs/operating.md).",
    "network": "The fleet's git server (docs/network.md); without it, sticks and serial "
               "only.",
    "agent": "The agent's own settings and the bounds within which the Agent resource may "
             "move them (docs/kinds.md).",
    "commands": "The commands the Command kind may run.",
    "services": "The systemd units the Service kind may act on (docs/operating.md).",
    "packages": "The Debian packages the Package kind may install (docs/kinds.md).",
    "limits": "Caps on what one sync may bring in, sized for a 512 MB board.",
}

KEYS = {
    "device_id": "Required. The device's name, [a-z0-9][a-z0-9._-]*: its folder "
                 "devices/<id>/ in the fleet repository and its status branch.",
    "state_dir": "Required. The repository, state file and device key "
                 "(/var/lib/giter-agent).",
    "board": "Required. A board name from board-configs/ (rpi-4b, generic-mock, ...) or "
             "the path of a board .toml: pins, LED, serial port.",
    "allowed_signers": "Required. The publisher keys, in git's allowed_signers format; "
                       "only commits they sign are taken in.",
    "branch": "The spec branch (default main).",
    "groups": "Also apply groups/<group>/ resources of these groups (default none).",
    "root_keys": "Optional offline recovery keys (allowed_signers format), trusted for "
                 "any commit (docs/trust.md).",
    "genesis": "Optional: the fleet repository's first commit id; a history that does "
               "not start there is refused.",
    "usb.roots": "Folders where sticks are mounted (default /media/giter).",
    "files.roots": "File resources write only under these folders.",
    "serial.port": "The UART giter-agent run serves (serve-serial alone defaults to the "
                   "board config's serial_port).",
    "serial.baud": "Its speed (default 115200).",
    "metrics.textfile": "A *.prom file for node_exporter's textfile collector, rewritten "
                        "after a pass only when it changed (default: none).",
    "network.url": "git://, http(s):// or ssh:// URL of the fleet repository.",
    "network.username": "http(s): the basic-auth user; ssh: the user when the URL has "
                        "none.",
    "network.password_file": "http(s): a file holding the password or access token, "
                             "readable by the agent only.",
    "network.ssh_key": "ssh: the private key offered, mode 0600, owned by the agent's "
                       "user; default: the device key, state_dir/device_key, the key "
                       "enrolled on the spec branch.",
    "network.known_hosts": "ssh: the hub's pinned host key(s); never learned on first "
                           "use.",
    "network.ca_file": "https: trust this CA bundle instead of the system's.",
    "network.connect_timeout_s": "Seconds to wait for a connection.",
    "network.read_timeout_s": "Seconds to wait for data.",
    "network.backoff_max_s": "The longest wait between failed attempts.",
    "agent.report_interval": "Seconds between status reports.",
    "agent.report_interval_min": "The lowest report_interval the Agent resource may set.",
    "agent.report_interval_max": "The highest report_interval the Agent resource may set.",
    "agent.sync_interval": "Seconds between syncs with [network].",
    "agent.sync_interval_min": "The lowest sync_interval the Agent resource may set.",
    "agent.sync_interval_max": "The highest sync_interval the Agent resource may set.",
    "agent.log_level": "error, warning, info or debug.",
    "agent.log_levels": "The log levels the Agent resource may choose.",
    "commands.allowed": "A table name = [\"/abs/argv\", ...]: the only commands Command "
                        "resources may run, by name.",
    "services.allowed": "Unit names or glob patterns (\"kiosk-*.service\") Service "
                        "resources may start, stop, enable or disable; none by default.",
    "services.force": "Critical units (ssh, *.target, systemd-*, giter-*...) a Service may "
                      "act on anyway, each named exactly; refused otherwise.",
    "packages.allowed": "Debian package names or glob patterns (\"kiosk-*\") Package "
                        "resources may install, upgrade or remove; none by default.",
    "limits.max_bundle_mib": "Largest bundle file, in MiB.",
    "limits.max_objects": "Most objects in one bundle.",
    "limits.max_object_mib": "Largest object, checked before inflating. A delta is "
                              "resolved with its base in RAM (about twice the object), "
                              "so raise it only on boards with the memory.",
    "limits.max_artifact_mib": "Largest artifact (a file under artifacts/ that a File "
                               "resource lays down), streamed to disk; an artifact is "
                               "one object, so max_object_mib bounds it too.",
    "limits.max_commits": "Most commits verified in one sync.",
    "limits.time_budget_s": "Seconds one sync may take.",
}


def known_keys() -> set[str]:
    """Every key the loader accepts, as ``key`` or ``section.key``."""
    from giter_agent.config import agent_toml

    keys = set(agent_toml._TOP)
    for section, names in agent_toml._SECTIONS.items():
        keys |= {f"{section}.{name}" for name in names}
    return keys


def _defaults() -> dict[str, object]:
    from giter_agent.config import agent_toml, settings

    out: dict[str, object] = {}
    for prefix, cls in (("limits", agent_toml.Limits), ("network", agent_toml.Network),
                        ("agent", settings.SettingsConfig)):
        for name, default in cls._field_defaults.items():
            if default is not None:
                out[f"{prefix}.{name}"] = default
    return out


def _ranges() -> dict[str, tuple[float, float]]:
    from giter_agent.config import agent_toml

    out: dict[str, tuple[float, float]] = {
        f"limits.{k}": v for k, v in agent_toml._LIMIT_RANGES.items()}
    out.update({f"network.{k}": v for k, v in agent_toml._NETWORK_RANGES.items()})
    return out


def _value(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def manpage(version: str) -> str:
    """``agent.toml(5)``: every key by section, with its default and range."""
    from giter_agent.core.clidoc import Section, roff, roff_page

    defaults, ranges = _defaults(), _ranges()
    by_section: dict[str, list[str]] = {}
    for key in sorted(KEYS, key=lambda k: (k.count("."), k)):
        section = key.split(".")[0] if "." in key else ""
        by_section.setdefault(section, []).append(key)
    body = []
    for section in SECTION_HELP:
        body += [f".SS {roff(f'[{section}]') if section else 'Top level'}",
                 roff(SECTION_HELP[section])]
        for key in by_section.get(section, []):
            name = key.split(".", 1)[1] if section else key
            extra = []
            if key in defaults:
                extra.append(f"Default {_value(defaults[key])}.")
            if key in ranges:
                lo, hi = ranges[key]
                extra.append(f"From {_value(lo)} to {_value(hi)}.")
            body += [".TP", f"\\fB{roff(name)}\\fR", roff(" ".join([KEYS[key], *extra]))]
    example = ('device_id = "pi-kitchen-01"\nstate_dir = "/var/lib/giter-agent"\n'
               'board = "rpi-4b"\nallowed_signers = "/etc/giter-agent/allowed_signers"\n'
               'groups = ["kitchen"]\n\n[files]\nroots = ["/srv/giter"]')
    sections = [
        Section("SYNOPSIS", "/etc/giter-agent/agent.toml"),
        Section("DESCRIPTION", roff(
            "The configuration of giter-agent(1), in TOML. Paths may be relative to the "
            "file. An unknown key or section is an error, named with the key; "
            "giter-agent doctor checks the file and what it points at.")),
        Section("KEYS", "\n".join(body)),
        Section("EXAMPLE", ".nf\n" + roff(example) + "\n.fi"),
        Section('"SEE ALSO"', "\\fBgiter\\-agent\\fR(1), \\fBgiter\\-bundle\\fR(1)"),
    ]
    return roff_page("agent.toml", 5, version, "giter-agent configuration file", sections)
