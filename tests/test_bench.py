"""``aioumm bench --quick --json``: one real run, its JSON checked against the documented schema.

Only the shape and sanity of the figures are checked (every section, every
reference, every number positive, every missing figure with a reason),
never a speed: speeds depend on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aioumm.bench import Results, Settings, targets, targets_text

SECTIONS = {"roundtrip_ns", "throughput_rt_per_s", "flush_ns", "stub_memory_kib", "programs_s"}
REFERENCES = {"aioumm", "c_stub", "c_ptrace", "c_unotify", "python_ptrace", "native", "strace"}
PLACEMENTS = {"same_core", "unpinned"}
# The controller alone on CPU 0, the rest elsewhere: measured wherever there is a second CPU.
SPREAD = PLACEMENTS | ({"apart"} if len(os.sched_getaffinity(0)) > 1 else set())
REFS = Path(__file__).resolve().parent.parent / "benchmarks" / "refs"


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("bench")
    out, png = where / "figures.json", where / "figures.png"
    res = subprocess.run(
        [sys.executable, "-m", "aioumm", "bench", "--quick", "--json", str(out), "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "== targets" in res.stdout  # the table was printed
    # The plot is a real PNG of three panels side by side (wider than tall).
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert width > 2 * height > 0
    data: dict[str, Any] = json.loads(Path(out).read_text())
    return data


def _leaves(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every figure; an ``{"unavailable": reason}`` object is one leaf."""
    if isinstance(node, dict) and set(node) != {"unavailable"}:
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{path}/{key}")]
    return [(path, node)]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_top_level_keys_are_exactly_the_sections(figures: dict[str, Any]) -> None:
    assert set(figures) == SECTIONS


def test_every_reference_is_present_in_every_section(figures: dict[str, Any]) -> None:
    for section in SECTIONS:
        assert set(figures[section]) == REFERENCES, section


def test_every_figure_is_a_positive_number_or_a_reason(figures: dict[str, Any]) -> None:
    for section in SECTIONS:
        leaves = _leaves(figures[section], section)
        assert leaves
        for path, value in leaves:
            if isinstance(value, dict):
                reason = value["unavailable"]
                assert isinstance(reason, str) and reason.strip(), path
            else:
                assert _number(value), (path, value)


def test_aioumm_has_its_own_figures(figures: dict[str, Any]) -> None:
    mine = {section: figures[section]["aioumm"] for section in SECTIONS}
    for pin in SPREAD:
        assert _number(mine["roundtrip_ns"][pin]["median"])
        assert mine["roundtrip_ns"][pin]["p99"] >= mine["roundtrip_ns"][pin]["median"]
    for pin in PLACEMENTS:  # a flush is not measured apart
        assert _number(mine["flush_ns"][pin]["median"])
    assert "apart" not in mine["flush_ns"]
    for k in ("1", "16", "256"):
        for pin in SPREAD:
            figure = mine["throughput_rt_per_s"][k][pin]
            assert {"rt_per_s", "p50_ns", "p99_ns"} <= set(figure)
            assert all(_number(v) for v in figure.values())
    # --quick skips 1024 stubs, and says so.
    assert "quick" in mine["throughput_rt_per_s"]["1024"]["unavailable"]
    for key in ("stub_rss", "stub_pte", "controller_per_stub", "per_stub"):
        assert _number(mine["stub_memory_kib"][key]), key


def test_round_trip_references_have_every_placement_or_a_reason(figures: dict[str, Any]) -> None:
    for ref in REFERENCES - {"strace"}:
        node = figures["roundtrip_ns"][ref]
        if set(node) == {"unavailable"}:
            continue
        for pin in SPREAD:
            assert pin in node, (ref, pin)
            if "unavailable" not in node[pin]:
                assert node[pin]["p99"] >= node[pin]["median"] > 0, (ref, pin)


def test_programs_are_timed_under_each_runner_or_excused(figures: dict[str, Any]) -> None:
    for ref in ("aioumm", "native", "strace"):
        node = figures["programs_s"][ref]
        assert "compute" in node and any(k.startswith("sha256sum") for k in node), ref


def test_the_references_built_from_this_tree_all_ran(figures: dict[str, Any]) -> None:
    """c_stub speaks the stub ABI: when the ABI changes and it does not, this fails."""
    for pin in SPREAD:
        assert _number(figures["roundtrip_ns"]["c_stub"][pin]["median"]), figures["roundtrip_ns"]["c_stub"]
        for ref in ("c_ptrace", "c_unotify") + (("native",) if pin != "apart" else ()):
            assert _number(figures["roundtrip_ns"][ref][pin]["median"]), (ref, figures["roundtrip_ns"][ref])
    for pin in PLACEMENTS:
        assert _number(figures["flush_ns"]["c_stub"][pin]["median"]), figures["flush_ns"]["c_stub"]
    if "apart" in SPREAD:  # native has no controller to place
        assert "controller" in figures["roundtrip_ns"]["native"]["apart"]["unavailable"]


def test_c_stub_has_a_floor_for_every_multi_stub_count(figures: dict[str, Any]) -> None:
    """c_stub --stubs K gives the many-stub figures a C floor, in every placement aioumm has."""
    node = figures["throughput_rt_per_s"]["c_stub"]
    quick = Settings.for_mode(quick=True)
    for k in (k for k in quick.stub_counts if k > 1):
        for pin in SPREAD:
            figure = node[str(k)][pin]
            assert set(figure) == {"rt_per_s", "p50_ns", "p99_ns"}, (k, pin, figure)
            assert all(_number(v) for v in figure.values()), (k, pin, figure)
    for k in quick.skipped_counts:
        assert "quick" in node[str(k)]["unavailable"]
    assert "16+" not in node
    assert "one guest" in figures["throughput_rt_per_s"]["c_ptrace"]["16+"]["unavailable"]


# Runs a command as a child subreaper: any process the command leaves behind becomes this
# one's child when the command exits; the last line says how many there were.
_REAPER = """
import ctypes, os, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
res = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)
left = 0
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
    left += 1
print(res.stdout, end="")
print(res.returncode, left)
"""


def _c_stub() -> str:
    """benchmarks/refs/build/c_stub, built if it is not up to date."""
    build = subprocess.run(["make", "-s", "-C", str(REFS), "build/c_stub"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return str(REFS / "build" / "c_stub")


def test_c_stub_drives_many_stubs_and_reaps_them_all() -> None:
    cmd = [_c_stub(), "--stubs", "4", "-n", "400"]
    res = subprocess.run([sys.executable, "-c", _REAPER, *cmd], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    *out, status = res.stdout.strip().splitlines()
    assert status == "0 0", (status, res.stderr)  # c_stub exited 0, and left no process behind
    obj = json.loads(out[-1])
    assert obj["name"] == "c_stub" and obj["placement"] == "unpinned"
    # 100 round trips per stub, all counted; each stub's first (starting its guest) is not sampled.
    assert obj["n"] == 400
    extra = obj["extra"]
    assert (extra["stubs"], extra["rounds_per_stub"], extra["samples"]) == (4, 100, 396)
    assert extra["wall_s"] > 0 and obj["p99_ns"] >= obj["median_ns"] > 0
    assert extra["passes"] > 0 and extra["spin_ns"] == 0


def test_c_stub_refuses_what_many_stubs_cannot_do() -> None:
    c_stub = _c_stub()
    for extra in (["--spin", "1000"], ["--mode", "flush"]):
        res = subprocess.run([c_stub, "--stubs", "2", *extra], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and "--stubs" in res.stderr, (extra, res.stderr)
    res = subprocess.run([c_stub, "--stubs", "0"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2


def test_a_quick_run_does_not_judge_the_programs_it_runs_too_briefly() -> None:
    results = Results()
    for ref, pipeline, compute in (("aioumm", 0.09, 0.1), ("strace", 0.01, 0.02), ("native", 0.001, 0.02)):
        results.put("programs_s", ref, ("busybox_pipeline",), pipeline)
        results.put("programs_s", ref, ("compute",), compute)
    full = {goal: met for goal, _, met in targets(results)}
    assert full["busybox pipeline faster than under strace -f"] is False
    assert full["compute-bound program <= 1.05x native"] is False
    quick = targets(results, judge_programs=False)
    programs = [(goal, value, met) for goal, value, met in quick if "strace" in goal or "compute" in goal]
    assert [(value, met) for _, value, met in programs] == [(pytest.approx(9.0), None), (pytest.approx(5.0), None)]
    assert "NOT met" not in targets_text(results, judge_programs=False)
