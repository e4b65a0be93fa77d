"""A new model stage is one declaration: two test stages built only from ModelStage specs run
through the same runner as describe/verify/judge, on tiny random models and a real store.

- ``tags`` (vision): the frames of each segment -> up to 3 tags from a fixed list;
- ``headline`` (text): reads the ``tags`` results of ONE tags version (D3) -> a headline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from curation import cli_options as opt
from curation.engines import Sampling
from curation.frames import FrameConfig
from curation.mllm import EngineConfig
from curation.model_stage import Answer, Context, ModelStage, Work, missing_upstream
from prevad import Store, queries
from prevad.errors import ValidationError
from prevad.records import StageResult
from prevad.stage import ItemResult, Ok, Rejected, run_stage

TAGS = ["street", "indoor", "crowd", "vehicle", "fire", "night"]


@dataclass(frozen=True, slots=True)
class TagsConfig:
    frames: FrameConfig = field(default_factory=lambda: FrameConfig(2, 32))
    max_tags: int = 3


@dataclass(frozen=True, slots=True)
class HeadlineConfig:
    max_chars: int = 12
    tags_version: str | None = None


def tags_read(ctx: Context, work: Work, ans: Answer) -> ItemResult:
    tags = [t for t in ans.parsed.get("tags") or [] if t in TAGS]
    output = {**work.ids(), "tags": tags, "model": ctx.model, "cached": ans.cached}
    return Ok(output=output) if tags else Rejected("no_tags", output)


def headline_ask(ctx: Context, work: Work) -> dict[str, Any] | ItemResult:
    up = work.upstream["tags"]
    if up is None or not up.ok:
        return missing_upstream(work, "tags", ctx)
    return {"tags": ", ".join(up.output["tags"])}


def headline_read(ctx: Context, work: Work, ans: Answer) -> ItemResult:
    return Ok(output={**work.ids(), "headline": ans.parsed["headline"],
                      "tags": ans.fields["tags"]})


@pytest.fixture
def specs(tmp_path: Path) -> tuple[ModelStage, ModelStage]:
    (tmp_path / "tags.md").write_text("List what you see, as tags.\n")
    (tmp_path / "headline.md").write_text("Write a headline for a video tagged: {tags}\n")
    tags = ModelStage(
        "tags", tmp_path / "tags.md", TagsConfig, read=tags_read,
        schema=lambda cfg: {
            "type": "object", "required": ["tags"], "additionalProperties": False,
            "properties": {"tags": {"type": "array", "minItems": 1, "maxItems": cfg.max_tags,
                                    "items": {"type": "string", "enum": TAGS}}}},
        params=lambda cfg: {"max_tags": cfg.max_tags},
    )
    headline = ModelStage(
        "headline", tmp_path / "headline.md", HeadlineConfig, ask=headline_ask,
        read=headline_read, vision=False, upstream=("tags",),
        schema=lambda cfg: {
            "type": "object", "required": ["headline"], "additionalProperties": False,
            "properties": {"headline": {"type": "string", "minLength": 1,
                                        "maxLength": cfg.max_chars}}},
        params=lambda cfg: {"max_chars": cfg.max_chars},
    )
    return tags, headline


def ecfg(model: Path) -> EngineConfig:
    return EngineConfig("transformers", str(model), device="cpu", batch_size=4,
                        sampling=Sampling(max_tokens=60))


def latest(store: Store, stage: str) -> dict[str, dict]:
    return {r["id"]: r for r in queries.latest_status(store, stage).to_pylist()}


@pytest.mark.slow
def test_a_stage_built_only_from_a_spec_runs_through_the_runner(
        specs, video_store: Store, tiny_vlm: Path, tiny_llm: Path) -> None:
    tags, headline = specs
    store = video_store
    s = tags.run(store, ecfg(tiny_vlm))
    # 3 segments: the corrupt video's frames fail, the other two get tags (the schema asks for
    # 1 to 3 of the list, and constrained decoding keeps even a random model to it)
    assert (s.items, s.failed, s.ok) == (3, 1, 2)
    rows = latest(store, "tags")
    for r in rows.values():
        if r["status"] == "failed":
            assert r["error"].startswith("frames: ")
            continue
        out = json.loads(r["output_json"])
        assert set(out["tags"]) <= set(TAGS) and 1 <= len(out["tags"]) <= 3
        assert out["segment_id"] == r["id"]
    # frames were sampled from the store's shared cache, as for describe
    assert len(list((store.root / "cache" / "frames").glob("*.npy"))) == 2
    # a rerun retries only the failed item; a config change is a new version
    stage = tags.stage(store, ecfg(tiny_vlm))
    assert run_stage(store, stage).items == 1
    assert tags.stage(store, ecfg(tiny_vlm), TagsConfig(max_tags=2)).version != stage.version

    # the text stage reads the tags of ONE tags version, named in its own version
    ok = [i for i, r in rows.items() if r["status"] == "ok"]
    first = headline.stage(store, ecfg(tiny_llm))
    assert first.version != headline.stage(store, ecfg(tiny_llm), HeadlineConfig(9)).version
    s = run_stage(store, first)
    assert s.items == 3 and s.ok == len(ok) == 2
    for i, r in latest(store, "headline").items():
        if i in ok:
            out = json.loads(r["output_json"])
            assert out["tags"] == ", ".join(json.loads(rows[i]["output_json"])["tags"])
            assert 1 <= len(out["headline"]) <= 12
        else:
            assert f"no tags result for {i!r}" in r["error"]


def test_upstream_version_is_newest_with_ok_or_named(specs, video_store: Store) -> None:
    _, headline = specs
    store = video_store
    seg = store.records("segments")[0].segment_id
    cfg = HeadlineConfig()
    assert headline.upstream_versions(store, cfg) == {"tags": None}
    store.append("stage_results", [StageResult(seg, "tags", "v1-a", "ok", output_json="{}")])
    # a later run of another configuration that only failed hides nothing
    store.append("stage_results", [StageResult(seg, "tags", "v1-b", "failed", error="down")])
    assert headline.upstream_versions(store, cfg) == {"tags": "v1-a"}
    store.append("stage_results", [StageResult(seg, "tags", "v1-c", "rejected",
                                               reason="no_tags")])
    assert headline.upstream_versions(store, cfg) == {"tags": "v1-a"}
    # a version with done results may be named; one with only failed results may not
    assert headline.upstream_versions(store, replace(cfg, tags_version="v1-c")) == {
        "tags": "v1-c"}
    with pytest.raises(ValidationError, match=r"tags version 'v1-b' has no ok or rejected"):
        headline.upstream_versions(store, replace(cfg, tags_version="v1-b"))


def test_a_spec_without_its_upstream_version_field_is_refused(specs) -> None:
    _, headline = specs
    with pytest.raises(ValidationError, match="lacks the upstream version field"):
        replace(headline, config=TagsConfig)


def test_the_command_of_a_spec_has_its_upstream_option(specs, video_store: Store) -> None:
    _, headline = specs

    app = typer.Typer()
    opt.registrar(headline)(app)
    app.command("noop")(lambda: None)  # two commands: the group keeps "headline" by name
    res = CliRunner().invoke(app, ["headline", str(video_store.root), "--model", "m",
                                   "--tags-version", "v9-none"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == [
        f"error: tags version 'v9-none' has no ok or rejected result in {video_store.root}: "
        "expected one of (none: run `prevad curate tags` first)"]
