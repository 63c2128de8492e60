"""``giter-bundle render --device ID``: exactly what one device will get, rendered.

Runs the agent's own targeting (``giter_agent.spec.targeting``) for an enrolled device
over the work tree (what the next commit would hold) or a committed tree (``--rev``):
its enrolled labels and groups, the values it resolves (``values/devices/<ID>.yaml`` >
``values/labels/<key>/<value>.yaml`` > ``values/defaults.yaml``), then every resource
that reaches it, with its placeholders filled, where it came from (``devices/``, a
``fleet/`` selector, a group) and what less specific definition it overrides; and every
resource the device would refuse, with the reason (``MissingValue``,
``AmbiguousResource`` ...). A file a rollout holds back for this device is shown at
its baseline version, with the reason. The text output is a YAML stream with ``#`` comments; ``-o
json|yaml`` gives the same as data. Exits 1 when the device would refuse something, so
it fits CI as well as ``lint``.
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "show exactly what one device gets: its resources, selected and rendered"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from giter_agent.core.clikit import add_output_option

    p.add_argument("--device", required=True, metavar="ID", help="an enrolled device id")
    p.add_argument("--rev", metavar="BRANCH|COMMIT",
                   help="render a committed tree instead of the work tree")
    add_output_option(p)


def _source(exchange: Any, rev: str | None) -> tuple[Any, bytes, str]:
    """(object store, tree, what it is) for the work tree or ``rev``."""
    from dulwich.repo import Repo

    from giter_agent.core.layout import SPEC_FOLDERS
    from giter_bundle.commands.lint import resolve
    from giter_bundle.worktree import candidate_paths, read_files, tree_of

    if rev is None and exchange.worktree is not None:
        with Repo(str(exchange.worktree)) as repo:
            files = read_files(exchange.worktree, candidate_paths(repo), SPEC_FOLDERS)
        store, tree = tree_of(files, exchange.history.object_store)
        return store, tree, "the work tree"
    sha = resolve(exchange, rev or exchange.branch)
    return (exchange.history.object_store, exchange.commit(sha).tree,
            f"{rev or exchange.branch} ({sha.decode()[:12]})")


def run(args: argparse.Namespace) -> int:
    from giter_agent.spec.resources import API_VERSION, dump_yaml
    from giter_agent.spec.targeting import target
    from giter_bundle.commands import open_exchange
    from giter_bundle.enrolment import check_name, read_devices
    from giter_bundle.errors import PublisherError

    device_id = check_name("device id", args.device)
    with open_exchange(args) as exchange:
        store, tree, what = _source(exchange, args.rev)
        device = read_devices(store, tree)[0].get(device_id)
        if device is None:
            raise PublisherError(f"{device_id} is not enrolled in {what} (giter-bundle "
                                 "enroll)", reason="UnknownDevice")
        targeted = target(store, tree, device_id, device.groups)
    scope, specset = targeted.scope, targeted.specset
    resources: list[dict[str, Any]] = []
    for res in specset.resources:
        doc = {k: v for k, v in res.document.items() if k != "status"}
        if res.held is not None:  # the baseline version is what this device applies
            doc = {"apiVersion": API_VERSION, "kind": res.kind,
                   "metadata": {"name": res.name, "generation": res.generation}}
        doc["spec"] = res.spec
        resources.append({"path": res.path, "key": res.key, "selector": res.selector,
                          "overrides": list(res.overrides), "held": res.held,
                          "document": doc})
    refused = [{"path": b.path, "key": b.key, "reason": b.reason, "message": b.message}
               for b in specset.invalid]
    labels = dict(targeted.record.labels)
    if args.output_format != "text":
        from giter_agent.core.clikit import emit

        emit({"device": device_id, "source": what, "groups": list(device.groups),
              "labels": labels, "values": dict(scope.values), "resources": resources,
              "refused": refused}, args.output_format)
        return 1 if refused else 0
    print(f"# {device_id} in {what}")
    print(f"# labels: {','.join(f'{k}={v}' for k, v in labels.items()) or 'none'}")
    print(f"# groups: {', '.join(device.groups) or 'none'}")
    if scope.values_problem:
        print(f"# values: unusable: {scope.values_problem}")
    else:
        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(scope.values.items()))
        print(f"# values: {shown or 'none'}")
    for item in resources:
        origin = [f"from {item['path']}"]
        if item["selector"] is not None:
            origin.append(f"selector {item['selector']}")
        if item["overrides"]:
            origin.append(f"overrides {', '.join(item['overrides'])}")
        if item["held"] is not None:
            origin.append(f"baseline version: {item['held']}")
        print(f"---\n# {item['key']} {'; '.join(origin)}")
        print(dump_yaml(item["document"]).decode(), end="")
    for bad in refused:
        print(f"---\n# REFUSED {bad['path']}: {bad['reason']}: {bad['message']}")
    print(f"# {len(resources)} resource(s), {len(refused)} refused")
    return 1 if refused else 0
