"""python-ptrace reference: a Python tracer answers a guest's syscalls.

This is what a Python user would pick today: the PyPI package python-ptrace.
The guest is build/guest (guest.c), which makes N calls of syscall 500, each
carrying its index in RDI, checks every answer and records every round trip's
nanoseconds in a memfd this script hands it. The tracer answers call i with
answer_for(i) by writing RAX.

Modes (--mode):
  syscall  python-ptrace's own API: PtraceProcess.syscall() resumes with
           PTRACE_SYSCALL, so each call stops the guest twice, at entry and at
           exit. The call runs natively in between (500 is unassigned, the
           kernel only sets -ENOSYS) and the tracer overwrites RAX at the exit
           stop with getregs()/setregs().
  sysemu   python-ptrace defines no PTRACE_SYSEMU request and no method for
           it, so its generic ptrace() binding is called with the request
           number. One stop per call, like the C reference. Syscalls other
           than 500 (the loader's, the final exit_group) are rewound over the
           2-byte syscall instruction and run natively under PTRACE_SYSCALL.

Prints one JSON object; exits 1 with a message on stderr on any failure.
"""

from __future__ import annotations

import argparse
import array
import errno
import importlib.metadata
import json
import mmap
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

# python-ptrace ships no type information.
from ptrace import PtraceError  # type: ignore[import-untyped]
from ptrace.binding import func as ptrace_binding  # type: ignore[import-untyped]
from ptrace.debugger import (  # type: ignore[import-untyped]
    ProcessExit,
    ProcessSignal,
    PtraceDebugger,
    PtraceProcess,
)
from ptrace.debugger.child import createChild  # type: ignore[import-untyped]

TRAP_NR = 500
# Request number from <sys/ptrace.h> on x86-64; python-ptrace does not name it.
PTRACE_SYSEMU = 31
PTRACE_O_TRACESYSGOOD = 0x1
# Kill the guest if this tracer dies, instead of leaving it running untraced.
PTRACE_O_EXITKILL = 1 << 20
SYSCALL_INSN_LEN = 2
EXIT_WRONG_ANSWER = 3
EXIT_CHILD_SETUP = 4

MECHANISMS = {
    "syscall": "PTRACE_SYSCALL entry and exit stops (python-ptrace API); RAX written at the exit stop",
    "sysemu": "PTRACE_SYSEMU via python-ptrace's generic ptrace() binding; RAX written at the entry stop",
}


class RefError(Exception):
    pass


def answer_for(i: int) -> int:
    """Same answer as answer_for() in common.h (64-bit wrap, top bit cleared)."""
    return (i * 2654435761 + 7) & ((1 << 63) - 1)


def percentile(sorted_samples: list[int], pct: int) -> int:
    """Nearest-rank percentile, as in common.h."""
    rank = (len(sorted_samples) * pct + 99) // 100
    return sorted_samples[max(rank - 1, 0)]


def check_exit(event: ProcessExit) -> None:
    if event.signum is not None:
        raise RefError(f"guest was killed by signal {event.signum}")
    if event.exitcode != 0:
        reason = {
            EXIT_WRONG_ANSWER: "it received a wrong answer",
            EXIT_CHILD_SETUP: "its setup failed",
        }
        raise RefError(f"guest exited with {event.exitcode} ({reason.get(event.exitcode, 'unexpected')})")


class Tracer:
    def __init__(self, debugger: PtraceDebugger, process: PtraceProcess) -> None:
        self.debugger = debugger
        self.process = process
        self.answered = 0
        self.stops = 0
        self.replayed = 0

    def wait_syscall_stop(self) -> bool:
        """Wait for the next syscall stop; False once the guest has exited cleanly."""
        try:
            self.debugger.waitSyscall(self.process)
        except ProcessExit as event:
            check_exit(event)
            return False
        except ProcessSignal as event:
            raise RefError(f"guest stopped by signal {event.signum} outside a syscall") from None
        self.stops += 1
        return True

    def answer(self, regs: Any) -> None:
        if regs.rdi != self.answered:
            raise RefError(f"guest call {self.answered} carried index {regs.rdi}")
        regs.rax = answer_for(self.answered)
        self.process.setregs(regs)
        self.answered += 1

    def run_syscall_mode(self) -> None:
        at_entry = True
        while True:
            self.process.syscall()
            if not self.wait_syscall_stop():
                return
            # Entry and exit stops alternate; only the exit stop is acted on.
            at_entry = not at_entry
            if not at_entry:
                continue
            regs = self.process.getregs()
            if regs.orig_rax == TRAP_NR:
                self.answer(regs)

    def run_sysemu_mode(self) -> None:
        pid = self.process.pid
        emulate = True
        # Stops still expected for a syscall being run natively: 2 = its
        # entry, 1 = its exit, 0 = none (the next stop is a SYSEMU stop).
        replay_stops = 0
        while True:
            if emulate:
                ptrace_binding.ptrace(PTRACE_SYSEMU, pid, 0, 0)
            else:
                self.process.syscall()
            if not self.wait_syscall_stop():
                return
            if replay_stops:
                replay_stops -= 1
                emulate = replay_stops == 0
                continue
            regs = self.process.getregs()
            if regs.orig_rax == TRAP_NR:
                self.answer(regs)
                continue
            regs.rip -= SYSCALL_INSN_LEN
            regs.rax = regs.orig_rax
            self.process.setregs(regs)
            self.replayed += 1
            emulate = False
            replay_stops = 2


def run(args: argparse.Namespace) -> dict[str, object]:
    guest = Path(args.guest)
    if not os.access(guest, os.X_OK):
        raise RefError(f"guest program {guest} not found: run make in {Path(__file__).parent}")
    others = os.sched_getaffinity(0) - {0}
    if args.pin == "apart" and not others:
        raise RefError("--pin apart needs a CPU besides CPU 0")
    if args.pin in ("same", "apart"):
        # The guest inherits the mask: tracer and guest share CPU 0 (apart moves the guest below).
        os.sched_setaffinity(0, {0})

    n = args.n
    samples_fd = os.memfd_create("samples")
    os.ftruncate(samples_fd, n * 8)
    debugger = PtraceDebugger()
    argv = [str(guest), "-n", str(n), "--samples-fd", str(samples_fd), "--parent", str(os.getpid())]
    pid = createChild(argv, no_stdout=False, pass_fds=(samples_fd,))
    try:
        if args.pin == "apart":  # stopped at its exec: it starts on the other CPUs
            os.sched_setaffinity(pid, others)
        process = debugger.addProcess(pid, is_attached=True)
        process.setoptions(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)
        tracer = Tracer(debugger, process)
        start = time.monotonic_ns()
        if args.mode == "syscall":
            tracer.run_syscall_mode()
        else:
            tracer.run_sysemu_mode()
        wall_s = (time.monotonic_ns() - start) / 1e9
    finally:
        # On any failure: the guest must not outlive us, nor stay a zombie.
        if pid in debugger.dict:
            debugger.quit()
    if tracer.answered != n:
        raise RefError(f"guest exited after {tracer.answered} of {n} calls")

    with mmap.mmap(samples_fd, n * 8, mmap.MAP_SHARED, mmap.PROT_READ) as mem:
        values = array.array("Q")
        values.frombytes(mem[: n * 8])
    os.close(samples_fd)
    samples = sorted(values)

    return {
        "name": f"python_ptrace_{args.mode}",
        "placement": {"same": "same_core", "none": "unpinned"}.get(args.pin, args.pin),
        "n": n,
        "median_ns": percentile(samples, 50),
        "p99_ns": percentile(samples, 99),
        "mean_ns": round(sum(samples) / n),
        "extra": {
            "min_ns": samples[0],
            "max_ns": samples[-1],
            "wall_s": round(wall_s, 3),
            "kernel": platform.release(),
            "mechanism": MECHANISMS[args.mode],
            "stops": tracer.stops,
            "replayed_syscalls": tracer.replayed,
            "python_ptrace": importlib.metadata.version("python-ptrace"),
            "cptrace": ptrace_binding.HAS_CPTRACE,
            "python": platform.python_version(),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="python-ptrace reference: a Python tracer answers syscalls")
    parser.add_argument("-n", type=int, default=20000, help="number of trapped calls")
    parser.add_argument("--pin", choices=("same", "none", "apart"), default="none")
    parser.add_argument("--mode", choices=tuple(MECHANISMS), default="syscall")
    parser.add_argument("--guest", default=str(Path(__file__).resolve().parent / "build" / "guest"))
    args = parser.parse_args()
    if args.n <= 0:
        parser.error("-n must be positive")
    try:
        result = run(args)
    except PtraceError as exc:
        if exc.errno == errno.ESRCH:
            print(
                "python_ptrace_ref: the guest vanished during a ptrace request (killed from outside?)",
                file=sys.stderr,
            )
        else:
            print(f"python_ptrace_ref: {exc}", file=sys.stderr)
        return 1
    except (RefError, OSError) as exc:
        print(f"python_ptrace_ref: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
