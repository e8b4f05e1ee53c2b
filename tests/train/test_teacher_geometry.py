"""benchmarks/teacher_geometry.py on a tiny store: one row per domain and view, and the
λ = 0.5 optimum √((1 + c)/2) it prints agrees with c."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from .conftest import CLASSES, DOMAINS, make_store

ROOT = Path(__file__).resolve().parents[2]


def test_geometry_prints_every_domain_and_view(tiny_data: Path, tmp_path: Path) -> None:
    store = make_store(tiny_data, tmp_path / "cache", views=2)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "teacher_geometry.py"), str(tiny_data),
         str(store)], capture_output=True, text=True, timeout=120, check=True)
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert sorted((r[0], int(r[1])) for r in rows) == sorted(
        (d, v) for d in DOMAINS for v in range(2))
    for _, _, c, other, acc, best in rows:
        assert float(c) > float(other)  # the fake teacher embeds near its class's prompt
        assert 0.0 <= float(acc) <= 1.0
        # the mean of √((1 + c)/2) over images is at most √((1 + mean c)/2) (concavity)
        assert float(best) <= ((1 + float(c)) / 2) ** 0.5 + 1e-3


def test_kd_scales_print_a_sharper_teacher_distribution_at_a_larger_scale(
        tiny_data: Path, tmp_path: Path) -> None:
    store = make_store(tiny_data, tmp_path / "cache", views=2)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "teacher_geometry.py"), str(tiny_data),
         str(store), "--kd-scales", "1000,1,0.001"], capture_output=True, text=True,
        timeout=120, check=True)
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("k "))
    rows = {r[0]: [float(v) for v in r[1:]] for r in (ln.split() for ln in lines[at + 1:])}
    assert list(rows) == ["1000", "1", "0.001"]
    top = [rows[k][0] for k in rows]
    entropy = [rows[k][1] for k in rows]
    assert top[0] > top[1] > top[2] and entropy[0] < entropy[1] < entropy[2]
    assert top[0] > 0.99  # 1000·cos: one-hot on every row of the fake teacher
    assert abs(entropy[2] - math.log(len(CLASSES))) < 0.01  # near uniform over the classes
