"""The ``aioumm`` command: ``run``, ``doctor``, ``demo`` and ``bench``.

Every failure the library can describe (an ``AioummError``) ends the
command with one line on stderr and a non-zero status, never a traceback.
``run`` follows the shell's conventions for a program that cannot be
started: 127 when it does not exist, 126 when it exists but cannot be run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from aioumm.errors import AioummError

__all__ = ["build_parser", "launch_status", "main"]

#: Shell exit statuses for a command that could not be started.
NOT_FOUND = 127
CANNOT_EXECUTE = 126
#: Status for a usage error or a missing optional part.
USAGE = 2


def launch_status(exc: AioummError) -> int:
    """The shell's status for a program the guest runner could not start.

    127 when nothing by that name exists (no such file, or not found in
    ``$PATH``), 126 when it exists but cannot run (not executable, a
    directory, not an x86-64 ELF program, an unusable loader).
    """
    if isinstance(exc.__cause__, FileNotFoundError) or str(exc).endswith(": command not found"):
        return NOT_FOUND
    return CANNOT_EXECUTE


def _terminal_width() -> int:
    """The terminal's width as ``shutil.get_terminal_size()`` gives it: ``$COLUMNS``, the tty's, or 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own help layout, sized without importing shutil.

    argparse makes a formatter for every argument added, and its default one asks
    shutil for the width: that import (with the compression modules it pulls in)
    would cost every ``aioumm run`` more than parsing its arguments does.
    """

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, _terminal_width() - 2 if width is None else width)


# ----------------------------------------------------------------------- commands


def _cmd_run(args: argparse.Namespace) -> int:
    if not args.program:
        print("aioumm run: no program given (usage: aioumm run [options] -- PROGRAM [ARGS...])", file=sys.stderr)
        return USAGE
    # Imported here: `doctor` and `demo --build-only` must work where the guest layer cannot load.
    from aioumm.guest.errors import GuestError
    from aioumm.guest.runner import run_program
    from aioumm.loop import Controller, run

    if not os.path.isdir(args.root):
        print(f"aioumm run: --root {args.root}: not a directory", file=sys.stderr)
        return USAGE
    with contextlib.ExitStack() as stack:
        trace: TextIO | None = None
        if args.strace_file is not None:
            try:
                trace = stack.enter_context(open(args.strace_file, "w", encoding="utf-8", errors="backslashreplace"))
            except OSError as exc:
                print(f"aioumm run: --strace-file {args.strace_file}: {exc.strerror}", file=sys.stderr)
                return USAGE
        elif args.strace:
            trace = sys.stderr

        # What is alive now (the modules, their classes and functions) lives until the process
        # exits. Moved out of the collector's generations, it is no longer walked by every full
        # collection during the run, nor taken apart cycle by cycle at exit, which took longer
        # than all of `busybox true`. What the run itself allocates is collected as before.
        gc.freeze()

        async def go() -> int:
            async with Controller(placement=args.placement) as ctl:
                # The program is looked up (in $PATH, inside the root) and checked by the runner.
                return await run_program(
                    ctl,
                    args.program[0],
                    args.program,
                    dict(os.environ),
                    root=args.root,
                    strace=trace,
                    forward_signals=True,
                    wait_for_all=not args.kill_leftovers,
                )

        # The guest writes to the same descriptors: what Python buffered must go first.
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            return run(go())
        except GuestError as exc:
            print(f"aioumm run: {exc}", file=sys.stderr)
            return launch_status(exc)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from aioumm import doctor

    return doctor.main()


def _cmd_demo(args: argparse.Namespace) -> int:
    from aioumm import demo

    return demo.main(examples=args.examples, build_dir=args.build_dir, build_only=args.build_only)


def _cmd_bench(args: argparse.Namespace) -> int:
    return _bench(args.args)


def _bench(args: list[str]) -> int:
    try:
        bench = importlib.import_module("aioumm.bench")
    except ModuleNotFoundError as exc:
        if exc.name != "aioumm.bench":
            raise  # something the benchmarks import is missing: that is a real error
        print("aioumm bench: the benchmarks are not part of this installation (no aioumm.bench)", file=sys.stderr)
        return USAGE
    return int(bench.main(args))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aioumm`` command."""
    parser = argparse.ArgumentParser(
        prog="aioumm",
        formatter_class=_HelpFormatter,
        description="Drive seccomp-trapped stub processes from one asyncio loop, and run Linux programs in them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        formatter_class=_HelpFormatter,
        help="run an x86-64 Linux program (static or dynamic) in a stub, serving its syscalls from Python",
        description="Run PROGRAM in a stub; exit with its status (128+N if signal N killed it).",
    )
    run.add_argument("--strace", action="store_true", help="print every trapped syscall on stderr, as strace does")
    run.add_argument("--strace-file", metavar="FILE", help="write the --strace lines to FILE instead")
    run.add_argument("--root", default="/", metavar="DIR", help="the guest's root directory (default /)")
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--placement",
        dest="placement",
        action="store_const",
        const=True,
        default="auto",
        help="keep guests that make syscalls often on the controller's CPU, the others anywhere (default: "
        "only on a machine where the two sides of a handoff cannot spin, see `aioumm doctor`)",
    )
    where.add_argument(
        "--no-placement",
        dest="placement",
        action="store_const",
        const=False,
        help="leave every CPU choice to the scheduler",
    )
    run.add_argument(
        "--kill-leftovers",
        action="store_true",
        help="when PROGRAM exits, kill the guests it left running (by default they are served until they exit)",
    )
    run.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS...]")
    run.set_defaults(func=_cmd_run)

    doctor = sub.add_parser(
        "doctor", formatter_class=_HelpFormatter, help="check the kernel and CPU features aioumm needs"
    )
    doctor.set_defaults(func=_cmd_doctor)

    demo = sub.add_parser(
        "demo", formatter_class=_HelpFormatter, help="run several programs at once, each in its own stub, on one loop"
    )
    demo.add_argument("--examples", metavar="DIR", help="C sources of the demo programs (default: examples/)")
    demo.add_argument("--build-dir", metavar="DIR", help="where they are compiled (default: build/examples/)")
    demo.add_argument("--build-only", action="store_true", help="only compile the demo programs")
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser(
        "bench", formatter_class=_HelpFormatter, help="run the benchmarks (arguments go to them)", add_help=False
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aioumm`` command with ``argv`` (default ``sys.argv[1:]``); return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after `bench` belongs to the benchmarks, options included
        # (argparse would claim `--help` and the like for itself).
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.program[:1] == ["--"]:
        args.program = args.program[1:]
    try:
        return int(args.func(args))
    except AioummError as exc:
        print(f"aioumm {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
