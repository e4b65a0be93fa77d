"""Describe stage: a multimodal LLM writes a detailed description of each clip.

Input: the catalog's ``clips`` view (docs/DECISIONS.md, D1): the clips each video's latest clean
decision kept, and every video clean never split as a clip of itself. Each item's
frames (N uniform frames of its span, decoded once and cached) go to the engine with the prompt
``prompts/describe.md``; the answer is constrained to :func:`schema`. Output (the stage result's
``output_json``): ``video_id``, ``segment_id``, ``description``, ``model``, ``engine``,
``frames``, token counts. Rejected: ``description_too_short`` / ``description_too_long``
(outside ``min_chars``..``max_chars``, only possible when an engine ignored the schema). Failed:
no decodable frame, engine error, unparsable answer (raw text kept in ``output.raw``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curation import cli_options
from curation.frames import FrameConfig
from curation.model_stage import Answer, Context, ModelStage, Work
from curation.options import check_config, check_number, opt
from prevad.errors import ValidationError
from prevad.stage import ItemResult, Ok, Rejected

NAME = "describe"
PROMPT = "describe"


@dataclass(frozen=True, slots=True)
class DescribeConfig:
    """Describe settings: frames and the accepted description length (characters).

    Raises:
        ValidationError: a length that is not a whole number, or min above max.
    """

    frames: FrameConfig = opt(None, "Frames sampled from each clip.", factory=FrameConfig)
    min_chars: int = opt(20, "Shorter descriptions are rejected.")
    max_chars: int = opt(2000, "Longer descriptions are rejected.")

    def __post_init__(self) -> None:
        check_config(self, "frames", FrameConfig)
        check_number(self, "min_chars", integer=True, strict=False)
        check_number(self, "max_chars", integer=True, minimum=1, strict=False)
        if self.min_chars > self.max_chars:
            raise ValidationError(f"--min-chars ({self.min_chars}) must be at most --max-chars "
                                  f"({self.max_chars})")


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


def read(ctx: Context, work: Work, ans: Answer) -> ItemResult:
    """The description, kept when its length is within bounds."""
    desc = ans.parsed.get("description")
    output = {**work.ids(), "description": desc, "model": ctx.model, "engine": ctx.engine,
              "frames": ctx.cfg.frames.n, "prompt_tokens": ans.prompt_tokens,
              "completion_tokens": ans.completion_tokens, "cached": ans.cached}
    reason = check_description(desc, ctx.cfg.min_chars, ctx.cfg.max_chars)
    return Rejected(reason, output) if reason else Ok(output=output)


SPEC = ModelStage(
    NAME, PROMPT, DescribeConfig, schema, read=read,
    params=lambda cfg: {"chars": [cfg.min_chars, cfg.max_chars]},
    help="MLLM description of each clip (a never-split video is a clip of itself).",
    # 2: items are the clips of the catalog's `clips` view (D1): a split video's own row, the
    # clips of older clean decisions and a duplicate's clips are no longer items
    code_version=2,
)

make_stage, run, register = SPEC.stage, SPEC.run, cli_options.registrar(SPEC)
