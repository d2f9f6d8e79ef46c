"""The ``neurodeploy`` command line: ``parser`` (flags), ``commands`` (thin subcommands calling
``neurodeploy.jobs``), ``render`` (everything shown). Errors a user can cause print one line and exit
with status 2.

Started by a launcher (``mpirun``, ``srun``, ``torchrun``; ``neurodeploy.parallel``), rank 0 runs the command
and tells the user how many ranks the job uses; the other ranks compute their share of what the backend
hands out, and leave when rank 0 is done."""

from __future__ import annotations

import sys

from neurodeploy.errors import NeurodeployError


def main(argv: list[str] | None = None) -> int:
    from neurodeploy import parallel

    launch = parallel.detect_launch()
    if launch is None:
        return _main(argv)
    try:
        team = parallel.join(launch)
    except NeurodeployError as err:
        if launch.rank == 0:
            from neurodeploy.cli.render import print_error

            print_error(str(err))
        return 2
    if team.rank != 0:
        return parallel.serve(team)
    try:
        return _main(argv, team)
    finally:
        parallel.release(team)


def _main(argv: list[str] | None, team=None) -> int:
    from neurodeploy.cli.commands import COMMANDS
    from neurodeploy.cli.parser import build_parser, chosen_command
    from neurodeploy.cli.render import configure, console, print_error

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(chosen_command(argv)).parse_args(argv)
    configure(args)
    if team is not None:
        console.print(team.describe())
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
