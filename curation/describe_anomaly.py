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

from typing import Any

from curation import cli_options
from curation.describe import DescribeConfig, check_description, schema
from curation.model_stage import Answer, Context, ModelStage, Work
from prevad import taxonomy
from prevad.records import Annotation, make_id
from prevad.stage import ItemResult, Ok, Rejected

NAME = "describe-anomaly"
PROMPT = "describe_anomaly"
#: Frames and the accepted description length: the same settings as describe's.
DescribeAnomalyConfig = DescribeConfig


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


def ask(ctx: Context, work: Work) -> dict[str, Any] | ItemResult:
    """Human PreVAD anomalies only; the prompt names their category."""
    r = work.row
    if r["annotator_kind"] != "human" or r["dataset"] != "prevad":
        return Rejected("not_human_prevad")
    if r["category"] == taxonomy.NORMAL:
        return Rejected("normal_annotation")
    return {"category": r["category"], "top_level": taxonomy.top_level(r["category"])}


def read(ctx: Context, work: Work, ans: Answer) -> ItemResult:
    """The description, stored with a model annotation beside the human one."""
    r = work.row
    desc = ans.parsed.get("description")
    output = {"annotation_id": r["annotation_id"], "video_id": r["video_id"],
              "category": r["category"], "description": desc, "model": ctx.model,
              "engine": ctx.engine, "cached": ans.cached}
    reason = check_description(desc, ctx.cfg.min_chars, ctx.cfg.max_chars)
    if reason:
        return Rejected(reason, output)
    ann = model_annotation(r, desc, ctx.model, ctx.version)
    output["model_annotation_id"] = ann.annotation_id
    return Ok(outputs={"annotations": [ann]}, output=output)


SPEC = ModelStage(
    NAME, PROMPT, DescribeAnomalyConfig, schema, read=read, ask=ask,
    params=lambda cfg: {"chars": [cfg.min_chars, cfg.max_chars]},
    input_table="annotations", schema_name="description",
    help="MLLM description of each human-labelled PreVAD anomaly, prompted with its category.",
    # 2: an annotation's video_id is a clip id (D1): its frames come from the clip's span of
    # the parent file (they failed for split clips)
    code_version=2,
)

make_stage, run, register = SPEC.stage, SPEC.run, cli_options.registrar(SPEC)
