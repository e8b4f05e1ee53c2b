"""The README's "same steps by hand" block, command by command, on tiny data.

make-digits -> make-teacher-pool --benchmark -> fit-teacher -> serve-teacher -> harvest
(twice) -> report -> train -> eval: the commands a user types, each through
``distill.cli.main`` in this process (a child process per command would import torch
and load the text model again each time: tens of seconds). ``serve-teacher`` runs its
real command too, on a thread, on a free port of 127.0.0.1 with its token from
``$VLM_DISTILL_TEACHER_TOKEN``, so the harvest is given that port with ``--base-url``.

Sizes are cut to seconds (two digits a class, three fit steps, two training steps a
stage, a small random-init student): what is checked is that each step takes the
previous one's output and the numbers agree from step to step, not the accuracy
(benchmarks/adip_table.py and the demo measure that).
"""

from __future__ import annotations

import json
import re
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from distill.cli import main
from tests.e2e.conftest import ledger_spent

TOKEN = "by-hand-token-5c2e"
BUDGET = Decimal("0.50")
VIEWS = 2
PER_CLASS = 2  # the README's 20: ten classes, four domains -> 80 digits


def _hits(split: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """domain -> (images scored right, images scored): accuracy as the counts it is."""
    return {d: (round(v["acc"] * v["n"]), int(v["n"])) for d, v in split.items()}


class _Served:
    """``vlm-distill serve-teacher ...`` on a thread: its exit code, and the server the
    command built (to read its port and to stop it as Ctrl-C would)."""

    def __init__(self, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
        import distill.server as server_module

        self.servers: list[Any] = []
        self.code: int | None = None
        real = server_module.ServerThread
        servers = self.servers

        class Recorded(real):  # type: ignore[misc,valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                servers.append(self)

        # serve_teacher.run imports ServerThread from distill.server when it runs
        monkeypatch.setattr(server_module, "ServerThread", Recorded)

        def serve() -> None:
            self.code = main(argv)

        self.thread = threading.Thread(target=serve, name="serve-teacher", daemon=True)

    def start(self, timeout_s: float = 60.0) -> str:
        """The URL, once the server answers /healthz."""
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.thread.is_alive(), f"serve-teacher ended with {self.code}"
            assert time.monotonic() < deadline, "serve-teacher did not start"
            if self.servers and self.servers[0].server.started:
                url: str = self.servers[0].base_url
                assert httpx.get(url + "/healthz").status_code == 200
                return url
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.servers:
            self.servers[0].server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "serve-teacher did not stop"
        return self.code


@pytest.mark.slow
def test_the_readme_steps_by_hand_fit_serve_harvest_train_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    monkeypatch.chdir(tmp_path)  # the README's relative paths
    monkeypatch.setenv("VLM_DISTILL_TEACHER_TOKEN", TOKEN)
    threads = torch.get_num_threads()  # the served teacher sets its own, process-wide
    data = Path("data/digits")

    said: list[str] = []  # stderr of every command (the served teacher's banner too)

    def run(*argv: str) -> str:
        code = main(list(argv))
        out = capsys.readouterr()
        said.append(out.err)
        assert code == 0, f"{argv}: exit {code}\n{out.out}\n{out.err}"
        assert "Traceback" not in out.out + out.err
        return out.out

    # -- data, teacher pool (cut against the benchmark), teacher --------------------------
    run("data", "make-digits", str(data), "--per-class", str(PER_CLASS))
    domains = sorted(p.name for p in data.iterdir() if p.is_dir())
    assert domains == ["colour", "inverted", "rotated", "upright"]
    images = len(list(data.rglob("*.png")))
    assert images == 10 * PER_CLASS * 4
    # a pool of 5 digits a class and three steps of 16: a teacher in seconds, not minutes
    run("data", "make-teacher-pool", "digits", "pool", "--benchmark", str(data),
        "--per-class", "5")  # fmt: skip
    out = run("fit-teacher", "pool", "--out", "teacher.safetensors", "--steps", "3",
              "--batch", "16")  # fmt: skip
    last = out.strip().splitlines()[-1]
    named = re.fullmatch(r"harvest it as: --teacher (local:mini-clip-[0-9a-f]{12})", last)
    assert named, last
    teacher = named.group(1)  # TEACHER=local:mini-clip-...

    # -- serve it (the README's `&`), harvest twice, report -------------------------------
    served = _Served(
        ["serve-teacher", "--backend", "mini-clip", "--weights", "teacher.safetensors",
         "--port", "0"],
        monkeypatch,
    )  # fmt: skip
    try:
        url = served.start()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        info = httpx.get(url + "/admin/info", headers=auth).json()
        # the server serves the weights fit-teacher named (the name is their hash)
        assert info["backend"] == "mini-clip"
        assert teacher == "local:mini-clip-" + info["weights_sha256"][:12]
        harvest = [
            "harvest", str(data), "--teacher", teacher, "--cache", "vlm-cache",
            "--budget", str(BUDGET), "--views", str(VIEWS), "--base-url", url,
        ]  # fmt: skip
        first = run(*harvest)
        spent = ledger_spent(Path("vlm-cache"))
        bill = httpx.get(url + "/admin/billing", headers=auth).json()
        assert 0 < spent <= BUDGET
        # what the ledger holds is what the teacher billed: every view of every image
        assert Decimal(bill["usd"]) == spent and bill["images"] == VIEWS * images
        assert "Everything was already cached" not in first
        # rich wraps at 80 columns: the path may start on the next line
        [store] = re.findall(r"embedding store: (\S+)", " ".join(first.split()))

        second = run(*harvest)
        second = " ".join(second.split())
        assert "Everything was already cached: this run spent $0." in second
        assert ledger_spent(Path("vlm-cache")) == spent
        again = httpx.get(url + "/admin/billing", headers=auth).json()
        assert again["requests"] == bill["requests"] and again["usd"] == bill["usd"]
        assert f"embedding store: {store}" in second  # the same store
    finally:
        code = served.stop()
        torch.set_num_threads(threads)
    assert code == 0
    banner = "".join(said) + capsys.readouterr().err
    assert "token: from $VLM_DISTILL_TEACHER_TOKEN" in banner and TOKEN not in banner

    report = " ".join(run("report", "vlm-cache").split())
    assert f"items in the response cache: {VIEWS * images + 10}" in report  # + 10 prompts
    assert "the last run spent $0" in report

    # -- train, eval ---------------------------------------------------------------------
    run(
        "train", str(data), "--cache", "vlm-cache", "--teacher", teacher,
        "--method", "adip", "--steps-align", "2", "--steps-distill", "2",
        "--image-size", "32", "--lr", "5e-4", "--test-domains", "rotated",
        # a small random-init student, 8 digits a domain a step: seconds
        "--student", "mobilenetv3_small_050", "--no-pretrained", "--batch-per-domain", "8",
        "--out", "runs/adip",
    )  # fmt: skip
    run_dir = Path("runs/adip")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["teacher"] == teacher and metrics["method"] == "adip"
    assert Path(metrics["store"]) == Path(store)  # trained from what was harvested
    assert metrics["views"] == VIEWS
    assert sorted(metrics["id"]) == ["colour", "inverted", "upright"]
    assert list(metrics["ood"]) == ["rotated"]
    assert metrics["ood"]["rotated"]["n"] == images // 4  # every held-out digit scored
    assert sum(v["n"] for v in metrics["id"].values()) == metrics["n_id"] > 0
    zs = metrics["teacher_zeroshot"]  # the same images, scored by the harvested teacher
    for name, split in (("id", metrics["id"]), ("ood", metrics["ood"])):
        assert {d: v["n"] for d, v in zs[name].items()} == {d: v["n"] for d, v in split.items()}
        for v in (*split.values(), *zs[name].values()):
            assert 0 <= v["acc"] <= 1
            assert v["acc"] * v["n"] == pytest.approx(round(v["acc"] * v["n"]))
    assert metrics["mean_ood"] == metrics["ood"]["rotated"]["acc"]

    evaluated = run("eval", str(run_dir), str(data))
    assert f"written: {run_dir / 'eval.json'}" in evaluated
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["same_dataset"] is True  # its ID is the run's own hold-out again
    # the saved student scores each domain's images as the run's own evaluation did
    assert _hits(result["id"]) == _hits(metrics["id"])
    assert _hits(result["ood"]) == _hits(metrics["ood"])
    assert result["mean_ood"] == pytest.approx(metrics["mean_ood"])
    assert result["mean_id"] == pytest.approx(metrics["mean_id"])
    for domain in domains:
        assert domain in evaluated  # the printed table has a row per domain
    # with the harvested store, eval adds the teacher's column: the run's, image for image
    out_json = run("eval", str(run_dir), str(data), "--store", store, "--json",
                   "--out", "eval-store.json")  # fmt: skip
    with_store = json.loads(out_json.strip().splitlines()[-1])
    assert _hits(with_store["id"]) == _hits(metrics["id"])
    teacher_zs = with_store["teacher_zeroshot"]
    assert teacher_zs["images_missing"] == 0
    assert _hits(teacher_zs["id"]) == _hits(zs["id"])
    assert _hits(teacher_zs["ood"]) == _hits(zs["ood"])
