"""Judge stage: a text-only LLM decides from the description whether the video is anomalous.

The prompt (``prompts/judge.md``) lists the PreVAD taxonomy; the answer is constrained to
:func:`schema` (category = one of the 36 names). The output (``stage_results.output_json``) is
what the annotation/review step reads::

    {"video_id": str, "segment_id": str | null, "anomaly": bool,
     "category": "<canonical taxonomy name or Normal>", "top_level": str | null,
     "confidence": float in [0, 1], "reason": str, "model": str, "engine": str,
     "description": str}

``top_level`` is the category's top-level class (itself for a top-level class; null for Normal);
``description`` is the describe output the judgement was made on.
Rejected (output kept): ``category_outside_taxonomy`` (never stored as a new category),
``anomaly_category_mismatch`` (anomaly with Normal, or no anomaly with an anomaly class),
``confidence_out_of_range``, ``verify_rejected`` (the item failed verification, when
``require_verified``), ``description_too_long``. Failed: no describe (or verify) result yet,
engine error, unparsable answer (raw text kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from curation import cli_options as opt
from curation.describe import failed, generate_some
from curation.engines import Engine, Request
from curation.mllm import (
    EngineConfig,
    build_engine,
    default_input_table,
    items_of,
    latest_statuses,
    load_prompt,
    prompt_path,
    render,
    stage_outputs,
)
from prevad import queries, taxonomy
from prevad.errors import UnknownCategoryError
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

NAME = "judge"
PROMPT = "judge"
CODE_VERSION = 1


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Judge settings.

    Attributes:
        require_verified: judge only items whose latest verify result is ok (items verify
            rejected are rejected here as ``verify_rejected``).
        max_description_chars: longer descriptions are rejected without a model call.
        max_reason_chars: the reason's maximum length in the schema.
    """

    require_verified: bool = True
    max_description_chars: int = 4000
    max_reason_chars: int = 300


def schema(cfg: JudgeConfig | None = None) -> dict[str, Any]:
    """The answer's JSON schema (category restricted to the taxonomy's names)."""
    cfg = cfg or JudgeConfig()
    return {
        "type": "object",
        "properties": {
            "anomaly": {"type": "boolean"},
            "category": {"type": "string", "enum": taxonomy.all_names()},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reason": {"type": "string", "minLength": 1, "maxLength": cfg.max_reason_chars},
        },
        "required": ["anomaly", "category", "confidence", "reason"],
        "additionalProperties": False,
    }


def taxonomy_text() -> str:
    """The taxonomy as prompt lines: ``- Top-level: sub, sub, ...``."""
    return "\n".join(f"- {top}: {', '.join(subs)}" for top, subs in taxonomy.HIERARCHY.items())


def interpret(ans: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Normalise a judge answer: (fields, rejection reason or None).

    The category is canonicalised (aliases such as "car accident" are accepted); a name outside
    the taxonomy, a flag that contradicts the category or a confidence outside [0, 1] is a
    rejection reason.
    """
    raw_cat = ans.get("category")
    anomaly = ans.get("anomaly")
    conf = ans.get("confidence")
    fields: dict[str, Any] = {"anomaly": anomaly, "category": raw_cat, "top_level": None,
                              "confidence": conf, "reason": ans.get("reason")}
    try:
        cat = taxonomy.canonical(raw_cat)
    except UnknownCategoryError:
        return fields, "category_outside_taxonomy"
    fields["category"] = cat
    fields["top_level"] = None if cat == taxonomy.NORMAL else taxonomy.top_level(cat)
    if not isinstance(anomaly, bool) or anomaly == (cat == taxonomy.NORMAL):
        return fields, "anomaly_category_mismatch"
    if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0 <= conf <= 1:
        return fields, "confidence_out_of_range"
    fields["confidence"] = float(conf)
    return fields, None


def make_stage(store: Store, ecfg: EngineConfig, cfg: JudgeConfig | None = None, *,
               engine: Engine | None = None, input_table: str | None = None) -> Stage:
    """The judge stage on ``store`` (reads the latest describe output, and verify status).

    Args:
        store: the store.
        ecfg: engine and model (a text LLM; no frames are sent).
        cfg: judge settings.
        engine: an already built engine (else built from ``ecfg``).
        input_table: "segments" or "videos" (default: segments when there are any).
    """
    cfg = cfg or JudgeConfig()
    table = input_table or default_input_table(store)
    sch = schema(cfg)
    template = render(load_prompt(PROMPT), taxonomy=taxonomy_text())
    eng = engine or build_engine(ecfg, store, vision=False)

    def process(rows: list[dict[str, Any]]) -> list[ItemResult]:
        items = items_of(store, table, rows)
        ids = [it.item_id for it in items]
        described = stage_outputs(store, "describe", ids)
        verified = latest_statuses(store, "verify", ids) if cfg.require_verified else {}
        results: list[ItemResult | None] = [None] * len(items)
        reqs: list[Request | None] = []
        descs: list[str | None] = []
        for i, it in enumerate(items):
            base = {"video_id": it.video_id, "segment_id": it.segment_id}
            desc = described.get(it.item_id, {}).get("description")
            descs.append(desc)
            v = verified.get(it.item_id)
            if not isinstance(desc, str) or not desc:
                results[i] = Failed(f"no describe result for {it.item_id!r}: run "
                                    "`prevad curate describe` first")
            elif cfg.require_verified and (v is None or v["status"] == "failed"):
                results[i] = Failed(f"no verify result for {it.item_id!r}: run "
                                    "`prevad curate verify` first (or --no-require-verified)")
            elif cfg.require_verified and v["status"] == "rejected":
                results[i] = Rejected("verify_rejected", {**base, "verify_reason": v["reason"]})
            elif len(desc) > cfg.max_description_chars:
                results[i] = Rejected("description_too_long", {**base, "chars": len(desc)})
            reqs.append(None if results[i] is not None else Request(
                render(template, description=desc), schema=sch, sampling=ecfg.sampling,
                schema_name=NAME))
        for i, (it, gen) in enumerate(zip(items, generate_some(eng, reqs), strict=True)):
            if gen is None:
                continue
            if not gen.ok:
                results[i] = failed(gen)
                continue
            fields, reason = interpret(gen.parsed)
            output = {"video_id": it.video_id, "segment_id": it.segment_id, **fields,
                      "model": eng.model_id, "engine": eng.kind, "cached": gen.cached,
                      "description": descs[i]}
            if reason:
                output["raw"] = gen.text
            results[i] = Rejected(reason, output) if reason else Ok(output=output)
        return [r for r in results if r is not None]

    version = stage_version(
        NAME,
        {**ecfg.version_params(), "require_verified": cfg.require_verified,
         "max_chars": [cfg.max_description_chars, cfg.max_reason_chars], "input": table,
         # the outputs it reads: a new describe (or verify) version re-runs the judge
         "upstream": [queries.ok_versions(store, "describe"),
                      queries.ok_versions(store, "verify") if cfg.require_verified else []]},
        files=[prompt_path(PROMPT)], code_version=CODE_VERSION,
    )
    return Stage(NAME, version, table, process, batch_size=ecfg.batch_size)


def run(store: Store, ecfg: EngineConfig, cfg: JudgeConfig | None = None, *,
        limit: int | None = None, progress: bool = False) -> StageSummary:
    """Build and run the judge stage; returns its summary."""
    return run_stage(store, make_stage(store, ecfg, cfg), limit=limit, progress=progress)


def register(app: typer.Typer) -> None:
    """Add ``prevad curate judge``."""

    @opt.model_stage_command(app, NAME, run)
    def judge(
        require_verified: bool = typer.Option(
            True, help="Judge only items whose latest verify result is ok."),
    ) -> JudgeConfig:
        """LLM anomaly judgement (taxonomy category, confidence, reason) from the description."""
        return JudgeConfig(require_verified)
