"""``giter-bundle report --html``: the fleet page, checked as HTML and rendered in Chromium.

The fleet is made by ``bench/synthetic_fleet.py`` (the agent's own status writer, each
device signing with its own key: a device that stops being Ready, one that observed a
spec commit off the branch, one that never reported, a CPU-temperature sensor in every
report), plus a device that really synced from a stick and whose status was imported.
Headless Chromium (Debian's ``chromium``) loads the page from a file, runs its script,
and reports every console message on stderr: the page must log none (an error, a
blocked load and a ``console.log`` all would), and the DOM after the script ran must
show the table, the timelines and the charts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support.fleet import Fleet, capture, enrolled, motd

from giter_bundle.cli import main as bundle_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from synthetic_fleet import make_fleet

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                    "(Debian: chromium; scripts/test installs it)")


class Page(HTMLParser):
    """Every element's tag, attributes and text, and the external references."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        for key in ("src", "href"):
            if key in a and not a[key].startswith("#"):
                self.external.append(a[key])
        if tag == "link":
            self.external.append(a.get("href", ""))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def rows(self) -> dict[str, str]:
        return {a["data-device"]: a["class"] for t, a in self.tags
                if t == "tr" and "data-device" in a}


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return make_fleet(root, 8, reports=24, spec_commits=4, quiet=True)


def report(fleet: Path, out: Path, *extra: str) -> tuple[int, str]:
    return capture(bundle_main, ["-C", fleet, "report", "--html", out, *extra])


def chromium(tmp_path: Path, url: str, *args: str) -> tuple[str, list[str]]:
    """(stdout, console lines) of headless Chromium loading ``url``."""
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", *args, url],
        capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    console = [line for line in proc.stderr.decode(errors="replace").splitlines()
               if re.search(r":CONSOLE[:(]", line)]
    return proc.stdout.decode(errors="replace"), console


def test_page_shows_table_history_sensors_and_divergence(tmp_path, synthetic):
    code, out = report(synthetic["fleet"], tmp_path / "out")
    assert code == 0, out
    page = parse(tmp_path / "out/index.html")
    assert page.external == []  # nothing to fetch: no src=, no href= but in-page anchors
    rows = page.rows()
    assert rows == {"dev-00000": "ok", "dev-00001": "notready", "dev-00002": "diverged",
                    "dev-00003": rows["dev-00003"], "dev-00004": rows["dev-00004"],
                    "dev-00005": rows["dev-00005"], "dev-00006": rows["dev-00006"],
                    "dev-00007": "never"}
    assert set(rows.values()) <= {"ok", "behind", "notready", "diverged", "never"}
    text = "".join(page.text)
    assert "not ready File/motd: WriteFailed" in text  # the notes, as `status` has them
    assert "not on the branch" in text
    # A timeline per device that reported: one band per report, and red where not Ready.
    svgs = [a for t, a in page.tags if t == "svg"]
    assert sum(a["class"] == "timeline" for a in svgs) == 7
    assert sum(a["class"] == "chart" for a in svgs) == 7  # one sensor each
    bands = [a for t, a in page.tags if t == "rect"]
    assert len(bands) == 7 * 24
    assert sum(a["class"] == "r-bad" for a in bands) >= 12  # dev-00001's second half
    assert sum(t == "circle" for t, _ in page.tags) == 7 * 24  # every reading plotted
    assert "Sensor/cpu-temp" in text and "°C" in text

    code, out = report(synthetic["fleet"], tmp_path / "short", "--history", "5")
    assert code == 0
    assert sum(t == "circle" for t, _ in parse(tmp_path / "short/index.html").tags) == 7 * 5


def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, synthetic):
    code, out = report(synthetic["fleet"], tmp_path / "x", "--history", "0")
    assert code == 2 and "--history" in out and not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("")
    code, out = report(synthetic["fleet"], tmp_path / "file")
    assert code == 2 and "not a folder" in out and "Traceback" not in out


def test_a_device_that_synced_from_a_stick_is_in_the_report(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    (dev,) = enrolled(fleet, tmp_path, "pi-a")
    fleet.write("devices/pi-a/motd.yaml", motd(dev, "hello\n"))
    fleet.ok("commit", "-m", "Welcome")
    stick = tmp_path / "stick"
    stick.mkdir()
    fleet.ok("create", stick)
    assert dev.cli("sync", "--usb", stick) == 0
    code, out = report(fleet.root, tmp_path / "before")
    assert code == 0
    assert parse(tmp_path / "before/index.html").rows() == {"pi-a": "never"}  # not imported
    assert "ACCEPTED" in fleet.ok("import", stick)
    code, out = report(fleet.root, tmp_path / "after")
    assert code == 0, out
    page = parse(tmp_path / "after/index.html")
    assert page.rows() == {"pi-a": "ok"}
    assert [a["class"] for t, a in page.tags if t == "rect"] == ["r-ok"]


def test_strings_from_the_repository_are_escaped():
    from giter_bundle.report_html import render_html

    row = {"device": "pi-<b>", "enrolled": False, "groups": ["<script>"],
           "statusCommit": None, "observedSpec": None, "onBranch": None, "behind": None,
           "reportedAt": None, "ready": [], "notReady": [], "stale": None, "refused": [],
           "invalid": [], "problems": ["</script><script>alert(1)</script>"],
           "history": {"reports": [], "sensors": {}, "truncated": False}}
    page = render_html({"branch": "main", "tip": "a" * 40, "tipTime": "now",
                        "devices": [row]}, 0)
    assert "<b>" not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(1)" in page


@needs_chromium
def test_chromium_renders_the_page_without_console_messages(tmp_path, synthetic):
    code, out = report(synthetic["fleet"], tmp_path / "out")
    assert code == 0, out
    url = (tmp_path / "out/index.html").as_uri()
    dom, console = chromium(tmp_path, url, "--dump-dom")
    assert console == []
    # The script ran to its end (it marks the body) and counted the rows it filters.
    assert re.search(r'<body[^>]*data-ready="1"', dom)
    assert "8 of 8 shown" in dom
    assert dom.count('class="timeline"') == 7 and dom.count('class="chart"') == 7
    assert 'class="diverged"' in dom and "dev-00002" in dom

    shot = tmp_path / "shot.png"
    _out, console = chromium(tmp_path, url, f"--screenshot={shot}", "--window-size=1000,900",
                             "--hide-scrollbars")
    assert console == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The check itself: a page with a script error and a blocked load is caught.
    bad = tmp_path / "bad.html"
    page = (tmp_path / "out/index.html").read_text()
    bad.write_text(page.replace("</body>", '<img src="http://127.0.0.1:9/x.png">'
                                "<script>notDefined()</script></body>"))
    _dom, console = chromium(tmp_path, bad.as_uri(), "--dump-dom")
    assert any("notDefined" in line for line in console)
    assert any("Content Security Policy" in line for line in console)
