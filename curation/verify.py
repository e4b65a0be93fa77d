"""Verify stage: is the description consistent with the video?

Two signals per item, both stored in the output:

- a vision-language model reads the frames and the description (prompt ``prompts/verify.md``)
  and answers a ``verdict`` (consistent / partially_consistent / inconsistent), a ``score`` in
  [0, 1] and the ``unsupported_claims``;
- CLIP image-text similarity between the frames and the description, from the image encoder
  LaGoVAD uses (:mod:`lagovad.image_encoder`) and its text tower: cosine similarity per frame,
  ``clip_mean`` and ``clip_max`` over the frames (the text is cut to CLIP's 77 tokens).

Rejected (output kept): ``vlm_inconsistent``, ``vlm_score_below_threshold``,
``clip_below_threshold``, ``description_too_long``. Failed: no describe result yet, no
decodable frame, engine error, unparsable answer (raw text kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import typer

from curation import cli_options as opt
from curation.describe import failed, frame_requests, generate_some
from curation.engines import Engine
from curation.frames import FrameConfig
from curation.mllm import (
    EngineConfig,
    FrameSource,
    build_engine,
    default_input_table,
    items_of,
    load_prompt,
    prompt_path,
    render,
    stage_outputs,
)
from prevad import queries
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

NAME = "verify"
PROMPT = "verify"
CODE_VERSION = 1
VERDICTS = ("consistent", "partially_consistent", "inconsistent")


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    """Verify settings.

    Attributes:
        frames: frame sampling (the same as describe's shares its cached frames).
        min_score: items whose VLM score is below are rejected.
        min_clip_mean: items whose mean CLIP similarity is below are rejected (None: no check).
        clip_model: open_clip model name of the image encoder (None: no CLIP signal).
        clip_pretrained: its pretrained tag or checkpoint file (None: random weights, tests).
        max_description_chars: longer descriptions are rejected without a model call.
        max_claims: most unsupported claims in an answer.
        max_claim_chars: longest unsupported claim (characters).
    """

    frames: FrameConfig = field(default_factory=FrameConfig)
    min_score: float = 0.5
    min_clip_mean: float | None = 0.2
    clip_model: str | None = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    max_description_chars: int = 4000
    max_claims: int = 10
    max_claim_chars: int = 200


def schema(cfg: VerifyConfig | None = None) -> dict[str, Any]:
    """The VLM answer's JSON schema."""
    cfg = cfg or VerifyConfig()
    return {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": list(VERDICTS)},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "unsupported_claims": {"type": "array", "maxItems": cfg.max_claims,
                                   "items": {"type": "string", "maxLength": cfg.max_claim_chars}},
        },
        "required": ["verdict", "score", "unsupported_claims"],
        "additionalProperties": False,
    }


class ClipScorer:
    """Frame-description cosine similarity with LaGoVAD's CLIP image encoder and text tower."""

    def __init__(self, name: str, pretrained: str | None, device: str = "auto") -> None:
        """Load the open_clip model (see :func:`lagovad.image_encoder.load_image_encoder`)."""
        import open_clip

        from lagovad.image_encoder import load_image_encoder

        self.encoder = load_image_encoder(name, pretrained,
                                          device=None if device == "auto" else device)
        self.tokenizer = open_clip.get_tokenizer(name)
        self.model_id = self.encoder.model_id

    def similarity(self, frames: np.ndarray, text: str) -> tuple[float, float]:
        """(mean, max) over frames of the cosine similarity with ``text``."""
        import torch
        from PIL import Image

        h, w = self.encoder.image_size
        if frames.shape[1:3] != (h, w):
            frames = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC))
                               for f in frames])
        img = torch.from_numpy(self.encoder.encode(frames)).float()
        with torch.inference_mode():
            tokens = self.tokenizer([text]).to(self.encoder.device)
            txt = self.encoder.model.encode_text(tokens).float().cpu()
        sims = torch.nn.functional.normalize(img, dim=-1) @ \
            torch.nn.functional.normalize(txt, dim=-1).T
        sims = sims.squeeze(-1)
        return float(sims.mean()), float(sims.max())


def decide(verdict: str, score: float, clip_mean: float | None,
           cfg: VerifyConfig) -> str | None:
    """The rejection reason for a verification (None: the item passes)."""
    if verdict == "inconsistent":
        return "vlm_inconsistent"
    if not 0.0 <= score <= 1.0 or score < cfg.min_score:
        return "vlm_score_below_threshold"
    if cfg.min_clip_mean is not None and clip_mean is not None and clip_mean < cfg.min_clip_mean:
        return "clip_below_threshold"
    return None


def make_stage(store: Store, ecfg: EngineConfig, cfg: VerifyConfig | None = None, *,
               engine: Engine | None = None, clip: ClipScorer | None = None,
               input_table: str | None = None) -> Stage:
    """The verify stage on ``store`` (reads each item's latest ``describe`` output).

    Args:
        store: the store.
        ecfg: engine and model (a vision-language model).
        cfg: thresholds, frames and CLIP model.
        engine: an already built engine (else built from ``ecfg``).
        clip: an already loaded CLIP scorer (else loaded from ``cfg`` unless clip_model is None).
        input_table: "segments" or "videos" (default: segments when there are any).
    """
    cfg = cfg or VerifyConfig()
    table = input_table or default_input_table(store)
    sch = schema(cfg)
    template = load_prompt(PROMPT)
    source = FrameSource(store, cfg.frames)
    eng = engine or build_engine(ecfg, store, vision=True, frames=cfg.frames.n)
    if clip is None and cfg.clip_model is not None:
        clip = ClipScorer(cfg.clip_model, cfg.clip_pretrained, ecfg.device)

    def process(rows: list[dict[str, Any]]) -> list[ItemResult]:
        items = items_of(store, table, rows)
        described = stage_outputs(store, "describe", [it.item_id for it in items])
        results: list[ItemResult | None] = [None] * len(items)
        todo = []
        for i, it in enumerate(items):
            desc = described.get(it.item_id, {}).get("description")
            if not isinstance(desc, str) or not desc:
                results[i] = Failed(f"no describe result for {it.item_id!r}: run "
                                    "`prevad curate describe` first")
            elif len(desc) > cfg.max_description_chars:
                results[i] = Rejected("description_too_long",
                                      {"video_id": it.video_id, "segment_id": it.segment_id,
                                       "chars": len(desc)})
            else:
                todo.append((i, it, desc))
        reqs, errors = frame_requests([t[1] for t in todo], source,
                                      [render(template, description=t[2]) for t in todo],
                                      sch, ecfg, NAME)
        for (i, it, desc), err, req, gen in zip(todo, errors, reqs, generate_some(eng, reqs),
                                                strict=True):
            if gen is None:
                results[i] = Failed(err or "no request")
                continue
            if not gen.ok:
                results[i] = failed(gen)
                continue
            ans = gen.parsed
            clip_mean = clip_max = None
            if clip is not None and req is not None:
                clip_mean, clip_max = clip.similarity(req.frames, desc)
            output = {
                "video_id": it.video_id, "segment_id": it.segment_id,
                "verdict": ans.get("verdict"), "score": ans.get("score"),
                "unsupported_claims": ans.get("unsupported_claims") or [],
                "clip_mean": clip_mean, "clip_max": clip_max,
                "clip_model": clip.model_id if clip is not None else None,
                "model": eng.model_id, "engine": eng.kind, "cached": gen.cached,
            }
            if ans.get("verdict") not in VERDICTS or not isinstance(ans.get("score"), int | float):
                results[i] = Failed(f"answer outside the schema: {gen.text[:200]!r}",
                                    {"raw": gen.text})
                continue
            reason = decide(ans["verdict"], float(ans["score"]), clip_mean, cfg)
            results[i] = Rejected(reason, output) if reason else Ok(output=output)
        return [r for r in results if r is not None]

    version = stage_version(
        NAME,
        {**ecfg.version_params(), "frames": [cfg.frames.n, cfg.frames.size],
         "min_score": cfg.min_score, "min_clip_mean": cfg.min_clip_mean,
         "clip": [cfg.clip_model, cfg.clip_pretrained],
         "max_chars": [cfg.max_description_chars, cfg.max_claims, cfg.max_claim_chars],
         "input": table,
         # the describe outputs it reads: a new describe version re-runs verify
         "upstream": queries.ok_versions(store, "describe")},
        files=[prompt_path(PROMPT)], code_version=CODE_VERSION,
    )
    return Stage(NAME, version, table, process, batch_size=ecfg.batch_size)


def run(store: Store, ecfg: EngineConfig, cfg: VerifyConfig | None = None, *,
        limit: int | None = None, progress: bool = False) -> StageSummary:
    """Build and run the verify stage; returns its summary."""
    return run_stage(store, make_stage(store, ecfg, cfg), limit=limit, progress=progress)


def register(app: typer.Typer) -> None:
    """Add ``prevad curate verify``."""

    @opt.model_stage_command(app, NAME, run)
    def verify(
        frames: int = opt.FRAMES,
        frame_size: int = opt.FRAME_SIZE,
        min_score: float = typer.Option(0.5, help="Reject items whose VLM score is below."),
        min_clip_mean: float = typer.Option(
            0.2, help="Reject items whose mean CLIP similarity is below (negative: no check)."),
        clip_model: str = typer.Option("ViT-B-16", help="open_clip model ('none': no CLIP)."),
        clip_pretrained: str = typer.Option(
            "openai", help="open_clip pretrained tag or checkpoint file ('none': random)."),
    ) -> VerifyConfig:
        """VLM consistency check of each description, plus CLIP image-text similarity."""
        return VerifyConfig(
            FrameConfig(frames, frame_size), min_score,
            None if min_clip_mean < 0 else min_clip_mean,
            None if clip_model == "none" else clip_model,
            None if clip_pretrained == "none" else clip_pretrained,
        )
