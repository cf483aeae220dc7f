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

SECTIONS = {"roundtrip_ns", "throughput_rt_per_s", "flush_ns", "stub_memory_kib", "programs_s"}
REFERENCES = {"aioumm", "c_stub", "c_ptrace", "c_unotify", "python_ptrace", "native", "strace"}
PLACEMENTS = {"same_core", "unpinned"}


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
    for pin in PLACEMENTS:
        assert _number(mine["roundtrip_ns"][pin]["median"])
        assert mine["roundtrip_ns"][pin]["p99"] >= mine["roundtrip_ns"][pin]["median"]
        assert _number(mine["flush_ns"][pin]["median"])
    for k in ("1", "16", "256"):
        for pin in PLACEMENTS | ({"apart"} if len(os.sched_getaffinity(0)) > 1 else set()):
            figure = mine["throughput_rt_per_s"][k][pin]
            assert {"rt_per_s", "p50_ns", "p99_ns"} <= set(figure)
            assert all(_number(v) for v in figure.values())
    # --quick skips 1024 stubs, and says so.
    assert "quick" in mine["throughput_rt_per_s"]["1024"]["unavailable"]
    for key in ("stub_rss", "stub_pte", "controller_per_stub", "per_stub"):
        assert _number(mine["stub_memory_kib"][key]), key


def test_round_trip_references_have_both_placements_or_a_reason(figures: dict[str, Any]) -> None:
    for ref in REFERENCES - {"strace"}:
        node = figures["roundtrip_ns"][ref]
        if set(node) == {"unavailable"}:
            continue
        for pin in PLACEMENTS:
            assert pin in node, (ref, pin)
            if "unavailable" not in node[pin]:
                assert node[pin]["p99"] >= node[pin]["median"] > 0, (ref, pin)


def test_programs_are_timed_under_each_runner_or_excused(figures: dict[str, Any]) -> None:
    for ref in ("aioumm", "native", "strace"):
        node = figures["programs_s"][ref]
        assert "compute" in node and any(k.startswith("sha256sum") for k in node), ref


def test_the_references_built_from_this_tree_all_ran(figures: dict[str, Any]) -> None:
    """c_stub speaks the stub ABI: when the ABI changes and it does not, this fails."""
    for pin in PLACEMENTS:
        assert _number(figures["roundtrip_ns"]["c_stub"][pin]["median"]), figures["roundtrip_ns"]["c_stub"]
        assert _number(figures["flush_ns"]["c_stub"][pin]["median"]), figures["flush_ns"]["c_stub"]
        for ref in ("c_ptrace", "c_unotify", "native"):
            assert _number(figures["roundtrip_ns"][ref][pin]["median"]), (ref, figures["roundtrip_ns"][ref])
