"""Man pages and shell completions made from an argparse parser, so they cannot drift.

``manpage`` renders a program's parser (its description, options and every subcommand
with its own description and options) as a roff ``man(7)`` page; ``bash_completion``
writes a bash completion function for the same parser: subcommands, each one's options,
the choices of options that have them, files for the rest; ``zsh_completion`` writes
the zsh ``_arguments`` function for it (the same, with each option's help beside it).
``roff_page`` is the shared roff layout (``agent.toml(5)`` uses it too, from
``giter_agent.config.reference``).

The generated files live in ``share/`` of the source tree; ``scripts/gendocs.py``
writes them and a test regenerates and compares. Nothing here runs on a device.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import dataclass


def roff(text: str) -> str:
    """Escape text for roff: backslashes, dashes, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def _paragraphs(text: str) -> str:
    """Docstring text as roff paragraphs (blank lines become ``.PP``)."""
    text = re.sub(r"``([^`]+)``", r"\1", text.strip())
    blocks = [" ".join(line.strip() for line in block.splitlines())
              for block in re.split(r"\n\s*\n", text) if block.strip()]
    return "\n.PP\n".join(roff(block) for block in blocks)


@dataclass(frozen=True)
class Section:
    """One ``.SH`` section: a title and roff body."""

    title: str
    body: str


def roff_page(name: str, section: int, version: str, summary: str,
              sections: Iterable[Section]) -> str:
    """A whole man page; no date in it, so that regenerating gives the same bytes."""
    manual = "File Formats" if section == 5 else "User Commands"
    out = [f'.TH "{name.upper()}" "{section}" "" "{version}" "{manual}"',
           ".SH NAME", f"{roff(name)} \\- {roff(summary)}"]
    for s in sections:
        out += [f".SH {s.title}", s.body]
    return "\n".join(out) + "\n"


def _flags(action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{roff(o)}\\fR" for o in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices
        else action.dest.upper())
    return f"{names} \\fI{roff(str(metavar))}\\fR"


def _option_items(parser: argparse.ArgumentParser) -> list[str]:
    items = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            head = _flags(action)
        else:
            head = f"\\fI{roff(str(action.metavar or action.dest))}\\fR"
        items += [".TP", head, roff(_help(action))]
    return items


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        text = text % {"default": action.default, "prog": "", "choices": action.choices}
    return text


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name -> parser of each subcommand, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def manpage(parser: argparse.ArgumentParser, version: str, *, summary: str,
            exit_status: str = "", see_also: Iterable[str] = ()) -> str:
    """``man(1)`` page of a program: synopsis, options, one subsection per command."""
    prog = parser.prog
    commands = subcommands(parser)
    helps = _command_helps(parser)
    sections = [
        Section("SYNOPSIS", f"\\fB{roff(prog)}\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR "
                            "[\\fICOMMAND OPTIONS\\fR]"),
        Section("DESCRIPTION", _paragraphs(parser.description or "")),
        Section("OPTIONS", "\n".join(_option_items(parser))),
    ]
    body = []
    for name, sub in commands.items():
        body += [f".SS {roff(name)}", roff(helps.get(name, "")) + ".", ".PP",
                 _paragraphs(sub.description or "")]
        options = _option_items(sub)
        if options:
            body += [".PP", "Options:", *options]
    sections.append(Section("COMMANDS", "\n".join(body)))
    if exit_status:
        sections.append(Section('"EXIT STATUS"', _paragraphs(exit_status)))
    if see_also:
        sections.append(Section('"SEE ALSO"', ",\n".join(
            f"\\fB{roff(ref.split('(')[0])}\\fR({ref.split('(')[1]}" for ref in see_also)))
    return roff_page(prog, 1, version, summary, sections)


def _takes_value(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.nargs != 0


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion function for ``parser.prog`` (bash-completion or plain bash)."""
    prog = parser.prog
    func = "_" + re.sub(r"\W", "_", prog)
    commands = subcommands(parser)

    def opts(p: argparse.ArgumentParser) -> str:
        return " ".join(o for a in p._actions for o in a.option_strings)

    def valued(p: argparse.ArgumentParser) -> list[argparse.Action]:
        return [a for a in p._actions if _takes_value(a)]

    def choice_cases(p: argparse.ArgumentParser, indent: str) -> list[str]:
        lines = []
        for a in valued(p):
            pattern = "|".join(a.option_strings)
            words = " ".join(map(str, a.choices)) if a.choices else ""
            action = (f'COMPREPLY=($(compgen -W "{words}" -- "$cur"))' if words
                      else 'COMPREPLY=($(compgen -f -- "$cur"))')
            lines.append(f"{indent}{pattern}) {action}; return ;;")
        return lines

    global_valued = "|".join(o for a in valued(parser) for o in a.option_strings)
    lines = [
        f"# bash completion for {prog}: generated from its argparse parser by",
        "# scripts/gendocs.py; do not edit (a test regenerates and compares).",
        f"{func}() {{",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    local cmd='' i=1",
        "    while [ $i -lt $COMP_CWORD ]; do",
        '        case "${COMP_WORDS[i]}" in',
        f"            {global_valued}) i=$((i + 2)); continue ;;" if global_valued else "",
        "            -*) ;;",
        '            *) cmd=${COMP_WORDS[i]}; break ;;',
        "        esac",
        "        i=$((i + 1))",
        "    done",
        '    if [ -z "$cmd" ]; then',
        '        case "$prev" in',
        *choice_cases(parser, "            "),
        "        esac",
        f'        COMPREPLY=($(compgen -W "{" ".join(commands)} {opts(parser)}" -- "$cur"))',
        "        return",
        "    fi",
        "    local opts=''",
        '    case "$cmd" in',
    ]
    for name, sub in commands.items():
        lines.append(f"        {name})")
        lines.append(f'            opts="{opts(sub)}"')
        cases = choice_cases(sub, "                ")
        if cases:
            lines += ['            case "$prev" in', *cases, "            esac"]
        lines.append("            ;;")
    lines += [
        "    esac",
        '    if [[ $cur == -* ]]; then',
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        "    else",
        '        COMPREPLY=($(compgen -f -- "$cur"))',
        "    fi",
        "}",
        f"complete -o filenames -F {func} {prog}",
    ]
    return "\n".join(line for line in lines if line != "") + "\n"


def _zsh_quote(text: str) -> str:
    """Text inside a single-quoted zsh word (``'`` closes, escapes, reopens)."""
    return text.replace("'", "'\\''")


def _zsh_help(action: argparse.Action) -> str:
    """An option's help as one short line for zsh's ``[...]`` (no brackets, no newline)."""
    text = " ".join(_help(action).split())
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = text.replace("[", "(").replace("]", ")").replace("\\", "\\\\")
    return _zsh_quote(text[:120].rstrip())


def _zsh_spec(action: argparse.Action) -> str:
    """One ``_arguments`` spec: ``'(-o --output)'{-o,--output}'[help]:VALUE:(a b)'``."""
    names = action.option_strings
    value = ""
    if action.nargs != 0:
        metavar = _zsh_quote(str(action.metavar or action.dest).replace(":", " "))
        choices = " ".join(map(str, action.choices)) if action.choices else ""
        value = f":{metavar}:({_zsh_quote(choices)})" if choices else f":{metavar}:_files"
    repeat = "*" if isinstance(action, argparse._AppendAction | argparse._CountAction) else ""
    help_ = f"[{_zsh_help(action)}]"
    if len(names) == 1:
        return f"'{repeat}{names[0]}{help_}{value}'"
    exclusive = "" if repeat else f"'({' '.join(names)})'"
    return f"{exclusive}{repeat}{{{','.join(names)}}}'{help_}{value}'"


def _zsh_options(parser: argparse.ArgumentParser) -> list[str]:
    return [_zsh_spec(a) for a in parser._actions
            if a.option_strings and a.help != argparse.SUPPRESS]


def zsh_completion(parser: argparse.ArgumentParser) -> str:
    """A zsh completion function (``#compdef``) for ``parser.prog``, for ``fpath``."""
    prog = parser.prog
    func = "_" + re.sub(r"\W", "_", prog)
    commands = subcommands(parser)
    helps = _command_helps(parser)
    cont = " \\\n"
    lines = [
        f"#compdef {prog}",
        f"# zsh completion for {prog}: generated from its argparse parser by",
        "# scripts/gendocs.py; do not edit (a test regenerates and compares).",
        f"{func}() {{",
        "    local curcontext=$curcontext state line ret=1",
        "    typeset -A opt_args",
        "    _arguments -C" + cont + cont.join(
            "        " + spec for spec in [*_zsh_options(parser), "'1:command:->command'",
                                            "'*::argument:->argument'"]) + " && ret=0",
        "    case $state in",
        "        command)",
        "            local -a commands=(",
        *(f"                '{name}:{_zsh_quote(' '.join(helps.get(name, '').split()))}'"
          for name in commands),
        "            )",
        f"            _describe -t commands '{prog} command' commands && ret=0 ;;",
        "        argument)",
        "            case $words[1] in",
    ]
    for name, sub in commands.items():
        specs = [*_zsh_options(sub), "'*:file:_files'"]
        lines.append(f"                {name})")
        lines.append("                    _arguments" + cont + cont.join(
            "                        " + spec for spec in specs) + " && ret=0 ;;")
    lines += [
        "            esac ;;",
        "    esac",
        "    return ret",
        "}",
        f'{func} "$@"',
    ]
    return "\n".join(lines) + "\n"
