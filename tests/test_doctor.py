"""``aioumm doctor``: every probe runs for real here, and a broken feature is reported as missing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aioumm import doctor
from aioumm.loop import Features

# The machines this project runs on (and CI) have every feature, optional ones included.


def test_every_check_present_on_this_machine() -> None:
    checks = doctor.run_checks()
    assert [c.name for c in checks] == [p.name for p in doctor.PROBES]
    missing = [(c.name, c.detail) for c in checks if not c.present]
    assert missing == []


def test_main_prints_each_check_and_exits_0() -> None:
    out = io.StringIO()
    assert doctor.main(out) == 0
    text = out.getvalue()
    for probe in doctor.PROBES:
        assert f"present  {probe.name}" in text
    assert "MISSING" not in text
    assert text.rstrip().splitlines()[-1].startswith(f"all {sum(p.required for p in doctor.PROBES)} required")


def test_stub_probe_times_real_round_trips() -> None:
    detail = doctor.probe_stub_runs()
    assert f"{doctor._ROUND_TRIPS} trapped syscalls" in detail
    assert "round trip median" in detail


def test_trap_probe_tells_a_kill_from_a_trap(monkeypatch: pytest.MonkeyPatch) -> None:
    # SECCOMP_RET_KILL_PROCESS also ends in SIGSYS, but it cannot be caught:
    # the probe must notice the child died instead of handling the signal.
    monkeypatch.setattr(doctor, "_SECCOMP_RET_TRAP", 0x80000000)
    with pytest.raises(doctor.Missing, match="killed the child"):
        doctor.probe_seccomp_trap()


def test_futex_waitv_probe_reports_enosys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_NR_FUTEX_WAITV", 100000)  # no such syscall
    with pytest.raises(doctor.Missing, match="ENOSYS"):
        doctor.probe_futex_waitv()


def test_close_range_probe_reports_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_NR_CLOSE_RANGE", 100000)
    with pytest.raises(doctor.Missing, match="close_range"):
        doctor.probe_close_range()


def test_small_alt_stack_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "auxv_value", lambda key: 1 << 20)
    with pytest.raises(doctor.Missing, match="needs 1048576 bytes"):
        doctor.probe_minsigstksz()


def test_optional_feature_missing_still_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "features", lambda: Features(fsgsbase=False, mseal=False, rdtscp=False))
    out = io.StringIO()
    assert doctor.main(out) == 0
    text = out.getvalue()
    assert "MISSING  mseal (optional): " in text
    assert "MISSING  FSGSBASE (optional): " in text
    assert "MISSING  RDTSCP (optional): " in text
    assert "(3 optional missing)" in text


def test_unbuilt_stub_fails_with_advice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(doctor.abi, "bootstrap_path", lambda: tmp_path / "aioumm-stub")
    out = io.StringIO()
    assert doctor.main(out) == 1
    lines = out.getvalue().splitlines()
    idx = next(i for i, line in enumerate(lines) if line.startswith("MISSING  stub binary and code image"))
    assert "does not exist" in lines[idx]
    assert "what to do: reinstall the package" in lines[idx + 1]
    assert lines[-1].startswith("1 required feature(s) missing: stub binary and code image")


def test_a_crashing_probe_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> str:
        raise OSError(5, "Input/output error")

    probe = doctor._Probe("eventfd", broken, "fix it")
    monkeypatch.setattr(doctor, "PROBES", (probe,))
    (check,) = doctor.run_checks()
    assert not check.present
    assert check.detail == "OSError: [Errno 5] Input/output error"
    assert check.lines() == ["MISSING  eventfd: OSError: [Errno 5] Input/output error", "         what to do: fix it"]
