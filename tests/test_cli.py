"""The ``aioumm`` command, run as a user runs it: ``python -m aioumm ...`` in a subprocess."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from aioumm import cli, demo, doctor
from aioumm.errors import AioummError
from aioumm.loop import Stats

ROOT = Path(__file__).resolve().parent.parent


def aioumm(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aioumm", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def examples() -> dict[str, Path]:
    """The demo programs, compiled (or found up to date) in build/examples/."""
    src = ROOT / "examples"
    return demo.build_examples(src, demo.default_build_dir(src))


# ------------------------------------------------------------------ run: bad programs


def test_run_missing_file_is_127(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-program"
    res = aioumm("run", "--", str(missing))
    assert res.returncode == 127
    assert res.stderr == f"aioumm run: {missing}: no such file or directory\n"
    assert res.stdout == ""


def test_run_unknown_command_is_127(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "aioumm", "run", "aioumm-no-such-command"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert res.returncode == 127
    assert res.stderr == "aioumm run: aioumm-no-such-command: command not found\n"


def test_run_non_elf_is_126(tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_text("echo hi\n")
    text.chmod(0o755)
    res = aioumm("run", "--", str(text))
    assert res.returncode == 126
    assert res.stderr == f"aioumm run: {text}: not an ELF file (bad magic)\n"


def test_run_script_with_a_dynamic_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi $0\n")  # Debian's /bin/sh (dash) is dynamically linked
    script.chmod(0o755)
    want = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    res = aioumm("run", "--", str(script))
    assert (res.returncode, res.stdout, res.stderr) == (want.returncode, want.stdout, want.stderr)
    assert res.stdout == f"hi {script}\n"


def test_readme_example_of_a_program_that_cannot_start(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("echo hi\n")
    notes.chmod(0o755)
    res = aioumm("run", "--", "./notes.txt", cwd=tmp_path)
    assert (res.returncode, res.stderr) == (126, "aioumm run: ./notes.txt: not an ELF file (bad magic)\n")


def test_run_not_executable_is_126(tmp_path: Path, examples: dict[str, Path]) -> None:
    copy = tmp_path / "primes"
    copy.write_bytes(examples["primes"].read_bytes())
    copy.chmod(0o644)
    res = aioumm("run", str(copy))
    assert res.returncode == 126
    assert res.stderr == f"aioumm run: {copy}: permission denied (not executable)\n"


def test_run_dynamic_elf(tmp_path: Path) -> None:
    src = tmp_path / "dyn.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("dynamic"); return 3; }\n')
    exe = tmp_path / "dyn"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True, timeout=120)
    want = subprocess.run([str(exe)], capture_output=True, text=True, check=False)
    res = aioumm("run", "--", str(exe))
    assert (
        (res.returncode, res.stdout, res.stderr) == (want.returncode, want.stdout, want.stderr) == (3, "dynamic\n", "")
    )


def test_run_dynamic_elf_with_a_missing_loader_is_127(tmp_path: Path) -> None:
    src = tmp_path / "dyn.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "dyn"
    subprocess.run(
        ["gcc", "-Wl,--dynamic-linker=/nonexistent/ld.so", "-o", str(exe), str(src)], check=True, timeout=120
    )
    want = subprocess.run(["/bin/sh", "-c", f"{exe}"], capture_output=True, text=True, check=False)
    res = aioumm("run", "--", str(exe))
    assert res.returncode == want.returncode == 127  # dash: "not found"
    assert res.stderr == f"aioumm run: {exe}: interpreter /nonexistent/ld.so: no such file or directory\n"


def test_run_directory_is_126(tmp_path: Path) -> None:
    res = aioumm("run", "--", str(tmp_path))
    assert res.returncode == 126
    assert res.stderr == f"aioumm run: {tmp_path}: is a directory\n"


def test_run_without_program_is_a_usage_error() -> None:
    res = aioumm("run")
    assert res.returncode == 2
    assert len(res.stderr.splitlines()) == 1


def test_run_placement_is_auto_unless_told() -> None:
    """``aioumm run`` places its stubs only where nobody spins, unless --placement or --no-placement says."""
    parse = cli.build_parser().parse_args
    assert parse(["run", "--", "true"]).placement == "auto"
    assert parse(["run", "--placement", "--", "true"]).placement is True
    assert parse(["run", "--no-placement", "--", "true"]).placement is False
    res = aioumm("run", "--placement", "--no-placement", "--", "true")
    assert res.returncode == 2 and "not allowed with argument" in res.stderr


# ------------------------------------------------------------------ run: real programs


@pytest.mark.parametrize("where", ["--placement", "--no-placement"])
def test_run_with_either_placement(examples: dict[str, Path], where: str) -> None:
    res = aioumm("run", where, "--", str(examples["exit_status"]), "3")
    assert (res.returncode, res.stdout, res.stderr) == (3, "exiting with status 3\n", "this line goes to stderr\n")


def test_run_passes_status_output_and_arguments(examples: dict[str, Path]) -> None:
    res = aioumm("run", "--", str(examples["exit_status"]), "5")
    assert (res.returncode, res.stdout, res.stderr) == (5, "exiting with status 5\n", "this line goes to stderr\n")


def test_run_guest_sees_callers_environment(examples: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_FROM_CALLER": "yes it is"}
    argv = [str(examples["args_env"]), "a b", ""]
    native = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    res = subprocess.run(
        [sys.executable, "-m", "aioumm", "run", "--", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert res.returncode == native.returncode == 0
    assert res.stdout == native.stdout
    assert "env DEMO_FROM_CALLER=yes it is\n" in res.stdout


def test_run_strace_file(examples: dict[str, Path], tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    res = aioumm("run", "--strace-file", str(trace), "--", str(examples["exit_status"]), "0")
    assert res.returncode == 0
    assert res.stdout == "exiting with status 0\n"
    lines = trace.read_text().splitlines()
    assert any(line.startswith("write(1, ") for line in lines)
    assert any(line.startswith("exit_group(0)") for line in lines)
    assert lines[-1] == "+++ exited with 0 +++"


def test_run_imports_only_what_the_program_uses() -> None:
    # Every module imported at start-up is paid for by every run: the other commands, SysV IPC
    # and sockets (imported at a guest's first call of theirs), pathlib and shutil are not.
    script = "import sys\nfrom aioumm import cli\nstatus = cli.main(['run', '--', '/bin/busybox', 'true'])\n"
    script += "print(' '.join(sorted(sys.modules)))\nraise SystemExit(status)\n"
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert (res.returncode, res.stderr) == (0, "")
    loaded = set(res.stdout.split())
    assert "aioumm.guest.syscalls" in loaded
    unused = {"aioumm.bench", "aioumm.demo", "aioumm.doctor", "pathlib", "shutil"}
    unused |= {f"aioumm.guest.{m}" for m in ("ipc", "syscalls_ipc", "sockets", "syscalls_net")}
    assert loaded & unused == set()


# ------------------------------------------------------------------ other commands


def test_doctor_exits_0_and_prints_every_check() -> None:
    res = aioumm("doctor")
    assert res.returncode == 0, res.stdout + res.stderr
    for probe in doctor.PROBES:
        assert f"present  {probe.name}" in res.stdout
    assert res.stderr == ""


def test_demo_runs_every_program_as_natively(examples: dict[str, Path]) -> None:
    res = aioumm("demo")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    programs = [line for line in out.splitlines() if line.startswith("[")]
    names = {re.split(r"[] ]", line[1:])[0] for line in programs}
    assert set(examples) <= names
    assert all(", same as native (" in line for line in programs), programs
    # The host's ls and md5sum are dynamically linked here: their loader maps libc.
    assert sum("(dynamically linked)] exit 0" in line for line in programs) == 2, programs
    assert f"{len(programs)} same as native, 0 DIFFERENT" in out
    counts = re.search(
        r"^stubs spawned: (\d+), round trips: (\d+), flushes: (\d+), descriptors passed: (\d+)$", out, re.M
    )
    assert counts is not None, out
    spawned, round_trips, flushes, passed = map(int, counts.groups())
    assert spawned >= len(programs)  # one stub per program at least
    assert round_trips > 10 * len(programs)  # every program makes syscalls
    assert flushes >= spawned
    assert passed >= len(programs)  # each program's own file is passed for its text segment
    assert re.search(r"^wall time: [0-9.]+ s under aioumm", out, re.M)


def test_demo_marks_a_difference() -> None:
    native = demo.Outcome(0, b"a\nb\n", b"", 0.01)
    progs = [demo.DemoProgram("same", "/x", ("x",)), demo.DemoProgram("other", "/y", ("y",))]
    guests = [native, demo.Outcome(1, b"a\nc\n", b"", 0.02)]
    out = io.StringIO()
    assert demo.report(progs, guests, [native, native], Stats(spawned=2), "asyncio", 0.5, out) == 1
    text = out.getvalue()
    assert "[same] exit 0, same as native" in text
    assert "[other] exit 1, DIFFERENT" in text
    assert "! exit status 1, natively 0" in text
    assert "! stdout differs from the native run at line 2: b'c' vs b'b'" in text
    assert "1 same as native, 1 DIFFERENT" in text


def test_readme_example_prints_what_the_readme_says(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", readme, re.S | re.M)
    index = next(i for i, (lang, _) in enumerate(blocks) if lang == "python")
    code, (_, expected) = blocks[index][1], blocks[index + 1]
    script = tmp_path / "example.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout == expected


def test_bench_missing_module_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "aioumm.bench", None)  # makes the import fail
    assert cli.main(["bench"]) == 2
    assert capsys.readouterr().err == (
        "aioumm bench: the benchmarks are not part of this installation (no aioumm.bench)\n"
    )


def test_bench_gets_every_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_main(args: list[str]) -> int:
        seen.append(args)
        return 7

    monkeypatch.setitem(sys.modules, "aioumm.bench", types.SimpleNamespace(main=fake_main))
    assert cli.main(["bench", "--help", "-n", "3"]) == 7
    assert seen == [["--help", "-n", "3"]]


def test_library_errors_become_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> int:
        raise AioummError("stub 1: no answer")

    monkeypatch.setattr(doctor, "main", broken)
    assert cli.main(["doctor"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "aioumm doctor: stub 1: no answer\n"


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--strace-file", "/nonexistent/dir/trace"],
            "--strace-file /nonexistent/dir/trace: No such file or directory",
        ),
        (["--root", "/nonexistent"], "--root /nonexistent: not a directory"),
        (["--root", "/etc/hostname"], "--root /etc/hostname: not a directory"),
    ],
)
def test_run_option_errors_are_one_line(options: list[str], message: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "aioumm", "run", *options, "--", "/bin/true"], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert res.stderr == f"aioumm run: {message}\n"
