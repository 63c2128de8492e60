"""Man pages and shell completions are generated from the parsers, and say what they do.

``scripts/gendocs.py --check`` must find share/ as it would write it (so a new option
cannot ship without its man page and completions); groff reads the pages without a
warning; bash completes commands, options and choices with the generated functions;
zsh parses its completion functions, which name every command, option and choice;
agent.toml(5) names exactly the keys the config loader knows.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from giter_agent.cli.main import _parser as agent_parser
from giter_agent.config.reference import KEYS, known_keys
from giter_agent.core.clidoc import subcommands, zsh_completion
from giter_bundle.cli import _parser as bundle_parser

ROOT = Path(__file__).resolve().parent.parent
SHARE = ROOT / "share"
PAGES = ("man/man1/giter-agent.1", "man/man1/giter-bundle.1", "man/man5/agent.toml.5")


def test_share_is_what_the_parsers_generate():
    proc = subprocess.run([sys.executable, ROOT / "scripts/gendocs.py", "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("page", PAGES)
def test_groff_reads_each_page_without_a_warning(page):
    proc = subprocess.run(["groff", "-man", "-ww", "-z", SHARE / page],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize(("parser", "page"), [(agent_parser, PAGES[0]),
                                              (bundle_parser, PAGES[1])])
def test_every_command_and_option_is_in_the_man_page(parser, page):
    text = (SHARE / page).read_text().replace("\\-", "-")
    for name, sub in subcommands(parser()).items():
        assert f".SS {name}" in text, name
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, (name, option)


def test_agent_toml_page_documents_exactly_the_known_keys():
    assert set(KEYS) == known_keys()
    text = (SHARE / PAGES[2]).read_text().replace("\\-", "-")
    for key in KEYS:
        assert f"\\fB{key.split('.')[-1]}\\fR" in text, key


def complete(prog: str, *words: str) -> list[str]:
    """What bash offers for ``prog words...`` (the last word is being completed)."""
    script = SHARE / "bash-completion/completions" / prog
    func = "_" + prog.replace("-", "_")
    line = " ".join(f"'{w}'" for w in (prog, *words))
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c",
         f"source '{script}'; COMP_WORDS=({line}); COMP_CWORD={len(words)}; {func}; "
         'printf "%s\\n" "${COMPREPLY[@]}"'],
        capture_output=True, text=True, check=True, cwd=SHARE)
    return [w for w in proc.stdout.splitlines() if w]


def test_bash_completes_commands_options_and_choices():
    assert complete("giter-agent", "sta") == ["status"]
    assert "--detailed-exitcode" in complete("giter-agent", "plan", "--")
    assert complete("giter-agent", "status", "-o", "") == ["text", "json", "yaml"]
    assert complete("giter-agent", "-c", "agent.toml", "pl") == ["plan"]
    assert complete("giter-bundle", "-C", "fleet", "cre") == ["create"]
    assert "--allowed-signers" in complete("giter-bundle", "create", "--all")
    assert complete("giter-bundle", "", )[:2] == ["init", "enroll"]


ZSH = {"giter-agent": agent_parser, "giter-bundle": bundle_parser}


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
@pytest.mark.parametrize("prog", sorted(ZSH))
def test_zsh_parses_the_completion(prog):
    proc = subprocess.run(["zsh", "-n", SHARE / "zsh/site-functions" / f"_{prog}"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("prog", sorted(ZSH))
def test_zsh_completion_names_every_command_option_and_choice(prog):
    parser = ZSH[prog]()
    text = (SHARE / "zsh/site-functions" / f"_{prog}").read_text()
    assert text.startswith(f"#compdef {prog}\n")
    for name, sub in subcommands(parser).items():
        assert f"\n                '{name}:" in text, name
        branch = text.split(f"\n                {name})\n", 1)[1].split(";;", 1)[0]
        for action in sub._actions:
            for option in action.option_strings:
                assert (f"'{option}[" in branch or f"'*{option}[" in branch
                        or f",{option}}}" in branch
                        or f"{{{option}," in branch), (name, option)
            if action.choices and action.option_strings:
                assert f":({' '.join(map(str, action.choices))})'" in branch, (name, action)


def test_zsh_help_text_cannot_break_the_quoting():
    import argparse
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--it", help="it's [odd]: a \\ and ``code``", choices=["a", "b"])
    spec = zsh_completion(parser)
    assert "'--it[it'\\''s (odd): a \\\\ and code]:it:(a b)'" in spec
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n"], input=spec, text=True, check=False).returncode == 0


def test_scripts_install_puts_them_where_man_and_shells_look():
    install = (ROOT / "scripts/install").read_text()
    for rel in ("man/man1/giter-agent.1", "man/man5/agent.toml.5",
                "bash-completion/completions/giter-agent", "zsh/site-functions/_giter-agent"):
        assert f'"$SRC/share/{rel}" /usr/local/share/{rel}' in install.replace("\\\n    ", "")
