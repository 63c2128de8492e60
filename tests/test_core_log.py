"""``core.log``: loggers that load ``logging`` only when something is emitted.

Each process-level case runs in a fresh interpreter (pytest itself has ``logging``
loaded): below the configured level ``logging`` is never imported; at or above it, the
line is exactly what ``logging.basicConfig`` with the same level and format printed
(the same script, with plain ``logging``, is the oracle); a library that imports
``logging`` first gets the configured root too. In this process (``logging`` loaded) the
proxy is the real logger: caplog, levels set by a test, ``extra``, the caller's line.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap

import pytest
from support.kinds import Rig, doc

from giter_agent.core.log import DEBUG, ERROR, INFO, WARNING, get_logger

pytestmark = pytest.mark.unit

FMT = "giter-agent %(levelname)s %(name)s: %(message)s"


def python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, check=True)


def test_below_the_threshold_logging_is_never_imported():
    out = python(f"""
        import sys
        from giter_agent.core import log
        one = log.get_logger("giter.one")
        one.debug("not shown %s", 1)
        one.info("not shown either")
        log.configure(log.WARNING, {FMT!r})
        one.info("still not shown")
        one.log(log.INFO, "nor this")
        print(one.isEnabledFor(log.INFO), one.isEnabledFor(log.WARNING))
        print("logging" in sys.modules)
        log.configure(log.DEBUG, {FMT!r})  # only the first call counts, as basicConfig
        one.debug("not shown")
        print("logging" in sys.modules)
        """)
    assert out.stdout.split() == ["False", "True", "False", "False"]
    assert out.stderr == ""


# The same calls, through core.log or through plain logging configured as the command
# line did before core.log existed: the same lines (the traceback's included).
CALLS = """
def calls(log):
    log.debug("a debug line %s", 1)
    log.info("an info line %s", 2)
    log.warning("%s drifted from its spec and was corrected: %s", "File/motd", "content")
    log.error("refused: %s", "no signature", extra={{"event": "refused"}})
    log.log(40, "the %s pass failed", "sync")
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("a bug")
    log.critical("critical %d", 5)
"""


@pytest.mark.parametrize("level", [INFO, WARNING])
def test_at_the_threshold_lines_are_those_basicconfig_printed(level):
    ours = python(f"""
        import sys
        from giter_agent.core import log
        {textwrap.indent(CALLS.format(), "        ").strip()}
        log.configure({level}, {FMT!r})
        calls(log.get_logger("giter.sync"))
        import logging
        print(len(logging.getLogger().handlers), logging.getLogger().level)
        """)
    plain = python(f"""
        import sys
        import logging as log
        {textwrap.indent(CALLS.format(), "        ").strip()}
        log.basicConfig(level={level}, format={FMT!r})
        calls(log.getLogger("giter.sync"))
        import logging
        print(len(logging.getLogger().handlers), logging.getLogger().level)
        """)
    assert ours.stdout == plain.stdout == f"1 {level}\n"
    assert ours.stderr == plain.stderr
    assert ("giter-agent INFO giter.sync: an info line 2" in ours.stderr) == (level == INFO)
    assert "giter-agent ERROR giter.sync: a bug\nTraceback" in ours.stderr
    assert "debug" not in ours.stderr


def test_a_library_that_imports_logging_finds_the_root_configured():
    """dulwich imports ``logging`` on a sync of new commits, before anything of ours logs:
    its lines and ours carry the command line's format, through one handler."""
    out = python(f"""
        import sys
        from giter_agent.core import log
        ours = log.get_logger("giter.sync")
        log.configure(log.INFO, {FMT!r})
        import logging
        logging.getLogger("dulwich.repo").info("a library's line")
        ours.info("ours")
        ours.debug("not ours")
        print(len(logging.getLogger().handlers), logging.getLogger().level)
        print(logging.__spec__.loader is logging.__loader__,
              type(logging.__loader__).__name__)
        """)
    assert out.stderr == ("giter-agent INFO dulwich.repo: a library's line\n"
                          "giter-agent INFO giter.sync: ours\n")
    assert out.stdout.split() == ["1", "20", "True", "SourceFileLoader"]


def test_configured_after_logging_is_loaded_it_is_basicconfig_at_once():
    out = python(f"""
        import logging
        from giter_agent.core import log
        log.configure(log.INFO, {FMT!r})
        print(len(logging.getLogger().handlers), logging.getLogger().level)
        log.get_logger("giter.usb").info("a stick")
        """)
    assert out.stdout == "1 20\n"
    assert out.stderr == "giter-agent INFO giter.usb: a stick\n"


def test_with_logging_loaded_the_real_logger_decides(caplog):
    log = get_logger("giter.test.core_log")
    caplog.set_level(DEBUG, logger="giter.test.core_log")
    log.debug("seen at %s", "debug", extra={"event": "probe"})
    (record,) = caplog.records
    assert (record.levelno, record.getMessage(), record.event) == (DEBUG, "seen at debug",
                                                                  "probe")
    # The record names the caller, as a plain logger's would, not core.log.
    assert (record.pathname, record.funcName) == (__file__, sys._getframe().f_code.co_name)
    caplog.clear()
    logging.getLogger("giter.test.core_log").setLevel(ERROR)
    log.warning("a level set on the real logger holds")
    log.log(WARNING, "for log() too")
    assert caplog.records == []
    assert not log.isEnabledFor(WARNING) and log.isEnabledFor(ERROR)
    log.error("and an error passes")
    assert [r.getMessage() for r in caplog.records] == ["and an error passes"]


# The command line, as a device runs it: each step a sync takes is logged with -v in
# the format it always had, and a warning shows without -v; a sync that logs nothing
# does not load logging at all (tests/test_pass_cost.py checks the module list).
CLI = ("import sys\nfrom giter_agent.cli.main import main\ncode = main(sys.argv[1:])\n"
       "print('LOGGING', 'logging' in sys.modules)\nsys.exit(code)\n")


def cli(rig: Rig, *args: object, verbose: bool = False) -> tuple[list[str], bool]:
    """The lines on stderr of ``giter-agent [-v] -c CONFIG ARGS...`` and whether the
    process loaded ``logging``."""
    proc = subprocess.run([sys.executable, "-c", CLI, *(["-v"] if verbose else []), "-c",
                           str(rig.config), *map(str, args)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stderr.splitlines(), proc.stdout.split("LOGGING ")[1].strip() == "True"


def test_a_verbose_sync_logs_its_steps_and_a_quiet_one_its_warnings(tmp_path, publisher):
    rig = Rig(tmp_path, publisher)
    motd = rig.root / "motd"
    tip = rig.publish({"motd.yaml": doc("File", "motd", {"path": str(motd),
                                                         "content": "hello\n",
                                                         "mode": "0644"})})
    bundle = rig.bundle()
    lines, _ = cli(rig, "sync", "--bundle", bundle, verbose=True)
    assert lines == [f"giter-agent INFO giter.sync: {bundle.name}: accepted spec {tip} "
                     "(1 new commit verified)",
                     f"giter-agent INFO giter.kinds.file: wrote 6 bytes to {motd}"]
    assert cli(rig, "sync", "--bundle", bundle) == ([], False)  # nothing to say
    motd.write_text("changed by hand\n")
    drifted = ("giter-agent WARNING giter.reconcile: File/motd drifted from its spec and "
               f"was corrected: {motd} content sha256 ")
    lines, loaded = cli(rig, "sync", "--bundle", bundle)
    assert loaded and len(lines) == 1 and lines[0].startswith(drifted), lines
    motd.write_text("changed again\n")
    lines, _ = cli(rig, "sync", "--bundle", bundle, verbose=True)
    assert len(lines) == 2 and lines[1].startswith(drifted), lines
    assert lines[0] == f"giter-agent INFO giter.kinds.file: wrote 6 bytes to {motd}"


# The daemon's logfmt lines (daemon.logs), installed when `logging` is loaded (a pass
# worker whose pass logs nothing never loads it): the same bytes as when `logging` was
# loaded before the set-up, under systemd's journal (priority prefix, no time) and on a
# terminal (the time aside), with every extra field and a traceback.
DAEMON_CALLS = """
def calls(log):
    log.debug("a debug line %s", 1)
    log.info("an info line %s", 2, extra={{"event": "usb-stick"}})
    log.warning("refused it", extra={{"event": "refused", "reason": "Rollback",
                                      "commit": b"b" * 40, "spec": "c" * 40}})
    log.error("a line with = and \\"quotes\\"\\nover two lines")
    log.debug("pass worker exited", extra={{"worker_peak_mib": "40.2"}})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("a bug")
    log.critical("critical %d", 5)
"""


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "terminal"])
@pytest.mark.parametrize("level", [INFO, DEBUG])
def test_the_daemons_lines_are_the_same_when_logging_loads_late(journal, level):
    def run(first: str) -> subprocess.CompletedProcess[str]:
        return python(f"""
            import os, sys
            {first}
            if {journal}:
                st = os.fstat(sys.stderr.fileno())
                os.environ["JOURNAL_STREAM"] = f"{{st.st_dev}}:{{st.st_ino}}"
            from giter_agent.core import log
            from giter_agent.daemon import logs
            {textwrap.indent(DAEMON_CALLS.format(), "            ").strip()}
            logs.setup("pi-01", lambda: "a" * 40, level={level})
            print("logging" in sys.modules)
            calls(log.get_logger("giter.daemon"))
            import logging
            logging.getLogger("dulwich.client").debug("a library's pkt-line")
            print(len(logging.getLogger().handlers), logging.getLogger().level)
            """)

    late, early = run(""), run("import logging")
    assert late.stdout == f"False\n1 {level}\n" and early.stdout == f"True\n1 {level}\n"
    lines = late.stderr if journal else re.sub(r"(?m)^time=\S+ ", "", late.stderr)
    oracle = early.stderr if journal else re.sub(r"(?m)^time=\S+ ", "", early.stderr)
    assert lines == oracle
    first = "<7>level=debug" if level == DEBUG else "<6>level=info"
    assert lines.startswith(first if journal else first[3:])
    assert ("level=debug" in lines) == (level == DEBUG)
    assert "level=warning device=pi-01 spec=" + "c" * 40 + " event=refused " \
        "reason=Rollback commit=" + "b" * 40 + ' logger=giter.daemon msg="refused it"' in lines
    assert 'msg="a line with = and \\"quotes\\" over two lines"' in lines
    assert 'error="Traceback (most recent call last):' in lines
    assert "pkt-line" not in lines  # dulwich's debug lines stay off
