"""prefect.yaml against a real `prefect server start` on 127.0.0.1 with a process work pool and
worker: every deployment is created and `prefect deployment run 'stage/default'` completes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from prevad.store import Store
from tests.flows.stages import add_videos

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
POOL = "lagovad-process"  # the work pool named in prefect.yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # own session: teardown kills the process group (server workers, flow-run subprocesses)
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _cli(args: list[str], env: dict[str, str], timeout: float = 180) -> str:
    res = subprocess.run([*PREFECT, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, f"prefect {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture()
def prefect_env(tmp_path) -> Iterator[dict[str, str]]:
    """A real Prefect server (temp PREFECT_HOME, free port) and a process worker on its pool."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
    })
    procs = [_start([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                     "--no-ui"], env, tmp_path / "server.log")]
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{env['PREFECT_API_URL']}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert procs[0].poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "prefect server did not answer within 180 s"
            time.sleep(1)
        _cli(["work-pool", "create", POOL, "--type", "process"], env)
        procs.append(_start([*PREFECT, "worker", "start", "--pool", POOL, "--type", "process"],
                            env, tmp_path / "worker.log"))
        yield env
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.mark.slow
def test_deployment_run_against_a_real_server_and_worker(tmp_path, prefect_env):
    store = Store.init(tmp_path / "store")
    add_videos(store, 6)

    _cli(["--no-prompt", "deploy", "--all"], prefect_env, timeout=300)
    listed = _cli(["deployment", "ls"], prefect_env)
    for name in ("stage/default", "chain/default", "curate/default", "clean/default",
                 "describe-anomaly/default", "extract-features/default",
                 "train/default", "evaluate/default"):
        assert name in listed, listed

    out = _cli(["deployment", "run", "stage/default", "--param", f"store={store.root}",
                "--param", "stage=tests.flows.stages:clean_stage",
                "--param", 'params={"min_duration": 3}', "--watch", "--watch-timeout", "300"],
               prefect_env, timeout=360)
    assert "Completed" in out, out
    # the worker's flow run wrote the stage's results into the store
    results = Store(store.root).query(
        "SELECT status, count(*) AS n FROM stage_results GROUP BY status ORDER BY status"
    ).to_pylist()
    assert results == [{"status": "ok", "n": 3}, {"status": "rejected", "n": 3}]
    runs = list((store.root / "stage_runs" / "clean").glob("*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["items"] == 6
    assert (store.root / "data_cards" / "card.md").is_file()
