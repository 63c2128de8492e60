"""giter-bundle: the publisher's toolkit (enrol devices, sign specs, carry bundles, read status).

It shares the agent's history and trust code: one implementation of bundles and
signatures, not two. The modules, in the order an operator meets them:

- ``exchange``: the exchange repository (spec branch, trust, devices, status refs);
- ``enrolment``: ``.giter/devices/<id>.pub`` and ``.yaml``; ``layout``: what init writes;
- ``worktree``, ``generation``, ``signing``, ``publisher``: the work tree, the
  ``metadata.generation`` bump, the key and name, the signed commit;
- ``lint``: the agent's own checks on a spec tree;
- ``fleet_bundle``, ``progress``: the smallest bundle for the targets, onto a stick;
- ``status_import``: verified status bundles into the hub; ``fleet_status``: the table;
- ``inspection``: a bundle's commits and verdicts, without importing it;
- ``serial_peer``: the laptop's end of the serial cable;
- ``cli`` and ``commands/``: one module per subcommand.
"""
