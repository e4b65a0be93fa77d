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

It reads the describe results of ONE describe version: ``describe_version`` (the CLI's
``--describe-version``), else the newest describe version with ok results (D3); that version is
part of verify's own version.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation import cli_options
from curation.frames import FrameConfig
from curation.mllm import EngineConfig
from curation.model_stage import (
    UPSTREAM_HELP,
    Answer,
    Context,
    ModelStage,
    Work,
    missing_upstream,
    upstream_text,
)
from curation.options import check_config, check_number, check_text, none_text, opt
from prevad.errors import PrevadError
from prevad.stage import Failed, ItemResult, Ok, Rejected

NAME = "verify"
PROMPT = "verify"
VERDICTS = ("consistent", "partially_consistent", "inconsistent")
#: Seconds the hub may take to accept a connection before CLIP weights count as unreachable.
HUB_PROBE_TIMEOUT_S = 3.0


class ClipWeightsError(PrevadError):
    """The CLIP weights verify needs are not on this machine and cannot be downloaded."""


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
        describe_version: the describe version whose descriptions are verified (None: the
            newest one with ok results).
    """

    frames: FrameConfig = opt(None, "Frames sampled from each clip.", factory=FrameConfig)
    min_score: float = opt(0.5, "Reject items whose VLM score is below.")
    min_clip_mean: float | None = opt(0.2, "Reject items whose mean CLIP similarity is below "
                                      "(negative: no check).")
    clip_model: str | None = opt("ViT-B-16", "open_clip model ('none': no CLIP signal).")
    clip_pretrained: str | None = opt("openai", "open_clip pretrained tag or checkpoint file "
                                      "('none': random weights).")
    max_description_chars: int = opt(4000, "Longer descriptions are rejected without a model "
                                     "call.")
    max_claims: int = opt(10, "Most unsupported claims in an answer.")
    max_claim_chars: int = opt(200, "Longest unsupported claim (characters).")
    describe_version: str | None = opt(None, UPSTREAM_HELP.format(stage="describe"),
                                       "--describe-version")

    def __post_init__(self) -> None:
        check_config(self, "frames", FrameConfig)
        check_number(self, "min_score", minimum=None)
        check_number(self, "min_clip_mean", minimum=None, optional=True)
        if self.min_clip_mean is not None and self.min_clip_mean < 0:
            object.__setattr__(self, "min_clip_mean", None)  # the CLI's "no check"
        for name in ("clip_model", "clip_pretrained", "describe_version"):
            none_text(self, name)
            check_text(self, name)
        for name in ("max_description_chars", "max_claims", "max_claim_chars"):
            check_number(self, name, integer=True, minimum=1, strict=False)


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


def check_clip_weights(name: str, pretrained: str | None) -> None:
    """Fail fast when the CLIP weights can only come from a network that is not there.

    Runs before any model is built: a pretrained tag whose weights are in neither the Hugging
    Face cache nor open_clip's download folder needs the hub; with ``HF_HUB_OFFLINE`` (or
    ``TRANSFORMERS_OFFLINE``) set, or when the hub does not accept a connection within
    :data:`HUB_PROBE_TIMEOUT_S`, that is one clear error instead of the hub client's retries.

    Raises:
        ClipWeightsError: the weights are not here and cannot be downloaded.
    """
    if pretrained is None or Path(pretrained).expanduser().is_file():
        return
    from open_clip.pretrained import get_pretrained_cfg

    from lagovad.text import register_open_clip_configs

    register_open_clip_configs()
    pcfg = get_pretrained_cfg(name, pretrained)
    if not pcfg or _cached_weights(pcfg):
        return  # an unknown tag is the loader's error to report (it lists the known tags)
    why = _offline_reason() or _hub_unreachable()
    if why:
        raise ClipWeightsError(
            f"the weights of CLIP model {name!r} (--clip-pretrained {pretrained!r}) are not in "
            f"the local cache and cannot be downloaded: {why}. Download them once with network "
            f"access, or pass --clip-pretrained /path/to/checkpoint, --clip-pretrained none "
            f"(random weights) or --clip-model none (no CLIP signal)")


def _cached_weights(pcfg: dict[str, Any]) -> bool:
    """Whether open_clip will find the tag's weights on disk (HF cache or its URL folder)."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import HF_WEIGHTS_NAME

    hub = str(pcfg.get("hf_hub", ""))
    if hub:
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", HF_WEIGHTS_NAME]
        if any(isinstance(try_to_load_from_cache(repo, n), str) for n in names):
            return True
    url = str(pcfg.get("url", ""))
    return bool(url) and (Path("~/.cache/clip").expanduser() / os.path.basename(url)).is_file()


def _offline_reason() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    return None


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (None when it accepts a connection)."""
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http"
                                                                else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"{host}:{port} is unreachable ({exc})"
    return None


class ClipScorer:
    """Frame-description cosine similarity with LaGoVAD's CLIP image encoder and text tower."""

    def __init__(self, name: str, pretrained: str | None, device: str = "auto") -> None:
        """Load the open_clip model (see :func:`lagovad.image_encoder.load_image_encoder`).

        Raises:
            ClipWeightsError: pretrained weights not here and not downloadable (checked first).
        """
        check_clip_weights(name, pretrained)
        import open_clip

        from lagovad.image_encoder import PretrainedWeightsUnavailable, load_image_encoder

        try:
            self.encoder = load_image_encoder(name, pretrained,
                                              device=None if device == "auto" else device)
        except PretrainedWeightsUnavailable as exc:
            raise ClipWeightsError(
                f"the weights of CLIP model {name!r} (--clip-pretrained {pretrained!r}) could "
                f"not be loaded: pass --clip-pretrained /path/to/checkpoint, or --clip-model "
                f"none (no CLIP signal) ({str(exc).rpartition('(')[2].rstrip(')')})") from exc
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


def tools(cfg: VerifyConfig, ecfg: EngineConfig, given: dict[str, Any]) -> dict[str, Any]:
    """The CLIP scorer: the one passed in (``clip=``), else loaded unless clip_model is None."""
    clip = given.get("clip")
    if clip is None and cfg.clip_model is not None:
        clip = ClipScorer(cfg.clip_model, cfg.clip_pretrained, ecfg.device)
    return {"clip": clip}


def ask(ctx: Context, work: Work) -> dict[str, Any] | ItemResult:
    """The description to verify (too long ones are rejected without a model call)."""
    desc = upstream_text(work, "describe", "description")
    if desc is None:
        return missing_upstream(work, "describe", ctx)
    if len(desc) > ctx.cfg.max_description_chars:
        return Rejected("description_too_long", {**work.ids(), "chars": len(desc)})
    return {"description": desc}


def read(ctx: Context, work: Work, ans: Answer) -> ItemResult:
    """The VLM verdict and the CLIP similarity -> kept, or rejected with the first reason."""
    clip, parsed = ctx.tools["clip"], ans.parsed
    clip_mean = clip_max = None
    if clip is not None and ans.frames is not None:
        clip_mean, clip_max = clip.similarity(ans.frames, ans.fields["description"])
    output = {
        **work.ids(), "verdict": parsed.get("verdict"), "score": parsed.get("score"),
        "unsupported_claims": parsed.get("unsupported_claims") or [],
        "clip_mean": clip_mean, "clip_max": clip_max,
        "clip_model": clip.model_id if clip is not None else None,
        "model": ctx.model, "engine": ctx.engine, "cached": ans.cached,
    }
    if parsed.get("verdict") not in VERDICTS or not isinstance(parsed.get("score"), int | float):
        return Failed(f"answer outside the schema: {ans.text[:200]!r}", {"raw": ans.text})
    reason = decide(parsed["verdict"], float(parsed["score"]), clip_mean, ctx.cfg)
    return Rejected(reason, output) if reason else Ok(output=output)


SPEC = ModelStage(
    NAME, PROMPT, VerifyConfig, schema, read=read, ask=ask, tools=tools,
    params=lambda cfg: {
        "min_score": cfg.min_score, "min_clip_mean": cfg.min_clip_mean,
        "clip": [cfg.clip_model, cfg.clip_pretrained],
        "max_chars": [cfg.max_description_chars, cfg.max_claims, cfg.max_claim_chars]},
    upstream=("describe",),
    help="VLM consistency check of each clip's description, plus CLIP image-text similarity.",
    # 2: reads one describe version (D3), which is in the version, instead of the latest ok
    # describe output of every version; 3: items are the clips of the `clips` view (D1)
    code_version=3,
)

make_stage, run, register = SPEC.stage, SPEC.run, cli_options.registrar(SPEC)
