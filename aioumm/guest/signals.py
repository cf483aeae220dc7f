"""Guest signal state: dispositions, the blocked mask, pending signals.

For now dispositions are recorded and reported back faithfully, and a signal the
guest sends itself takes its *default* action when it is not blocked (or as soon
as it is unblocked): terminate, ignore, or (for stop signals, without job
control) nothing.  Running guest handlers is not done yet: a signal whose
disposition is a handler stays pending.
"""

from __future__ import annotations

import signal
import struct
from dataclasses import dataclass, field

from .errors import GuestExit

__all__ = ["NSIG", "SigAction", "SignalState", "default_is_fatal", "sigbit"]

NSIG = 64
SIG_DFL = 0
SIG_IGN = 1
SS_ONSTACK = 1
SS_DISABLE = 2
SS_AUTODISARM = 1 << 31
MINSIGSTKSZ = 2048

#: struct kernel_sigaction on x86-64: handler, flags, restorer, mask.
SIGACTION = struct.Struct("<QQQQ")
#: stack_t: ss_sp, ss_flags (int, padded), ss_size.
STACK_T = struct.Struct("<Qi4xQ")

_IGNORED_BY_DEFAULT = frozenset({signal.SIGCHLD, signal.SIGURG, signal.SIGWINCH, signal.SIGCONT})
_STOP = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
UNBLOCKABLE = (1 << (signal.SIGKILL - 1)) | (1 << (signal.SIGSTOP - 1))


def sigbit(sig: int) -> int:
    """The bit of ``sig`` in a signal mask."""
    return 1 << (sig - 1)


def default_is_fatal(sig: int) -> bool:
    """Whether the default action of ``sig`` ends the process."""
    return sig not in _IGNORED_BY_DEFAULT and sig not in _STOP


@dataclass
class SigAction:
    """One recorded disposition (``struct kernel_sigaction``)."""

    handler: int = SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0

    def pack(self) -> bytes:
        return SIGACTION.pack(self.handler, self.flags, self.restorer, self.mask)

    @classmethod
    def unpack(cls, raw: bytes) -> SigAction:
        return cls(*SIGACTION.unpack(raw))


@dataclass
class SignalState:
    """Dispositions, mask, pending set and alternate stack of one guest."""

    actions: dict[int, SigAction] = field(default_factory=dict)
    blocked: int = 0
    pending: int = 0
    altstack: tuple[int, int, int] = (0, SS_DISABLE, 0)

    def action(self, sig: int) -> SigAction:
        return self.actions.get(sig, SigAction())

    def send(self, sig: int) -> None:
        """A signal arrives: act on it now, keep it pending, or drop it.

        Raises :class:`GuestExit` when it terminates the guest.
        """
        if sig == signal.SIGKILL:
            raise GuestExit.killed(sig)
        act = self.action(sig)
        if act.handler == SIG_IGN or (act.handler == SIG_DFL and not default_is_fatal(sig)):
            return
        self.pending |= sigbit(sig)
        self.deliver()

    def deliver(self) -> None:
        """Act on every pending signal that is not blocked (lowest number first)."""
        ready = self.pending & ~self.blocked
        sig = 1
        while ready:
            if ready & 1:
                act = self.action(sig)
                if act.handler == SIG_DFL:
                    self.pending &= ~sigbit(sig)
                    if default_is_fatal(sig):
                        raise GuestExit.killed(sig)
                elif act.handler == SIG_IGN:
                    self.pending &= ~sigbit(sig)
                # A guest handler: stays pending until handlers can be run.
            ready >>= 1
            sig += 1

    def has_deliverable(self) -> bool:
        return bool(self.pending & ~self.blocked)
