"""The OpenAI-compatible HTTP engine against real servers on 127.0.0.1.

- ``transformers serve`` (transformers[serving]) serving the tiny random Qwen2 model: real
  chat completions. It ignores ``response_format`` (it logs "Ignoring unsupported fields"), so
  the random model's answers to a schema request are not JSON: they must come back as failed
  generations with the raw text kept, never as answers.
- a faulty proxy in front of it (500 for some requests, a stall for others), and small stdlib
  servers that only answer errors, for the retry rules.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from curation import judge
from curation.engines import Request, Sampling
from curation.engines.openai_http import OpenAIEngine
from curation.mllm import EngineConfig
from prevad import Store, queries
from prevad.records import StageResult
from prevad.stage import run_stage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_llm: Path) -> Iterator[tuple[str, str]]:
    """(base_url, model name) of ``transformers serve`` running the tiny LLM on CPU."""
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [str(exe), "serve", str(tiny_llm), "--host", "127.0.0.1", "--port", str(port),
         "--device", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("transformers serve did not start")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(tiny_llm)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class _Server:
    """A threaded HTTP server on 127.0.0.1 with a handler; counts the requests it got."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.hits = []  # type: ignore[attr-defined]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    @property
    def hits(self) -> list[str]:
        return self.httpd.hits  # type: ignore[attr-defined]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def faulty_proxy(upstream: str) -> _Server:
    """Forwards to ``upstream``; answers 500 to prompts containing FAIL500, stalls on STALL."""

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.server.hits.append(body.decode())  # type: ignore[attr-defined]
            if b"FAIL500" in body:
                self.send_error(500, "upstream exploded")
                return
            if b"STALL" in body:
                time.sleep(3)
            req = urllib.request.Request(upstream + self.path.removeprefix("/v1"), data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                data = resp.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return _Server(Proxy)


def status_server(code: int) -> _Server:
    """Answers every POST with ``code`` and an OpenAI-style error body."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            self.rfile.read(int(self.headers["Content-Length"]))
            self.server.hits.append(self.path)  # type: ignore[attr-defined]
            data = json.dumps({"error": {"message": f"status {code}"}}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return _Server(Handler)


# ---------------------------------------------------------------------------- fast: retry rules
def test_5xx_is_retried_then_fails_with_the_reason() -> None:
    srv = status_server(503)
    try:
        eng = OpenAIEngine("m", base_url=srv.base_url, max_retries=2, backoff=0.01)
        g = eng.generate([Request("x")])[0]
        assert not g.ok and "after 3 attempts" in g.error and "503" in g.error
        assert len(srv.hits) == 3
    finally:
        srv.close()


def test_4xx_is_not_retried() -> None:
    srv = status_server(400)
    try:
        eng = OpenAIEngine("m", base_url=srv.base_url, max_retries=2, backoff=0.01)
        gens = eng.generate([Request("x"), Request("y")])
        assert all(not g.ok and "BadRequestError" in g.error for g in gens)
        assert len(srv.hits) == 2
    finally:
        srv.close()


def test_unreachable_server_is_a_failed_generation() -> None:
    eng = OpenAIEngine("m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1,
                       backoff=0.01, timeout=2)
    g = eng.generate([Request("x")])[0]
    assert not g.ok and "APIConnectionError" in g.error


# ---------------------------------------------------------------------------- real server
@pytest.mark.slow
def test_real_server_answers_and_schema_ignoring_output_fails_with_raw_text(
        served: tuple[str, str]) -> None:
    base_url, model = served
    eng = OpenAIEngine(model, base_url=base_url, concurrency=3, timeout=60)
    sch = judge.schema()
    gens = eng.generate([Request("Say hi.", sampling=Sampling(max_tokens=8)),
                         Request("Judge it.", schema=sch, sampling=Sampling(max_tokens=8)),
                         Request("Say bye.", sampling=Sampling(max_tokens=8))])
    free1, judged, free2 = gens
    assert free1.ok and free2.ok and free1.completion_tokens == 8
    assert free1.text and free2.text
    # 8 random tokens are not a judge answer: failed, with what the server said kept.
    assert not judged.ok and "not valid JSON" in judged.error and judged.text


@pytest.mark.slow
def test_server_errors_and_stalls_fail_only_their_requests(served: tuple[str, str]) -> None:
    base_url, model = served
    proxy = faulty_proxy(base_url)
    try:
        eng = OpenAIEngine(model, base_url=proxy.base_url, concurrency=3, timeout=1.5,
                           max_retries=1, backoff=0.01)
        ok, err, stall = eng.generate([
            Request("fine", sampling=Sampling(max_tokens=4)),
            Request("FAIL500", sampling=Sampling(max_tokens=4)),
            Request("STALL", sampling=Sampling(max_tokens=4)),
        ])
        assert ok.ok and ok.text
        assert not err.ok and "500" in err.error and "after 2 attempts" in err.error
        assert not stall.ok and "Timeout" in stall.error
        assert sum("FAIL500" in h for h in proxy.hits) == 2  # retried once (transient)
    finally:
        proxy.close()


@pytest.mark.slow
def test_judge_stage_over_http_keeps_raw_text_of_non_json(served: tuple[str, str],
                                                          tmp_path: Path) -> None:
    base_url, model = served
    from prevad.records import Video

    store = Store.init(tmp_path / "store")
    v = Video.create("test", "a")
    store.append("videos", [v])
    store.append("stage_results", [StageResult(v.video_id, "describe", "v1-x", "ok",
                                               output_json=json.dumps({"description": "A car."}))])
    cfg = EngineConfig("openai", model, base_url=base_url, sampling=Sampling(max_tokens=6))
    s = run_stage(store, judge.make_stage(store, cfg, judge.JudgeConfig(require_verified=False)))
    assert (s.items, s.failed) == (1, 1)
    row = queries.latest_status(store, "judge").to_pylist()[0]
    assert "not valid JSON" in row["error"] and json.loads(row["output_json"])["raw"]
