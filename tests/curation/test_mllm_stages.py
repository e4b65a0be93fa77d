"""describe -> verify -> judge and describe-anomaly on a real store with tiny random models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curation import describe, describe_anomaly, judge, verify
from curation.engines import RequestCache, Sampling
from curation.engines.tiny import build_tiny_llm
from curation.frames import FrameConfig
from curation.mllm import EngineConfig, load_prompt
from prevad import Store, queries, taxonomy
from prevad.records import Annotation, StageResult, make_id
from prevad.stage import run_stage
from toolkit.cli import app

FRAMES = FrameConfig(n=4, size=56)
DCFG = describe.DescribeConfig(FRAMES, min_chars=4, max_chars=12)
VCFG = verify.VerifyConfig(FRAMES, min_score=0.0, min_clip_mean=-1.0,
                           clip_model="lagovad-clip-tiny", clip_pretrained=None,
                           max_claims=2, max_claim_chars=8)
JCFG = judge.JudgeConfig(require_verified=False, max_reason_chars=10)


def ecfg(model: Path, **kw) -> EngineConfig:
    return EngineConfig("transformers", str(model), device="cpu", batch_size=4,
                        sampling=Sampling(max_tokens=kw.pop("max_tokens", 120)), **kw)


def latest(store: Store, stage: str) -> dict[str, dict]:
    return {r["id"]: r for r in queries.latest_status(store, stage).to_pylist()}


@pytest.fixture()
def described(video_store: Store, tiny_vlm: Path) -> Store:
    s = describe.run(video_store, ecfg(tiny_vlm), DCFG)
    assert (s.items, s.ok, s.failed) == (3, 2, 1)
    return video_store


def test_describe_segments(described: Store) -> None:
    store = described
    rows = latest(store, "describe")
    segs = {r.segment_id: r for r in store.records("segments")}
    videos = {v.video_id: v for v in store.records("videos")}
    assert set(rows) == set(segs)
    for sid, r in rows.items():
        seg = segs[sid]
        if videos[seg.video_id].source_video_id == "v2":  # the corrupt file
            assert r["status"] == "failed" and "frames:" in r["error"]
            continue
        assert r["status"] == "ok"
        out = json.loads(r["output_json"])
        assert out["video_id"] == seg.video_id and out["segment_id"] == sid
        assert 4 <= len(out["description"]) <= 12
    typed = queries.stage_results(store, "describe").to_pylist()
    assert sorted(t["description"] is not None for t in typed) == [False, True, True]
    # Frames were decoded once per item and cached for the next stages.
    assert len(list((store.root / "cache" / "frames").glob("*.npy"))) == 2


def test_describe_reads_clips(video_store: Store, tiny_vlm: Path) -> None:
    """Items are the rows of the catalog's ``clips`` view (D1): the segments of a split video,
    and a video that was never split as a clip of itself (output segment_id None)."""
    assert describe.make_stage(video_store, ecfg(tiny_vlm), DCFG).input_table == "clips"
    whole = Store.init(video_store.root.parent / "s2")
    whole.append("videos", video_store.records("videos"))
    (whole.root / "media").symlink_to(video_store.root / "media")
    s = describe.run(whole, ecfg(tiny_vlm), DCFG)
    assert (s.items, s.ok, s.failed) == (3, 2, 1)
    for r in latest(whole, "describe").values():
        if r["status"] == "ok":
            out = json.loads(r["output_json"])
            assert out["video_id"] == r["id"] and out["segment_id"] is None


def test_rerun_only_retries_what_failed(described: Store, tiny_vlm: Path) -> None:
    stage = describe.make_stage(described, ecfg(tiny_vlm), DCFG)
    s = run_stage(described, stage)
    # Only the failed item is retried (and fails again); the request cache holds the 2 answers.
    assert (s.items, s.failed) == (1, 1)
    assert len(RequestCache(described.root / "cache" / "generations.sqlite")) == 2
    # What changes the answers changes the version (so every item runs again).
    assert describe.make_stage(described, ecfg(tiny_vlm, max_tokens=121), DCFG).version \
        != stage.version
    assert describe.make_stage(described, ecfg(tiny_vlm), replace(DCFG, max_chars=13)).version \
        != stage.version


@pytest.mark.slow
def test_verify_and_judge(described: Store, tiny_vlm: Path, tiny_llm: Path) -> None:
    store = described
    clip = verify.ClipScorer("lagovad-clip-tiny", None, "cpu")
    s = run_stage(store, verify.make_stage(store, ecfg(tiny_vlm), VCFG, clip=clip))
    assert s.items == 3 and s.failed == 1
    for r in latest(store, "verify").values():
        if r["status"] == "failed":
            assert "no describe result" in r["error"]
            continue
        out = json.loads(r["output_json"])
        assert out["verdict"] in verify.VERDICTS and 0 <= out["score"] <= 1
        assert -1 <= out["clip_mean"] <= out["clip_max"] <= 1
        assert r["reason"] == verify.decide(out["verdict"], out["score"], out["clip_mean"], VCFG)
    # verify used the frames describe decoded (same frame config): nothing decoded again.
    assert len(list((store.root / "cache" / "frames").glob("*.npy"))) == 2
    typed = {t["id"]: t for t in queries.stage_results(store, "verify").to_pylist()}
    assert all(isinstance(t["clip_max"], float) for t in typed.values() if t["verdict"])

    # A CLIP threshold no similarity reaches rejects every verified item with the reason.
    strict = replace(VCFG, min_clip_mean=1.01)
    strict_verify = verify.make_stage(store, ecfg(tiny_vlm), strict, clip=clip)
    run_stage(store, strict_verify)
    reasons = {r["reason"] for r in latest(store, "verify").values() if r["status"] != "failed"}
    assert reasons <= {"clip_below_threshold", "vlm_inconsistent"} and "ok" not in {
        r["status"] for r in latest(store, "verify").values()}

    # judge, with require_verified, reads ONE verify version (D3): named here, the strict one,
    # which rejected every described item. (By default it would read the newest version with
    # ok results: the first run's, as the strict run has none.)
    strict_judge = judge.JudgeConfig(require_verified=True, max_reason_chars=10,
                                     verify_version=strict_verify.version)
    run_stage(store, judge.make_stage(store, ecfg(tiny_llm), strict_judge))
    rows = latest(store, "judge")
    assert sorted(r["reason"] or r["status"] for r in rows.values()) == [
        "failed", "verify_rejected", "verify_rejected"]

    # judge without it: the output contract the review step reads.
    s = run_stage(store, judge.make_stage(store, ecfg(tiny_llm), JCFG))
    assert s.items == 3
    n_answered = 0
    for r in latest(store, "judge").values():
        if r["status"] == "failed":
            assert "no describe result" in r["error"]
            continue
        out = json.loads(r["output_json"])
        n_answered += 1
        assert isinstance(out["video_id"], str) and isinstance(out["segment_id"], str)
        assert isinstance(out["anomaly"], bool) and isinstance(out["reason"], str)
        assert out["description"] == json.loads(
            latest(store, "describe")[r["id"]]["output_json"])["description"]
        assert out["category"] in taxonomy.all_names()
        assert 0 <= out["confidence"] <= 1
        if r["status"] == "ok":
            assert out["anomaly"] == (out["category"] != "Normal")
            assert out["top_level"] == (None if out["category"] == "Normal"
                                        else taxonomy.top_level(out["category"]))
        else:
            assert r["reason"] == "anomaly_category_mismatch"
    assert n_answered == 2
    typed = queries.judge_results(store).to_pylist()
    assert {t["id"] for t in typed} == set(latest(store, "judge"))
    for t in typed:
        if t["status"] != "failed":
            out = json.loads(t["output_json"])
            assert (t["anomaly"], t["category"], t["confidence"]) == (
                out["anomaly"], out["category"], out["confidence"])


def test_judge_interpret_rejects_outside_taxonomy() -> None:
    ok, reason = judge.interpret({"anomaly": True, "category": "car accident",
                                  "confidence": 0.7, "reason": "A car hits a wall."})
    assert reason is None and ok["category"] == "Car Accident"
    assert ok["top_level"] == "Vehicle Accident"
    assert judge.interpret({"anomaly": True, "category": "Alien Invasion", "confidence": 0.5,
                            "reason": "x"})[1] == "category_outside_taxonomy"
    assert judge.interpret({"anomaly": True, "category": "Normal", "confidence": 0.5,
                            "reason": "x"})[1] == "anomaly_category_mismatch"
    assert judge.interpret({"anomaly": False, "category": "Normal", "confidence": 1.5,
                            "reason": "x"})[1] == "confidence_out_of_range"
    normal, reason = judge.interpret({"anomaly": False, "category": "normal",
                                      "confidence": 1, "reason": "x"})
    assert reason is None and normal["top_level"] is None and normal["category"] == "Normal"


def test_over_long_description_is_rejected(video_store: Store, tiny_llm: Path) -> None:
    store = video_store
    segs = store.records("segments")
    store.append("stage_results", [
        StageResult(segs[0].segment_id, "describe", "v1-test", "ok",
                    output_json=json.dumps({"description": "word " * 1000})),
    ])
    stage = judge.make_stage(store, ecfg(tiny_llm), JCFG)
    rows = queries.work_list(store, stage.name, stage.version, stage.input_table).to_pylist()
    results = dict(zip([r["clip_id"] for r in rows], stage.process(rows), strict=True))
    assert results.pop(segs[0].segment_id).reason == "description_too_long"
    assert len(results) == 2 and all("no describe result" in r.error for r in results.values())


def test_new_describe_version_puts_verify_and_judge_back_to_work(
        video_store: Store, tiny_vlm: Path, tiny_llm: Path) -> None:
    store = video_store
    seg = store.records("segments")[0].segment_id
    vcfg = replace(VCFG, clip_model=None)

    def versions() -> tuple[str, str]:
        return (verify.make_stage(store, ecfg(tiny_vlm), vcfg).version,
                judge.make_stage(store, ecfg(tiny_llm), JCFG).version)

    before = versions()
    row = StageResult(seg, "describe", "v1-a", "ok", output_json='{"description": "a"}')
    store.append("stage_results", [row])
    first = versions()
    assert first[0] != before[0] and first[1] != before[1]
    # more ok results of the same describe version: the versions stay
    store.append("stage_results", [replace(row, attempt=2)])
    assert versions() == first
    # describe re-run under a new version: both downstream stages re-run
    store.append("stage_results", [replace(row, stage_version="v1-b")])
    second = versions()
    assert second[0] != first[0] and second[1] != first[1]


def test_describe_anomaly(video_store: Store, tiny_vlm: Path) -> None:
    store = video_store
    v0, v1 = store.records("videos")[:2]
    human = Annotation(make_id("h", v0.video_id), v0.video_id, "prevad", "human", "ann1",
                       "Car Accident", True, spans=[[0.25, 0.75]])
    normal = Annotation(make_id("n", v1.video_id), v1.video_id, "prevad", "human", "ann1",
                        "Normal", False)
    bench = Annotation(make_id("b", v1.video_id), v1.video_id, "ucf_crime", "human", "x",
                       "Robbery", True)
    store.append("annotations", [human, normal, bench])
    s = describe_anomaly.run(store, ecfg(tiny_vlm), describe_anomaly.DescribeAnomalyConfig(
        FRAMES, min_chars=4, max_chars=12))
    assert (s.items, s.ok) == (3, 1)
    assert s.rejected == {"not_human_prevad": 1, "normal_annotation": 1}
    models = [a for a in store.records("annotations") if a.annotator_kind == "model"]
    assert len(models) == 1
    m = models[0]
    assert (m.video_id, m.category, m.is_anomaly, m.spans, m.split) == (
        v0.video_id, "Car Accident", True, [[0.25, 0.75]], "train")
    typed = {t["annotation_id"]: t for t in
             queries.stage_results(store, "describe-anomaly").to_pylist()}
    assert typed[human.annotation_id]["description"] == m.description
    assert typed[human.annotation_id]["model_annotation_id"] == m.annotation_id
    # The prompt names the human category.
    tmpl = load_prompt(describe_anomaly.PROMPT)
    assert "{category}" in tmpl


# ---------------------------------------------------------------------------- command line
def test_cli_describe_and_errors(video_store: Store, tiny_vlm: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    root = str(video_store.root)
    res = runner.invoke(app, ["curate", "describe", root, "--model", str(tiny_vlm),
                              "--device", "cpu", "--frames", "4", "--frame-size", "56",
                              "--min-chars", "4", "--max-chars", "12", "--max-tokens", "80",
                              "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert (summary["items"], summary["ok"], summary["failed"]) == (3, 2, 1)

    for args, msg in [
        (["--model", str(tmp_path / "nope")], "does not exist"),
        (["--model", "m", "--engine", "openai"], "--base-url"),
        (["--model", str(tiny_vlm), "--engine", "vllm"], "pip install"),
        (["--model", "m", "--engine", "tgi"], "--engine (engine) must be one of"),
        (["--model", "m", "--frames", "0"], "--frames (frames) must be a whole number >= 1"),
        (["--model", "m", "--min-chars", "30", "--max-chars", "20"], "--min-chars (30) must be "
         "at most --max-chars (20)"),
        (["--model", "m", "--limit", "0"], "--limit must be a whole number >= 1"),
    ]:
        res = runner.invoke(app, ["curate", "describe", root, *args])
        assert res.exit_code == 2, res.output
        assert res.stderr.startswith("error: ") and msg in res.stderr
        assert "Traceback" not in res.output


def test_cli_judge_and_verify_take_their_own_options(video_store: Store, tiny_vlm: Path,
                                                     tiny_llm: Path) -> None:
    runner = CliRunner()
    root = str(video_store.root)
    segs = video_store.records("segments")
    video_store.append("stage_results", [
        StageResult(s.segment_id, "describe", "v1-test", "ok",
                    output_json=json.dumps({"description": "a car hits a wall"}))
        for s in segs
    ])
    # judge's own option reaches its config: by default it judges only verified items (none
    # here); with --no-require-verified the model's answer is used for every item
    base = ["curate", "judge", root, "--model", str(tiny_llm), "--device", "cpu", "--json"]
    for args in ([], ["--no-require-verified"]):
        res = runner.invoke(app, [*base, *args])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout.strip().splitlines()[-1])["items"] == len(segs)
    strict, free = (
        {r["stage_version"] for r in video_store.query(
            "SELECT stage_version FROM stage_results WHERE stage = 'judge'").to_pylist()},
        latest(video_store, "judge"),
    )
    assert len(strict) == 2  # the option is part of the version
    assert all(r["reason"] != "verify_rejected" and "verif" not in (r["error"] or "")
               for r in free.values())
    # verify: a CLIP model that cannot be loaded is one error line, not a traceback
    res = runner.invoke(app, ["curate", "verify", root, "--model", str(tiny_vlm), "--device",
                              "cpu", "--clip-model", "no-such-clip"])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "no-such-clip" in errors[0] and "Traceback" not in res.output


# ------------------------------------------------------------ upstream versions (D3)
@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLM whose one answer is self-consistent (anomaly with an anomaly class:
    seed 4, as in the demo), so its judgements are ok."""
    return build_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-judge", seed=4)


def _summary(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])  # the command was given --json


@pytest.mark.slow
def test_a_failed_judge_configuration_hides_nothing(video_store: Store, tiny_judge: Path,
                                                    tmp_path: Path) -> None:
    store, runner = video_store, CliRunner()
    root = str(store.root)
    segs = store.records("segments")

    def upstream(stage: str, version: str, text: str) -> list[StageResult]:
        return [StageResult(s.segment_id, stage, version, "ok", output_json=json.dumps(
            {"video_id": s.video_id, "segment_id": s.segment_id, "description": text}))
            for s in segs]

    store.append("stage_results", upstream("describe", "v1-desc", "a car hits a wall")
                 + upstream("verify", "v2-verified", ""))
    working = ["curate", "judge", root, "--model", str(tiny_judge), "--device", "cpu", "--json"]
    # a judge configuration that cannot work: an OpenAI server that is not there
    failed = _summary(runner.invoke(app, [
        "curate", "judge", root, "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1",
        "--model", "served-judge", "--timeout", "2", "--json"]))
    assert (failed["items"], failed["failed"]) == (3, 3)
    # the working configuration then does every item, and review gets its tasks
    good = _summary(runner.invoke(app, working))
    assert (good["items"], good["ok"]) == (3, 3)
    res = runner.invoke(app, ["review", "export", root, str(tmp_path / "tasks.json"),
                              "--media-url", "http://media.test/"])
    # every judged clip is exported but the one whose video file is corrupt (named, exit 2)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert res.exit_code == 2 and len(errors) == 1 and "v2.mp4" in errors[0], res.output
    assert len(json.loads((tmp_path / "tasks.json").read_text())) == 2
    # run again, it has nothing left to do
    assert _summary(runner.invoke(app, working))["items"] == 0

    # status shows the upstream versions judge (and verify) read by default
    status = runner.invoke(app, ["curate", "status", root])
    assert status.exit_code == 0, status.output
    reads = [ln.split("│")[1:5] for ln in status.stdout.splitlines() if "--" in ln]
    assert [[c.strip() for c in r] for r in reads] == [
        ["verify", "describe", "v1-desc", "--describe-version"],
        ["judge", "describe", "v1-desc", "--describe-version"],
        ["judge", "verify", "v2-verified", "--verify-version"],
    ]

    # a new describe version puts judge back to work on it; naming the old one does not
    store.append("stage_results", upstream("describe", "v1-redescribed", "a fire in a shop"))
    assert _summary(runner.invoke(app, [*working, "--describe-version", "v1-desc"]))[
        "items"] == 0
    again = _summary(runner.invoke(app, working))
    assert (again["items"], again["ok"]) == (3, 3)
    judged = {json.loads(r["output_json"])["description"]
              for r in latest(store, "judge").values()}
    assert judged == {"a fire in a shop"}


# ------------------------------------------------------------ verify without CLIP weights
@pytest.mark.parametrize("env, why", [
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
    # not marked offline, but the hub does not answer: one connection attempt, no retries
    ({"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"},
     "127.0.0.1:9 is unreachable"),
])
def test_verify_without_clip_weights_fails_first_naming_its_option(
        video_store: Store, tmp_path: Path, env: dict, why: str) -> None:
    # default options (CLIP ViT-B-16, pretrained "openai") with empty weight caches
    run_env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path / "home"),
               **env}
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "curate", "verify", str(video_store.root),
         "--model", str(tmp_path / "vlm-not-loaded-yet"), "--device", "cpu"],
        capture_output=True, text=True, env=run_env, timeout=300,
        cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: the weights of CLIP model 'ViT-B-16' (--clip-pretrained "
                           "'openai') are not in the local cache") and why in line, line
    assert "--clip-model none" in line and " --pretrained" not in line
    assert latest(video_store, "verify") == {}
