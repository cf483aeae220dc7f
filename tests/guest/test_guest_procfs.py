"""The guest's /proc (its own processes, descriptors and memory), compared with native runs.

Pids differ between a native run and a guest run, so each script prints what can
be compared (names, states, links, relations between pids) rather than the pids.
"""

from __future__ import annotations

import re
from pathlib import Path

from test_guest_run import guest, native, same_as_native

ENV = {"PATH": "/usr/bin:/bin"}
#: Waits until the last background job has executed its program (a loaded machine may be slow to).
EXECED = 'until [ "$(cat /proc/$!/comm)" = sleep ]; do sleep 0.05; done;'


def both(cmd: list[str], **kw: object) -> tuple[bytes, bytes]:
    want, got = native(cmd, **kw), guest(cmd, **kw)
    assert (got.returncode, got.stderr) == (want.returncode, want.stderr)
    return want.stdout, got.stdout


def test_fd_listing_and_links_are_the_guests(busybox: str, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x\n")
    script = (
        f"exec 3<{target} 4>>{target}.log; ls /proc/self/fd; readlink /proc/self/fd/3;"
        " ls -l /proc/self/fd | sed 's/.*[0-9]:[0-9][0-9] //; s/pipe:\\[[0-9]*\\]/pipe/';"
        " ls -l /proc/self/fd | cut -c1-10; cat /proc/$$/fdinfo/4 | grep -E '^(pos|flags)';"
        f" rm {target}.log; readlink /proc/$$/fd/4; cat /proc/self/fd/3; readlink /proc/self/fd/9 || echo none"
    )
    with open("/dev/null", "rb") as null:
        same_as_native([busybox, "sh", "-c", script], stdin=null, env=ENV)


def test_comm_is_the_name_the_program_was_started_by(busybox: str, tmp_path: Path) -> None:
    """A symlink's name, not its target's: it was ``busybox`` for a busybox started as ``sh``."""
    (tmp_path / "sh").symlink_to(busybox)
    got = same_as_native([str(tmp_path / "sh"), "-c", "read c < /proc/self/comm; echo $c"])
    assert got.stdout == b"sh\n"


def test_a_directory_of_proc_as_a_base_and_as_the_working_directory(busybox: str) -> None:
    script = (
        "cd /proc/self && cat comm && pwd | grep -c '^/proc/[0-9]*$'; cd fd && ls; cd ../..;"
        " ls -d self/fd/.. | grep -c '/fd/..$'; readlink /proc/self/cwd; cd /tmp;"
        " readlink /proc/$$/cwd; ls -ld /proc/self/cwd/. | cut -c1; ls /proc/self/root/ | grep -c '^proc$'"
    )
    with open("/dev/null", "rb") as null:
        same_as_native([busybox, "sh", "-c", script], stdin=null, env=ENV)


def test_exe_cwd_and_maps(prog_dir: Path, busybox: str) -> None:
    script = (
        "readlink /proc/self/exe; readlink /proc/$$/exe; cd /usr; readlink /proc/$$/cwd;"
        " grep -c 'aioumm' /proc/self/maps; grep -E '\\[(heap|stack|vsyscall)\\]$' /proc/self/maps | sed 's/.* //';"
        " grep ' r-xp .* /' /proc/self/maps | sed 's/^[^ ]* //; s/ .* / /'"
    )
    same_as_native([busybox, "sh", "-c", script], env=ENV)


def _status_fields(text: bytes, keys: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for line in text.decode().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = value.strip()
    return out


def test_stat_status_and_statm_describe_the_guest(busybox: str) -> None:
    """Identity, state, relations and signal masks; memory sizes as far as the guest's own."""
    script = (
        "trap '' INT; trap 'echo' USR1; sleep 2 & bg=$!; "
        + EXECED
        + " echo status; cat /proc/$$/status; echo bg; cat /proc/$bg/status; echo stat;"
        " cat /proc/$bg/stat; cat /proc/self/stat; echo ids $$ $bg; cat /proc/$$/statm; kill $bg"
    )
    want, got = both([busybox, "sh", "-c", script], env=ENV)
    keys = ("Name", "State", "Uid", "Gid", "Threads", "SigPnd", "SigBlk", "SigIgn", "SigCgt", "NoNewPrivs", "Seccomp")
    for out in (want, got):
        assert out.count(b"Name:") == 2
    w_sh, w_bg = want.split(b"\nbg\n")[0], want.split(b"\nbg\n")[1].split(b"\nstat\n")[0]
    g_sh, g_bg = got.split(b"\nbg\n")[0], got.split(b"\nbg\n")[1].split(b"\nstat\n")[0]
    assert _status_fields(g_sh, keys) == _status_fields(w_sh, keys)
    assert _status_fields(g_bg, keys) == _status_fields(w_bg, keys)
    for out, sh, bg in ((want, w_sh, w_bg), (got, g_sh, g_bg)):
        ids = re.search(rb"ids (\d+) (\d+)", out)
        assert ids is not None
        shell, job = ids.group(1).decode(), ids.group(2).decode()
        assert _status_fields(bg, ("PPid", "Pid", "Tgid")) == {"PPid": shell, "Pid": job, "Tgid": job}
        assert _status_fields(sh, ("Pid",)) == {"Pid": shell}
        stat_lines = out.split(b"\nstat\n")[1].splitlines()
        bg_stat, self_stat = stat_lines[0].decode().split(), stat_lines[1].decode().split()
        # pid, comm, state, ppid, same group and session as the shell; the reader is running.
        assert bg_stat[:4] == [job, "(sleep)", "S", shell]
        assert self_stat[1:4] == ["(cat)", "R", shell]
        assert bg_stat[4:6] == self_stat[4:6]
        assert len(bg_stat) == len(self_stat) == 52
        # The shell's signal masks in stat (decimal) agree with status (hex).
        statm = out.split(b"\n")[-2].split()
        assert len(statm) == 7 and int(statm[0]) > 0
    # Memory sizes: the guest's own mappings, within reach of the native ones (no stub pages).
    w_vm, g_vm = (int(_status_fields(s, ("VmExe",))["VmExe"].split()[0]) for s in (w_sh, g_sh))
    assert abs(w_vm - g_vm) <= 64


def test_ps_pidof_and_killall_see_the_runs_guests(busybox: str, tmp_path: Path) -> None:
    # A job with a name of its own (a script's process is named after the script), so that
    # natively pidof and killall meet no other process of the machine.
    nap = tmp_path / "procfs-nap"
    # Its state is read while it waits for its sleep: the wait below sees the sleep as its
    # child and the job in S, and the next few hundred milliseconds of ps, pidof and killall
    # all fall inside that same sleep.  (Read at its start-up or between two sleeps, it runs:
    # R, natively too, only for a shorter while.)  Its sleeps hold no output open, so the
    # one killall leaves behind holds up no reader.
    nap.write_text(f"#!{busybox} sh\nwhile :; do sleep 1 >/dev/null 2>&1; done\n")
    nap.chmod(0o755)
    asleep = (
        "i=0; until busybox ps -o ppid,comm | grep -q \"^ *$! *sleep$\" && grep -q '^State:.S' /proc/$!/status"
        " || [ $i -ge 300 ]; do sleep 0.01; i=$((i+1)); done;"
    )
    script = (
        f"{nap} & {asleep} busybox ps -o pid,ppid,comm,stat"
        ' | awk -v sh=$$ -v bg=$! \'$1==sh {print "shell", ($2==sh ? "x" : "parent"), $3, $4}'
        ' $1==bg {print "job", ($2==sh ? "child-of-shell" : $2), $3, $4}\';'
        ' [ "$(busybox pidof procfs-nap)" = "$!" ] && echo pidof finds the job;'
        " busybox killall procfs-nap; wait $! 2>/dev/null; echo killed $?"
    )
    want, got = both([busybox, "sh", "-c", script], env=ENV)
    assert got == want
    assert got.splitlines() == [
        b"shell parent busybox S",
        b"job child-of-shell procfs-nap S",
        b"pidof finds the job",
        b"killed 143",
    ]


def test_proc_lists_guests_not_host_processes(busybox: str, tmp_path: Path) -> None:
    listing = tmp_path / "proc-listing"
    script = (
        f"sleep 1 & ls /proc > {listing}; grep -c '^[0-9]*$' {listing}; ls /proc | grep -c '^self$';"
        " cat /proc/1/comm 2>&1 | cut -c1-4"
    )
    got = guest([busybox, "sh", "-c", script], env=ENV)
    want = native([busybox, "sh", "-c", "ls /proc | grep -c '^self$'"], env=ENV)
    # While ls lists: the shell, the job (forked before ls) and ls; no host process, so pid 1
    # is none of ours.  (ls piped into grep would race grep's fork.)
    assert got.stdout.splitlines()[1] == want.stdout.strip()
    assert int(got.stdout.splitlines()[0]) == 3
    assert got.stdout.splitlines()[2] == b"cat:"


def test_a_stopped_guest_is_in_state_t(busybox: str) -> None:
    # The job is stopped before its state is read; the wait for the state to change keeps
    # this from racing the job's start.
    script = (
        "sleep 5 & pid=$!; kill -STOP $pid;"
        " i=0; until grep -q '^State:.T' /proc/$pid/status || [ $i -ge 300 ]; do sleep 0.01; i=$((i+1)); done;"
        " grep '^State' /proc/$pid/status; cut -d' ' -f3 /proc/$pid/stat;"
        " kill -CONT $pid; kill $pid; wait $pid; echo $?"
    )
    want = native([busybox, "sh", "-c", script], env=ENV)
    got = guest([busybox, "sh", "-c", script], env=ENV)
    assert want.stdout == b"State:\tT (stopped)\nT\n143\n"
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout)
