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

It reads ONE describe version and (with ``require_verified``) ONE verify version:
``describe_version`` / ``verify_version`` (``--describe-version`` / ``--verify-version``), else
the newest version of each with ok results (D3); both are part of judge's own version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curation import cli_options
from curation.model_stage import (
    UPSTREAM_HELP,
    Answer,
    Context,
    ModelStage,
    Work,
    missing_upstream,
    upstream_text,
)
from curation.options import check_bool, check_number, check_text, none_text, opt
from prevad import taxonomy
from prevad.errors import UnknownCategoryError
from prevad.stage import ItemResult, Ok, Rejected

NAME = "judge"
PROMPT = "judge"


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Judge settings.

    Attributes:
        require_verified: judge only items whose verify result is ok (items verify rejected
            are rejected here as ``verify_rejected``).
        max_description_chars: longer descriptions are rejected without a model call.
        max_reason_chars: the reason's maximum length in the schema.
        describe_version: the describe version whose descriptions are judged (None: the
            newest one with ok results).
        verify_version: the verify version whose verdicts gate the judge (None: the newest one
            with ok results).
    """

    require_verified: bool = opt(True, "Judge only items whose verify result is ok.")
    max_description_chars: int = opt(4000, "Longer descriptions are rejected without a model "
                                     "call.")
    max_reason_chars: int = opt(300, "Longest reason in an answer (characters).")
    describe_version: str | None = opt(None, UPSTREAM_HELP.format(stage="describe"),
                                       "--describe-version")
    verify_version: str | None = opt(None, UPSTREAM_HELP.format(stage="verify"),
                                     "--verify-version")

    def __post_init__(self) -> None:
        check_bool(self, "require_verified")
        for name in ("max_description_chars", "max_reason_chars"):
            check_number(self, name, integer=True, minimum=1, strict=False)
        for name in ("describe_version", "verify_version"):
            none_text(self, name)
            check_text(self, name)


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


def reads(cfg: JudgeConfig) -> tuple[str, ...]:
    """The upstream stages it reads: describe, and verify when it requires verified items."""
    return ("describe", "verify") if cfg.require_verified else ("describe",)


def ask(ctx: Context, work: Work) -> dict[str, Any] | ItemResult:
    """The description to judge, once describe (and verify) passed the item."""
    desc = upstream_text(work, "describe", "description")
    if desc is None:
        return missing_upstream(work, "describe", ctx)
    if ctx.cfg.require_verified:
        v = work.upstream["verify"]
        if v is None or v.status == "failed":
            return missing_upstream(work, "verify", ctx, " (or --no-require-verified)")
        if v.status == "rejected":
            return Rejected("verify_rejected", {**work.ids(), "verify_reason": v.reason})
    if len(desc) > ctx.cfg.max_description_chars:
        return Rejected("description_too_long", {**work.ids(), "chars": len(desc)})
    return {"description": desc}


def read(ctx: Context, work: Work, ans: Answer) -> ItemResult:
    """The judgement, normalised to the taxonomy (raw text kept when it is rejected)."""
    fields, reason = interpret(ans.parsed)
    output = {**work.ids(), **fields, "model": ctx.model, "engine": ctx.engine,
              "cached": ans.cached, "description": ans.fields["description"]}
    if reason:
        output["raw"] = ans.text
    return Rejected(reason, output) if reason else Ok(output=output)


SPEC = ModelStage(
    NAME, PROMPT, JudgeConfig, schema, read=read, ask=ask, vision=False,
    params=lambda cfg: {"require_verified": cfg.require_verified,
                        "max_chars": [cfg.max_description_chars, cfg.max_reason_chars]},
    upstream=("describe", "verify"), reads=reads,
    fixed_fields=lambda: {"taxonomy": taxonomy_text()},
    help="LLM anomaly judgement (taxonomy category, confidence, reason) of each clip from its "
    "description.",
    # 2: reads one describe and one verify version (D3), which are in the version, instead of
    # the latest describe output and verify status of any version; 3: items are the clips of
    # the `clips` view (D1)
    code_version=3,
)

make_stage, run, register = SPEC.stage, SPEC.run, cli_options.registrar(SPEC)
