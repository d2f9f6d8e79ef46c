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
    argv = sys.argv[1:] if argv is None else argv
    try:
        from neurodeploy.cli.commands import COMMANDS
        from neurodeploy.cli.parser import build_parser, chosen_command
        from neurodeploy.cli.render import configure, console, print_error

        args = build_parser(chosen_command(argv)).parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the (large) imports and the parser are built
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # the installed packages' metadata cannot be read (the parser lists the backends)
        print(f"error: {_os_line(err)}", file=sys.stderr)
        return 2
    configure(args)
    if team is not None:
        console.print(team.describe())
    try:
        COMMANDS[args.command](args)
    except NeurodeployError as err:
        print_error(str(err))
        return 2
    except KeyboardInterrupt:
        resumable = args.command in ("run", "optimize")  # their finished batches / simulations are kept
        console.print(f"interrupted; run again with --run-id {args.run_id} to resume" if resumable else "interrupted")
        return 130
    except SystemExit as done:  # no command exits by itself: this is user code (a model class) calling sys.exit
        print_error(f"user code called sys.exit({done.code!r}) (a --model-class or pickled model); stopped")
        return 2
    except OSError as err:  # a file or folder the job writes or reads fails at the system level
        print_error(_os_line(err))
        return 2
    return 0


def _os_line(err: OSError) -> str:
    from neurodeploy.safe_io import os_reason

    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{os_reason(err)}; files written before are unchanged"


if __name__ == "__main__":
    sys.exit(main())
