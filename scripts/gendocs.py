#!/usr/bin/env python3
"""Write the man pages and the bash and zsh completions in share/ from the programs' own parsers.

    python scripts/gendocs.py          # rewrite share/
    python scripts/gendocs.py --check  # exit 1 if share/ differs from what would be written

giter-agent(1) and giter-bundle(1) and their completions come from the argparse parsers
the commands run with (``giter_agent.core.clidoc``); agent.toml(5) from the config
loader's key tables (``giter_agent.config.reference``). A test runs ``--check``;
scripts/install, ``pip install`` and the Debian package put the files where man, bash
and zsh look.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARE = ROOT / "share"

AGENT_EXIT = """\
0: done (for sync: the newest verified spec is applied and every resource is Ready;
for status: in sync). 1: refused (a bundle, a commit) or, for status, the device
refused its last bundle. 2: a configuration or usage error. 3: for sync, applied but a
resource is not Ready; for status, an error; for plan --detailed-exitcode, something
would change. 4: the hub could not be reached (sync), offline (status). 5: for status,
the spec has expired (stale). 130: interrupted."""

BUNDLE_EXIT = """\
0: done. 1: something was refused or found wrong (a lint error, a bad signature, a
commit a device would refuse, a forged status bundle). 2: the command could not start
(usage, not a repository, no usable key, no author)."""


def files() -> dict[str, str]:
    from giter_agent import __version__
    from giter_agent.cli.main import _parser as agent_parser
    from giter_agent.config.reference import manpage as toml_manpage
    from giter_agent.core.clidoc import bash_completion, manpage, zsh_completion
    from giter_bundle.cli import _parser as bundle_parser

    version = f"giter-agent {__version__}"
    agent, bundle = agent_parser(), bundle_parser()
    return {
        "man/man1/giter-agent.1": manpage(
            agent, version, summary="GitOps edge agent: signed specs in, signed status out",
            exit_status=AGENT_EXIT, see_also=("giter-bundle(1)", "agent.toml(5)")),
        "man/man1/giter-bundle.1": manpage(
            bundle, version, summary="the publisher's toolkit for a giter fleet",
            exit_status=BUNDLE_EXIT, see_also=("giter-agent(1)", "agent.toml(5)")),
        "man/man5/agent.toml.5": toml_manpage(version),
        "bash-completion/completions/giter-agent": bash_completion(agent),
        "bash-completion/completions/giter-bundle": bash_completion(bundle),
        "zsh/site-functions/_giter-agent": zsh_completion(agent),
        "zsh/site-functions/_giter-bundle": zsh_completion(bundle),
    }


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    stale = []
    for rel, text in files().items():
        path = SHARE / rel
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote share/{rel}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python scripts/gendocs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
