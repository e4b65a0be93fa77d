"""Describe-anomaly stage: an MLLM describes the anomaly a human annotator labelled.

Input: ``annotations`` rows with ``annotator_kind='human'`` and ``dataset='prevad'`` (other rows
are rejected as ``not_human_prevad``; Normal ones as ``normal_annotation``). The frames come from
the annotation's video, narrowed to its spans (first start to last end) when the video's
duration is known; the prompt (``prompts/describe_anomaly.md``) names the human category and its
top-level class. The description is stored as the stage output and as a model
:class:`~prevad.records.Annotation` (same video, category, flag, spans and split as the human
one; ``annotator = "describe-anomaly:<model>"``, id derived from the human annotation id and the
stage version) so it can be exported and reviewed like any annotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer

from curation import cli_options as opt
from curation.describe import check_description, failed, frame_requests, generate_some
from curation.describe import schema as describe_schema
from curation.engines import Engine
from curation.frames import FrameConfig
from curation.mllm import (
    EngineConfig,
    FrameSource,
    build_engine,
    items_of,
    load_prompt,
    prompt_path,
    render,
)
from prevad import taxonomy
from prevad.records import Annotation, make_id
from prevad.stage import (
    Failed,
    ItemResult,
    Ok,
    Rejected,
    Stage,
    StageSummary,
    run_stage,
    stage_version,
)
from prevad.store import Store

NAME = "describe-anomaly"
PROMPT = "describe_anomaly"
CODE_VERSION = 1


@dataclass(frozen=True, slots=True)
class DescribeAnomalyConfig:
    """Frames and the accepted description length (characters)."""

    frames: FrameConfig = field(default_factory=FrameConfig)
    min_chars: int = 20
    max_chars: int = 2000


def model_annotation(human: dict[str, Any], description: str, model: str,
                     version: str) -> Annotation:
    """The model annotation carrying a generated description of a human annotation."""
    return Annotation(
        annotation_id=make_id(NAME, human["annotation_id"], version),
        video_id=human["video_id"], dataset="prevad", annotator_kind="model",
        annotator=f"{NAME}:{model}", category=human["category"],
        is_anomaly=bool(human["is_anomaly"]), description=description,
        spans=human.get("spans") or [], split=human["split"],
    )


def make_stage(store: Store, ecfg: EngineConfig, cfg: DescribeAnomalyConfig | None = None, *,
               engine: Engine | None = None) -> Stage:
    """The describe-anomaly stage on ``store`` (input: ``annotations``).

    Args:
        store: the store.
        ecfg: engine and model (a multimodal LLM).
        cfg: frames and length bounds.
        engine: an already built engine (else built from ``ecfg``).
    """
    cfg = cfg or DescribeAnomalyConfig()
    from curation.describe import DescribeConfig

    sch = describe_schema(DescribeConfig(cfg.frames, cfg.min_chars, cfg.max_chars))
    template = load_prompt(PROMPT)
    source = FrameSource(store, cfg.frames)
    eng = engine or build_engine(ecfg, store, vision=True, frames=cfg.frames.n)
    version = stage_version(
        NAME,
        {**ecfg.version_params(), "frames": [cfg.frames.n, cfg.frames.size],
         "chars": [cfg.min_chars, cfg.max_chars]},
        files=[prompt_path(PROMPT)], code_version=CODE_VERSION,
    )

    def process(rows: list[dict[str, Any]]) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(rows)
        todo = []
        for i, r in enumerate(rows):
            if r["annotator_kind"] != "human" or r["dataset"] != "prevad":
                results[i] = Rejected("not_human_prevad")
            elif r["category"] == taxonomy.NORMAL:
                results[i] = Rejected("normal_annotation")
            else:
                todo.append(i)
        sub = [rows[i] for i in todo]
        items = items_of(store, "annotations", sub)
        prompts = [render(template, category=r["category"],
                          top_level=taxonomy.top_level(r["category"])) for r in sub]
        reqs, errors = frame_requests(items, source, prompts, sch, ecfg, "description")
        for i, r, err, gen in zip(todo, sub, errors, generate_some(eng, reqs), strict=True):
            if gen is None:
                results[i] = Failed(err or "no request")
                continue
            if not gen.ok:
                results[i] = failed(gen)
                continue
            desc = gen.parsed.get("description")
            output = {"annotation_id": r["annotation_id"], "video_id": r["video_id"],
                      "category": r["category"], "description": desc, "model": eng.model_id,
                      "engine": eng.kind, "cached": gen.cached}
            reason = check_description(desc, cfg.min_chars, cfg.max_chars)
            if reason:
                results[i] = Rejected(reason, output)
                continue
            ann = model_annotation(r, desc, eng.model_id, version)
            output["model_annotation_id"] = ann.annotation_id
            results[i] = Ok(outputs={"annotations": [ann]}, output=output)
        return [x for x in results if x is not None]

    return Stage(NAME, version, "annotations", process, batch_size=ecfg.batch_size)


def run(store: Store, ecfg: EngineConfig, cfg: DescribeAnomalyConfig | None = None, *,
        limit: int | None = None, progress: bool = False) -> StageSummary:
    """Build and run the describe-anomaly stage; returns its summary."""
    return run_stage(store, make_stage(store, ecfg, cfg), limit=limit, progress=progress)


def register(app: typer.Typer) -> None:
    """Add ``prevad curate describe-anomaly``."""

    @opt.model_stage_command(app, NAME, run)
    def describe_anomaly(
        frames: int = opt.FRAMES,
        frame_size: int = opt.FRAME_SIZE,
        min_chars: int = typer.Option(20, help="Shorter descriptions are rejected."),
        max_chars: int = typer.Option(2000, help="Longer descriptions are rejected."),
    ) -> DescribeAnomalyConfig:
        """MLLM description of each human-labelled PreVAD anomaly, prompted with its category."""
        return DescribeAnomalyConfig(FrameConfig(frames, frame_size), min_chars, max_chars)
