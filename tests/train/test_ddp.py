"""Two CPU processes under torchrun (gloo): sharded batches, synced weights, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TEACHER

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
import torch
from distill.train.config import TrainConfig
from distill.train.distributed import init_group
from distill.train.trainer import train

data, cache, out, sums = sys.argv[1:5]
TEACHER = sys.argv[6]
# freeze_bn: BatchNorm statistics trained per rank differ between DDP's buffer broadcasts.
# Every tensor the trainer broadcasts at a stage's end (the student's weights and buffers), as
# each rank holds it before the broadcast: equal across ranks only if DDP synced every step.
# (DDP's own syncing goes through torch's private coalesced broadcast, not this function.)
import torch.distributed as dist
sent = []
broadcast = dist.broadcast
def spy(tensor, *args, **kwargs):
    sent.append(float(tensor.double().sum()))
    return broadcast(tensor, *args, **kwargs)
dist.broadcast = spy
rank = int(os.environ["RANK"])
methods = sys.argv[5].split(",")
if len(methods) > 1:  # one process group for the runs (train makes one only when none is)
    init_group(2)
for method in methods:
    sent.clear()
    run_out = out if len(methods) == 1 else os.path.join(out, method)
    cfg = TrainConfig(data=data, cache=cache, teacher=TEACHER, out=run_out,
                      student="mobilenetv3_small_050", pretrained=False, method=method,
                      steps=3, steps_align=2, steps_distill=2, image_size=32,
                      batch_per_domain=4, eval_every=2, test_domains=("dom3",), threads=1,
                      select="last", freeze_bn=True)
    m = train(cfg)
    name = f"rank{rank}.json" if len(methods) == 1 else f"{method}-rank{rank}.json"
    with open(os.path.join(sums, name), "w") as f:
        json.dump({"world": int(os.environ["WORLD_SIZE"]), "sums": sent, "metrics": bool(m)}, f)
if len(methods) > 1:
    dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def two_runs(tiny_data: Path, tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """One torchrun of two CPU processes training ADiP then ERM (one launch, not one a
    method: each costs seconds of torch + timm imports in three processes)."""
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "ddp_train.py"
    script.write_text(SCRIPT)
    out, sums = tmp / "run", tmp / "sums"
    sums.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script), str(tiny_data), str(tiny_cache), str(out), str(sums), "adip,erm",
           TEACHER]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    return proc, out, sums


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adip", "erm"])
def test_torchrun_two_cpu_processes(two_runs, method):
    proc, out, sums = two_runs
    out = out / method
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((sums / f"{method}-rank0.json").read_text())
    r1 = json.loads((sums / f"{method}-rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    assert r0["metrics"] and not r1["metrics"]  # only rank 0 evaluates and writes
    assert len(r0["sums"]) == len(r1["sums"]) > 0  # the end-of-stage broadcasts happened
    assert r0["sums"] == pytest.approx(r1["sums"], rel=1e-6)  # DDP kept the replicas equal
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == (4 if method == "adip" else 3)  # rank 0's lines only
    assert json.loads((out / "metrics.json").read_text())["ood"]["dom3"]["n"] == 18


FLAG_SCRIPT = """
import json, os, sys
import torch.distributed as dist
from distill.train.distributed import broadcast_flag, init_group

init_group(2)
rank = int(os.environ["RANK"])
# rank 0 decides, whatever the other rank holds: how a dead SWAD valley stops every rank
got = [broadcast_flag(rank == 0, 2), broadcast_flag(rank == 1, 2)]
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump(got, f)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_broadcast_flag_gives_every_rank_rank_zeros_flag(tmp_path):
    script = tmp_path / "flag.py"
    script.write_text(FLAG_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [True, False]


@pytest.mark.slow
def test_align_stops_on_every_rank_when_rank_zero_says_so(tiny_data, tiny_cache, tmp_path):
    """Align's stopping rule sees each rank's own loss; if ranks decided alone, one would
    leave the stage while the others wait in DDP's all-reduce (a hang). Here rank 1's rule
    fires at its first step and rank 0's never: every rank must train all three steps."""
    script = tmp_path / "ddp_align.py"
    script.write_text(SCRIPT.replace("    m = train(cfg)", """
    import distill.train.trainer as trainer_module
    class RankOneStops(trainer_module.AlignStop):
        def update(self, loss):
            super().update(loss)
            return os.environ["RANK"] == "1"
    trainer_module.AlignStop = RankOneStops
    m = train(cfg.model_copy(update={"steps_align": 3}))"""))
    out, sums = tmp_path / "run", tmp_path / "sums"
    sums.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script), str(tiny_data), str(tiny_cache), str(out), str(sums), "adip",
           TEACHER]
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the ranks hung: one left Align while the other trained on")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("stage") == "align" and "loss" in r] == [0, 1, 2]


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2"}, {"WORLD_SIZE": "x"},
                                 {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-"}])
def test_a_world_size_without_torchrun_is_one_line(env, tiny_data, tiny_cache, tmp_path,
                                                   monkeypatch, capsys):
    """WORLD_SIZE left in the environment (an export, another launcher) without torchrun's
    RANK / MASTER_ADDR, or not a number: a traceback from torch's rendezvous or from
    int() (until 2026-12-06)."""
    from distill.cli import main

    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rc = main(["train", str(tiny_data), "--cache", str(tiny_cache), "--teacher", TEACHER,
               "--student", "mobilenetv3_small_050", "--no-pretrained", "--method", "erm",
               "--out", str(tmp_path / "run"), "--test-domains", "dom3", "--steps", "1",
               "--image-size", "32", "--batch-per-domain", "2", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "torchrun" in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_source_domain_smaller_than_the_processes_is_one_line_per_rank(tiny_data, tmp_path):
    """Under torchrun, a source domain with fewer training images than processes: the rank
    whose share was empty died in a ValueError traceback from the batch sampler, after
    config.json and the logs were written (until 2026-12-06)."""
    import shutil

    from .conftest import make_store

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for cls in ("b_square", "c_cross"):
        shutil.rmtree(data / "dom2" / cls)
    for png in sorted((data / "dom2" / "a_circle").glob("*.png"))[2:]:
        png.unlink()  # dom2: two images, one held out, one to train on
    make_store(data, tmp_path / "cache")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "distill", "train", str(data), "--cache", str(tmp_path / "cache"),
           "--teacher", TEACHER, "--student", "mobilenetv3_small_050", "--no-pretrained",
           "--method", "erm", "--out", str(out), "--test-domains", "dom3", "--steps", "2",
           "--image-size", "32", "--batch-per-domain", "2", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    # torchrun itself ends with its ChildFailedError traceback whatever a process exits with
    assert "]: Traceback" not in proc.stderr, proc.stderr[-3000:]  # a rank's ("[rank1]: ")
    assert "source domain 'dom2' has 1 training image, fewer than the 2 processes" in (
        proc.stderr
    ), proc.stderr[-3000:]
    assert not out.exists()
