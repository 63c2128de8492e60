"""What the tests share, in one place: real git and ssh-keygen (``git``), resource
documents written as real YAML (``resources``), simulated devices (``devices``), an
exchange repository driven through giter-bundle (``fleet``), the kinds' context and
clock (``kinds``), the servers tests start on loopback (``servers``), serial lines
(``serial_line``, ``serial_rig``), a fake systemctl (``fake_systemctl``) and packs
and bundles built byte by byte (``packcraft``)."""
