"""The ``neurodeploy`` command line: ``parser`` (flags), ``commands`` (thin subcommands calling
``neurodeploy.jobs``), ``render`` (everything shown). Errors a user can cause print one line and exit
with status 2."""

from __future__ import annotations

import sys

from neurodeploy.errors import NeurodeployError


def main(argv: list[str] | None = None) -> int:
    from neurodeploy.cli.commands import COMMANDS
    from neurodeploy.cli.parser import build_parser, chosen_command
    from neurodeploy.cli.render import configure, console, print_error

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(chosen_command(argv)).parse_args(argv)
    configure(args)
    try:
        COMMANDS[args.command](args)
    except NeurodeployError as err:
        print_error(str(err))
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; run again with the same --run-id to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
