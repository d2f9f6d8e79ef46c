"""Help that teaches: every subcommand's help is parsed, and every flag must have help text, an option with a
default must show it, an option without one must say what happens when it is left out, choices must be
listed, and every subcommand must end with examples. Also -v/-q, --version and -T/--steps."""

from __future__ import annotations

import argparse

import pytest

from neurodeploy.cli import main
from neurodeploy.cli.parser import HELP, build_parser

COMMANDS = sorted(HELP)


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._VersionAction)]


def _expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action) if action.help else ""


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help_text_and_shows_its_default(command):
    parser = _subparser(command)
    text = parser.format_help()
    problems = []
    for action in _flags(parser):
        name = "/".join(action.option_strings) or action.dest
        help_text = _expanded_help(parser, action)
        if not help_text.strip() or action.help == argparse.SUPPRESS:
            problems.append(f"{name}: no help text")
            continue
        takes_value = action.nargs != 0 and action.option_strings
        default = action.default
        if takes_value and default not in (None, argparse.SUPPRESS) and not action.required:
            if "default" not in help_text or str(default) not in help_text:
                problems.append(f"{name}: default {default!r} not shown in {help_text!r}")
        elif takes_value and default is None and not action.required and "default" not in help_text:
            problems.append(f"{name}: does not say what happens without it (no 'default' in {help_text!r})")
        for value in action.choices or ():
            if str(value) not in text:
                problems.append(f"{name}: choice {value!r} not listed")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_examples_that_keep_their_lines(command):
    parser = _subparser(command)
    assert isinstance(parser._get_formatter(), argparse.RawDescriptionHelpFormatter)
    text = parser.format_help()
    assert "examples:" in text
    examples = text[text.index("examples:"):].splitlines()
    assert any(line.strip().startswith(f"neurodeploy {command}") for line in examples), examples


def test_groups_of_run():
    titles = {group.title for group in _subparser("run")._action_groups}
    for title in ("backend", "model", "data", "conversion", "simulation", "Dynamic Confidence (early exit)",
                  "anytime optimizations (Dutson et al.)", "output", "output detail"):
        assert title in titles, titles
    assert any(title.endswith("backend options") for title in titles), titles


def test_top_level_help_version_and_output_detail(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "first steps:" in text and "--verbose" in text and "--quiet" in text
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("neurodeploy ")


def test_verbose_and_quiet_at_either_level():
    parse = lambda argv: build_parser(argv[-1] if argv[-1] in HELP else None).parse_args(argv)  # noqa: E731
    assert parse(["-q", "backends"]).quiet is True
    assert parse(["backends", "-q"]).quiet is True
    assert parse(["-v", "backends"]).verbose == 1
    args = build_parser("run").parse_args(["run", "-vv", "-T", "7"])
    assert args.verbose == 2 and args.T == 7 and args.quiet is False
    assert build_parser("run").parse_args(["run", "--steps", "9"]).T == 9
    with pytest.raises(SystemExit):
        build_parser("run").parse_args(["run", "-q", "-v"])  # one or the other


@pytest.mark.parametrize("command", ["run", "compare", "convert"])
def test_negative_spikes_and_headroom_flags_reach_the_conversion_settings(command):
    from neurodeploy.cli import settings

    required = ["--out", "net.zip"] if command == "convert" else []
    args = build_parser(command).parse_args([command, *required, "--negative-spikes", "--headroom", "1.5"])
    conversion = settings.conversion(args)["conversion"]
    assert conversion.negative_spikes is True and conversion.headroom == 1.5
    default = settings.conversion(build_parser(command).parse_args([command, *required]))["conversion"]
    assert default.negative_spikes is False and default.headroom == 1.0
