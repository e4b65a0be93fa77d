"""Describe stage: a multimodal LLM writes a detailed description of each kept segment.

Input: ``segments`` (kept by cleaning) when the store has any, else ``videos``. Each item's
frames (N uniform frames of its span, decoded once and cached) go to the engine with the prompt
``prompts/describe.md``; the answer is constrained to :func:`schema`. Output (the stage result's
``output_json``): ``video_id``, ``segment_id``, ``description``, ``model``, ``engine``,
``frames``, token counts. Rejected: ``description_too_short`` / ``description_too_long``
(outside ``min_chars``..``max_chars``, only possible when an engine ignored the schema). Failed:
no decodable frame, engine error, unparsable answer (raw text kept in ``output.raw``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer

from curation import cli_options as opt
from curation.engines import Engine, Generation, Request
from curation.frames import FrameConfig, FrameError
from curation.mllm import (
    EngineConfig,
    FrameSource,
    Item,
    build_engine,
    default_input_table,
    items_of,
    load_prompt,
    prompt_path,
)
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

NAME = "describe"
PROMPT = "describe"
CODE_VERSION = 1


@dataclass(frozen=True, slots=True)
class DescribeConfig:
    """Describe settings: frames and the accepted description length (characters)."""

    frames: FrameConfig = field(default_factory=FrameConfig)
    min_chars: int = 20
    max_chars: int = 2000


def schema(cfg: DescribeConfig) -> dict[str, Any]:
    """The answer's JSON schema: one description string of bounded length."""
    return {
        "type": "object",
        "properties": {"description": {"type": "string", "minLength": cfg.min_chars,
                                       "maxLength": cfg.max_chars}},
        "required": ["description"],
        "additionalProperties": False,
    }


def check_description(text: Any, min_chars: int, max_chars: int) -> str | None:
    """The rejection reason for a description (None when it is acceptable)."""
    if not isinstance(text, str) or len(text.strip()) < min_chars:
        return "description_too_short"
    if len(text) > max_chars:
        return "description_too_long"
    return None


def frame_requests(items: list[Item], source: FrameSource, prompts: list[str],
                   sch: dict[str, Any], ecfg: EngineConfig,
                   name: str) -> tuple[list[Request | None], list[str | None]]:
    """One request per item (its frames + its prompt), or the frame error of an item."""
    reqs: list[Request | None] = []
    errors: list[str | None] = []
    for it, prompt in zip(items, prompts, strict=True):
        try:
            frames = source.frames(it)
        except FrameError as exc:
            reqs.append(None)
            errors.append(f"frames: {exc}")
            continue
        reqs.append(Request(prompt, frames=frames, schema=sch, sampling=ecfg.sampling,
                            schema_name=name))
        errors.append(None)
    return reqs, errors


def generate_some(engine: Engine, reqs: list[Request | None]) -> list[Generation | None]:
    """Generations for the non-None requests, None elsewhere (one engine call)."""
    todo = [r for r in reqs if r is not None]
    gens = iter(engine.generate(todo)) if todo else iter(())
    return [next(gens) if r is not None else None for r in reqs]


def failed(gen: Generation) -> Failed:
    """A failed item from a failed generation, keeping the raw text."""
    return Failed(gen.error or "generation failed", output={"raw": gen.text})


def make_stage(store: Store, ecfg: EngineConfig, cfg: DescribeConfig | None = None, *,
               engine: Engine | None = None, input_table: str | None = None) -> Stage:
    """The describe stage on ``store``.

    Args:
        store: the store (its request and frame caches are used).
        ecfg: engine and model.
        cfg: frames and length bounds.
        engine: an already built engine (else built from ``ecfg``).
        input_table: "segments" or "videos" (default: segments when there are any).
    """
    cfg = cfg or DescribeConfig()
    table = input_table or default_input_table(store)
    sch = schema(cfg)
    prompt = load_prompt(PROMPT)
    source = FrameSource(store, cfg.frames)
    eng = engine or build_engine(ecfg, store, vision=True, frames=cfg.frames.n)

    def process(rows: list[dict[str, Any]]) -> list[ItemResult]:
        items = items_of(store, table, rows)
        reqs, errors = frame_requests(items, source, [prompt] * len(items), sch, ecfg,
                                      NAME)
        out: list[ItemResult] = []
        for it, err, gen in zip(items, errors, generate_some(eng, reqs), strict=True):
            if gen is None:
                out.append(Failed(err or "no request"))
            elif not gen.ok:
                out.append(failed(gen))
            else:
                desc = gen.parsed.get("description")
                output = {"video_id": it.video_id, "segment_id": it.segment_id,
                          "description": desc, "model": eng.model_id, "engine": eng.kind,
                          "frames": cfg.frames.n, "prompt_tokens": gen.prompt_tokens,
                          "completion_tokens": gen.completion_tokens, "cached": gen.cached}
                reason = check_description(desc, cfg.min_chars, cfg.max_chars)
                out.append(Rejected(reason, output) if reason else Ok(output=output))
        return out

    version = stage_version(
        NAME,
        {**ecfg.version_params(), "frames": [cfg.frames.n, cfg.frames.size],
         "chars": [cfg.min_chars, cfg.max_chars], "input": table},
        files=[prompt_path(PROMPT)], code_version=CODE_VERSION,
    )
    return Stage(NAME, version, table, process, batch_size=ecfg.batch_size)


def run(store: Store, ecfg: EngineConfig, cfg: DescribeConfig | None = None, *,
        limit: int | None = None, progress: bool = False) -> StageSummary:
    """Build and run the describe stage; returns its summary."""
    return run_stage(store, make_stage(store, ecfg, cfg), limit=limit, progress=progress)


def register(app: typer.Typer) -> None:
    """Add ``prevad curate describe``."""

    @opt.model_stage_command(app, NAME, run)
    def describe(
        frames: int = opt.FRAMES,
        frame_size: int = opt.FRAME_SIZE,
        min_chars: int = typer.Option(20, help="Shorter descriptions are rejected."),
        max_chars: int = typer.Option(2000, help="Longer descriptions are rejected."),
    ) -> DescribeConfig:
        """MLLM description of each kept segment (or video)."""
        return DescribeConfig(FrameConfig(frames, frame_size), min_chars, max_chars)
