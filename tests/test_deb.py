"""The Debian package: ``scripts/deb`` builds it with dpkg-buildpackage (dh + pybuild), and
what it holds is what an admin's ``apt install ./giter-agent_*.deb`` needs: the commands,
the units and udev rule pointed at the package's own paths, man pages, bash and zsh
completions, maintainer scripts that create the user and state and enable the service,
a purge that removes them, and dependencies Debian 12 satisfies (the agent runs its demo
on Debian's python3 and Debian's libraries, with only the bundled ones added).
The install itself, with no network, is the VM's (scripts/qemu-test vm-image)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
DEB_TOOLS = ("dpkg-buildpackage", "dh", "pybuild", "dpkg-deb")
# Debian 12's own python3 packages the agent runs on (debian/control Depends).
DEBIAN_LIBS = ("python3-cryptography", "python3-msgpack", "python3-yaml", "python3-serial",
               "python3-colorzero", "python3-typing-extensions")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in DEB_TOOLS),
    reason="Debian's build tools are missing (scripts/test installs them)")


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    done = subprocess.run(["bash", str(REPO / "scripts/deb"), str(out)], capture_output=True,
                          text=True, timeout=1800, check=False)
    if done.returncode != 0 and "could not fetch" in done.stderr:
        pytest.skip(f"no package index reachable for the bundled wheels: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    built = out / f"giter-agent_{VERSION}_all.deb"
    assert done.stdout.strip() == f"deb: {built}"
    return built


def dpkg_deb(*args: str | Path) -> str:
    return subprocess.run(["dpkg-deb", *map(str, args)], capture_output=True, text=True,
                          check=True).stdout


def control_field(deb: Path, field: str) -> str:
    return dpkg_deb("-f", deb, field).strip()


@pytest.fixture(scope="module")
def contents(deb) -> dict[str, str]:
    """path -> mode string (``-rwxr-xr-x``, ``lrwxrwxrwx``...) of every entry."""
    entries = {}
    for line in dpkg_deb("-c", deb).splitlines():
        fields = line.split()
        path = fields[5].removeprefix(".")
        entries[path.rstrip("/") or "/"] = fields[0]
    return entries


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(root / "DEBIAN")], check=True)
    return root


def test_control_says_what_it_is_and_takes_its_libraries_from_debian(deb):
    assert control_field(deb, "Package") == "giter-agent"
    assert control_field(deb, "Version") == VERSION
    assert control_field(deb, "Architecture") == "all"
    depends = {re.sub(r"\s*\(.*\)", "", d).strip()
               for d in control_field(deb, "Depends").split(",")}
    assert set(DEBIAN_LIBS) <= depends
    # Bundled, because Debian 12's are older than pyproject.toml requires.
    assert not {"python3-dulwich", "python3-gpiozero", "python3-urllib3"} & depends


def test_the_commands_units_rule_pages_and_completions_are_in_it(contents):
    executables = ("/usr/bin/giter-agent", "/usr/bin/giter-bundle",
                   "/usr/lib/giter-agent/bin/python", "/usr/lib/giter-agent/libexec/giter-usb",
                   "/usr/lib/giter-agent/libexec/giter-rw-paths")
    for path in executables:
        assert contents.get(path, "").startswith("-rwxr-xr-x"), path
    for path in ("/lib/systemd/system/giter-agent.service",
                 "/lib/systemd/system/giter-usb@.service",
                 "/lib/systemd/system/giter-usb-sync@.service",
                 "/lib/udev/rules.d/99-giter-usb.rules",
                 "/usr/share/man/man1/giter-agent.1.gz", "/usr/share/man/man1/giter-bundle.1.gz",
                 "/usr/share/man/man5/agent.toml.5.gz",
                 "/usr/share/bash-completion/completions/giter-agent",
                 "/usr/share/bash-completion/completions/giter-bundle",
                 "/usr/share/zsh/vendor-completions/_giter-agent",
                 "/usr/share/zsh/vendor-completions/_giter-bundle",
                 "/usr/share/doc/giter-agent/copyright",
                 "/usr/share/giter-agent/agent.toml.in",
                 "/usr/share/giter-agent/giter-packages.conf",
                 "/usr/share/giter-agent/giter_boards/generic-mock.toml",
                 "/usr/share/giter-agent/dulwich/__init__.py",
                 "/usr/share/giter-agent/gpiozero-2.0.1.post3.dist-info/entry_points.txt",
                 "/usr/share/giter-agent/urllib3/__init__.py"):
        assert contents.get(path, "").startswith("-rw-r--r--"), path
    # The kinds' JSON schemas ship with the agent, as in the wheel.
    assert any(p.startswith("/usr/share/giter-agent/giter_agent/kinds/schemas/")
               and p.endswith(".json") for p in contents)
    # Nothing of a checkout or a build leaks in, and nothing lands in /etc or /opt.
    assert not [p for p in contents if "__pycache__" in p or p.startswith(("/etc", "/opt"))]


def test_the_units_run_what_the_package_installs(unpacked):
    units = sorted((unpacked / "lib/systemd/system").glob("*.service"))
    assert len(units) == 3
    for unit in units:
        text = unit.read_text()
        assert "/opt/giter-agent" not in text, unit.name
        for cmd in re.findall(r"^Exec\w+=[-+!@]*(/\S+)", text, re.M):
            assert (unpacked / cmd.lstrip("/")).exists() or cmd == "/usr/bin/systemctl", cmd
    usb = (unpacked / "usr/lib/giter-agent/libexec/giter-usb").read_text()
    assert "PREFIX=/usr/lib/giter-agent\n" in usb
    assert (unpacked / "usr/lib/giter-agent/bin/giter-agent").resolve() == \
        unpacked / "usr/bin/giter-agent"


def test_maintainer_scripts_create_enable_and_purge(unpacked):
    postinst = (unpacked / "DEBIAN/postinst").read_text()
    assert "useradd --system" in postinst and "install -d -o \"$USER_NAME\"" in postinst
    assert "deb-systemd-helper enable 'giter-agent.service'" in postinst
    assert "deb-systemd-invoke $_dh_action 'giter-agent.service'" in postinst
    # dh_python3 compiles the private folder on install and cleans it on removal (it
    # does nothing unless debian/control asks for ${python3:Depends}).
    assert "py3compile -p giter-agent /usr/share/giter-agent" in postinst
    assert "py3clean -p giter-agent" in (unpacked / "DEBIAN/prerm").read_text()
    postrm = (unpacked / "DEBIAN/postrm").read_text()
    purge = postrm.split("purge)", 1)[1].split(";;", 1)[0]
    assert "rm -rf /etc/giter-agent /var/lib/giter-agent" in purge
    assert "userdel giter" in purge
    for script in ("postinst", "postrm", "prerm"):
        subprocess.run(["sh", "-n", str(unpacked / "DEBIAN" / script)], check=True)


def test_the_agent_runs_on_debians_python_and_libraries(unpacked, tmp_path):
    missing = [p for p in DEBIAN_LIBS if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True,
        check=False).stdout != "install ok installed"]
    if missing:
        pytest.skip(f"not installed here: {' '.join(missing)} (scripts/test installs them)")
    private = unpacked / "usr/share/giter-agent"
    # -I: Debian's python3 with its own dist-packages only (no venv, no user site).
    code = (f"import sys; sys.path.insert(0, {str(private)!r}); "
            "import dulwich, cryptography; "
            "print(dulwich.__file__, cryptography.__file__); "
            "from giter_agent.cli.main import main; sys.exit(main(['demo']))")
    done = subprocess.run(["/usr/bin/python3", "-I", "-c", code], capture_output=True,
                          text=True, timeout=600, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    first = done.stdout.splitlines()[0].split()
    assert first[0].startswith(str(private))
    assert first[1].startswith("/usr/lib/python3/dist-packages/")
    assert "Demo complete." in done.stdout


@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian is not installed")
def test_lintian_finds_no_error(deb):
    done = subprocess.run(["lintian", "--fail-on", "error", str(deb)], capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [line for line in done.stdout.splitlines() if line.startswith("E:")]
