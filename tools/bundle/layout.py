"""The files ``giter-bundle init`` lays out in an exchange repository, for its readers.

Git keeps no empty folders, so ``devices/`` and ``groups/`` each get a README: a file
directly in those folders is never read by a device (devices read
``devices/<their-id>/`` and ``groups/<group>/`` only). The top README is for the people
who edit the repository.

``.giter/schemas/`` holds a JSON Schema per resource kind (``giter_agent.kinds.schema``:
generated from the kinds' own field declarations, plug-ins installed here included) and
a README saying how to point an editor at them.

Called by ``giter-bundle init``.
"""

from __future__ import annotations

from giter_agent.core.layout import POLICY_FILE

__all__ = ["POLICY", "POLICY_FILE", "SCHEMAS", "layout_files", "schema_files"]

README = """\
# Fleet specs ({branch})

This repository steers a fleet of giter-agent devices. Every commit on `{branch}` must
be **signed** by a key listed in `.giter/trust/allowed_signers`; devices refuse
anything else, and act only on what is in their own folders.

```
.giter/trust/allowed_signers   publisher keys (git's allowed_signers format)
.giter/trust/policy.toml       bind_branch = true: every tip names its branch
.giter/devices/<id>.pub        an enrolled device's key  (giter-bundle enroll)
.giter/devices/<id>.yaml       its groups and labels (giter-bundle label)
.giter/schemas/*.json          JSON Schema per resource kind, for editors and CI
devices/<id>/*.yaml            resources for one device
fleet/**/*.yaml                resources for the devices metadata.selector matches
groups/<group>/*.yaml          resources for every device in the group
values/                        ${{values.<key>}} per device, per label, defaults
rollouts/<name>.yaml           a staged rollout (giter-bundle rollout status|advance)
refs/heads/status/<id>         what each device reported (written by the device)
```

A resource, one per file:

```yaml
# yaml-language-server: $schema=../../.giter/schemas/resource.json
apiVersion: giter.dev/v1alpha1
kind: File
metadata:
  name: motd
spec:
  path: /srv/giter/motd
  content: "hello\\n"
```

## Changing the fleet

1. Edit files under `devices/`, `fleet/`, `groups/` and `values/`.
2. `giter-bundle lint` checks them against the agent's schemas;
   `giter-bundle render --device ID` shows what one device gets (docs/fleet.md).
3. Sign, naming the branch the commit is for:
   `git commit -S --trailer "Giter-Branch: {branch}"` (this repository sets
   `gpg.format=ssh`), or on a machine without git
   `giter-bundle commit -m "what and why"`, which adds the trailer itself and also
   bumps `metadata.generation` of each resource whose spec changed. Devices refuse a
   tip whose trailer names another branch, or (with `bind_branch = true` in
   `.giter/trust/policy.toml`) has none: a commit signed for `staging` can never be
   applied as `{branch}`. To merge a branch: `git merge --no-ff --no-commit NAME`, then
   the same `git commit -S --trailer ...`. Start branches from the newest `{branch}`
   (or rebase them onto it): devices refuse a merge that brings in commits built on
   anything older than what they hold.
4. `giter-bundle create /media/STICK` writes the bundle every device needs.
5. Back from the field: `giter-bundle import /media/STICK`, then `giter-bundle status`.

Never rewrite `{branch}` (no force-push, no rebase of pushed commits): devices accept
fast-forwards only and refuse anything else as a rollback or fork.
"""

DEVICES_README = """\
One folder per device, named by its device id: `devices/<id>/*.yaml`.
A device reads only its own folder (and its groups' folders); files here are not read.
"""

GROUPS_README = """\
One folder per group: `groups/<group>/*.yaml` applies to every device enrolled in it
(`giter-bundle enroll ID KEY --group GROUP`). A resource in a device's own folder
overrides one of the same kind and name from a group.
"""


SCHEMAS = ".giter/schemas"

SCHEMAS_README = """\
JSON Schemas of the giter resource kinds (draft 2020-12), generated from the agent's own
kind definitions by `giter-bundle init`: `resource.json` for any resource (it picks by
`kind`), `<kind>.json` for one kind. They check each field's type, range, choices and
name while you type; `giter-bundle lint` checks everything a device checks.

Editors with yaml-language-server (VS Code's YAML extension, Neovim, Helix, ...): put
this first line in a resource file under `devices/<id>/` or `groups/<group>/`

    # yaml-language-server: $schema=../../.giter/schemas/resource.json

or map them all at once, in VS Code's `.vscode/settings.json`:

    {{"yaml.schemas": {{"./.giter/schemas/resource.json": ["devices/*/*.yaml",
                                                          "groups/*/*.yaml"]}}}}

After upgrading giter-agent, remove this folder and run `giter-bundle init` again to
write the new schemas (existing files are never overwritten).
"""


def schema_files() -> dict[str, bytes]:
    """``.giter/schemas/*``: the kinds' JSON Schemas (plug-ins installed here included)."""
    from giter_agent.kinds import load_kinds
    from giter_agent.kinds.schema import schema_files as generate

    files = {f"{SCHEMAS}/{name}": data for name, data in generate(load_kinds()).items()}
    files[f"{SCHEMAS}/README.md"] = SCHEMAS_README.format().encode()
    return files


POLICY = """\
# Read by every device (docs/trust.md). With bind_branch = true, the newest commit of
# an update must carry a `Giter-Branch: <branch>` trailer naming the branch it is
# offered as: `git commit -S --trailer "Giter-Branch: main"`, or `giter-bundle commit`.
bind_branch = true
"""


def layout_files(branch: str, *, readme_path: str = "README.md") -> dict[str, bytes]:
    """The READMEs of a new exchange repository, by path."""
    return {readme_path: README.format(branch=branch).encode(),
            "devices/README.md": DEVICES_README.encode(),
            "groups/README.md": GROUPS_README.encode(),
            **schema_files()}
