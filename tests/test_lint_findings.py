"""``giter-bundle lint`` says everything wrong in a file, in words a person can act on.

Every finding still comes from the agent's own parser and each kind's own ``validate``;
lint only keeps asking after the first answer.
"""

from __future__ import annotations

import shutil

from support.fleet import API, Fleet

from giter_agent.kinds import load_kinds
from giter_bundle.lint import _check_resource

LED = (f"{API}kind: Output\nmetadata: {{name: led}}\nspec:\n  pin: 17\n  state: blink\n"
       "  ontime: 0.5\n  offTime: -3\n  count: many\n")
MOTD = (f"{API}kind: File\nmetadata: {{name: motd}}\nspec:\n  path: /etc/motd\n"
        "  content: hi\n  mode: 0644  # rw-r--r--\n  ownr: pi\n")


def lines(path: str, text: str) -> list[str]:
    return [f.line() for f in _check_resource(path, text.encode(), load_kinds())]


def test_every_error_in_a_file_is_reported():
    found = lines("groups/a/led.yaml", LED)
    assert found == [
        "groups/a/led.yaml: InvalidSpec: spec: unknown field(s) ontime (did you mean onTime?)",
        'groups/a/led.yaml: InvalidSpec: spec.pin must be a logical pin name, got 17; YAML '
        'reads 17 '
        'as the number 17: quote it: pin: "17"',
        "groups/a/led.yaml: InvalidSpec: spec.offTime must be a number from 0.01 to 3600, "
        "got -3",
        "groups/a/led.yaml: InvalidSpec: spec.count must be a whole number from 1 to "
        "1000000, got 'many'",
    ]


def test_yaml_typing_mistakes_come_with_their_fix():
    found = lines("groups/a/motd.yaml", MOTD)
    assert "groups/a/motd.yaml: InvalidSpec: spec: unknown field(s) ownr (did you mean " \
           "owner?)" in found
    assert any(line.endswith('YAML reads 0644 as the number 420: quote it: mode: "0644"')
               for line in found), found


def test_errors_around_the_spec_do_not_hide_the_spec_s_errors():
    text = LED.replace("giter.dev/v1alpha1", "giter.dev/v9").replace("name: led", "name: LED")
    found = lines("groups/a/led.yaml", text)
    assert found[0].startswith("groups/a/led.yaml: UnsupportedAPIVersion: ")
    assert found[1].startswith("groups/a/led.yaml: InvalidResource: metadata.name 'LED'")
    assert any("did you mean onTime?" in line for line in found)
    assert any("spec.count" in line for line in found)


def test_a_good_file_has_no_findings():
    good = f"{API}kind: Output\nmetadata: {{name: led}}\nspec: {{pin: led1, state: \"on\"}}\n"
    assert lines("groups/a/led.yaml", good) == []


def test_an_upper_case_name_does_not_hide_the_folder_s_other_errors(tmp_path,
                                                                    publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    fleet.write("groups/lobby/Upper.yaml", LED.replace("name: led", "name: upper"))
    fleet.write("groups/lobby/motd.yaml", MOTD)
    code, out = fleet.cli("lint")
    assert code == 1
    assert "groups/lobby: UnsafeTreeEntry: groups/lobby/Upper.yaml: name is not allowed" in out
    assert "groups/lobby/motd.yaml: InvalidSpec: spec: unknown field(s) ownr" in out
    assert 'quote it: mode: "0644"' in out


def test_an_expires_trailer_already_past_is_a_warning(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    fleet.write("groups/lobby/led.yaml",
                f"{API}kind: Output\nmetadata: {{name: led}}\nspec: {{pin: led1, state: "
                "\"on\"}\n")
    code, out = fleet.cli("commit", "-m", "freeze\n\nExpires: 2001-01-01T00:00:00Z")
    assert code == 0, out
    assert "commit message: warning: SpecExpired: Expires: 2001-01-01T00:00:00+00:00 is " \
           "already past" in out
    code, out = fleet.cli("lint")
    assert code == 0, out
    assert "warning: SpecExpired" in out and "0 error(s), 2 warning(s)" in out
    code, out = fleet.cli("commit", "-m", "later\n\nExpires: 2999-01-01T00:00:00Z",
                          "--no-lint")
    assert "SpecExpired" not in out


def _release(name: str, source: str) -> str:
    return (f"{API}kind: Release\nmetadata: {{name: {name}}}\nspec:\n  source: {source}\n"
            f"  root: /srv/giter/{name}\n  check: {{http: \"http://127.0.0.1:8080/\"}}\n")


def test_a_release_source_is_checked_as_the_device_reads_it(tmp_path, publisher_key):
    fleet = Fleet(tmp_path, publisher_key)
    fleet.write("artifacts/good/bin/run", "#!/bin/sh\n")
    fleet.write("artifacts/bad/run", "#!/bin/sh\n")
    (fleet.root / "artifacts/bad/passwd").symlink_to("/etc/passwd")
    fleet.write("groups/lobby/good.yaml", _release("good", "artifacts/good"))
    fleet.write("groups/lobby/bad.yaml", _release("bad", "artifacts/bad"))
    fleet.write("groups/lobby/gone.yaml", _release("gone", "artifacts/gone"))
    fleet.write("groups/lobby/out.yaml", _release("out", "devices/pi-1"))
    fleet.write("artifacts/debs/app_1.0_all.deb", "!<arch>\n")
    for name, deb in (("app", "artifacts/debs/app_1.0_all.deb"),
                      ("lib", "artifacts/debs/lib_1.0_all.deb")):
        fleet.write(f"groups/lobby/{name}.yaml", f"{API}kind: Package\nmetadata: {{name: "
                    f"{name}}}\nspec: {{package: {name}, deb: {deb}}}\n")
    fleet.write("groups/lobby/agent.yaml", f"{API}kind: AgentUpdate\nmetadata: {{name: "
                "agent}\nspec: {version: 0.2.0, wheels: artifacts/agent-0.2.0}\n")
    code, out = fleet.cli("lint")
    assert code == 1
    assert ("groups/lobby/agent.yaml: SourceNotFound: spec.wheels artifacts/agent-0.2.0 is "
            "not a folder of files") in out
    assert ("groups/lobby/bad.yaml: UnsafeTreeEntry: spec.source artifacts/bad: "
            "artifacts/bad/passwd: is a symlink") in out
    assert ("groups/lobby/gone.yaml: SourceNotFound: spec.source artifacts/gone is not a "
            "folder of files") in out
    assert "groups/lobby/out.yaml: InvalidSpec: spec.source must be a folder under " \
           "artifacts/" in out
    assert out.count("out.yaml: InvalidSpec") == 1  # said once, not per retry of lint
    assert ("groups/lobby/lib.yaml: SourceNotFound: spec.deb artifacts/debs/lib_1.0_all.deb "
            "is not a file") in out
    if shutil.which("dpkg-deb"):  # opened as the device opens it (tests/test_lint_debs.py)
        assert ("groups/lobby/app.yaml: InvalidPackage: artifacts/debs/app_1.0_all.deb is "
                "not a Debian package: exit 2: dpkg-deb: error:") in out
    assert "good.yaml" not in out
