"""The engine protocol: requests in, generations out, one call per batch.

A :class:`Request` is a chat (system + user text), optional frames (uint8 RGB [N, H, W, 3]),
an optional JSON schema the answer must follow, and :class:`Sampling` settings. An engine
returns one :class:`Generation` per request, in order, never raising for one bad request: a
request that fails carries ``error`` (and the raw ``text`` when there is one), the others go on.

Structured output: every engine constrains decoding to ``Request.schema`` (xgrammar in the
transformers engine, guided decoding in vLLM, ``response_format`` over HTTP);
:func:`parse_json` still checks what comes back, so an engine or server that ignores the schema
gives a failed generation with the raw text kept, never a silently wrong answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from prevad.errors import PrevadError


class EngineError(PrevadError):
    """An engine cannot be built or used as asked (missing model, missing processor, ...)."""


class EngineUnavailableError(EngineError):
    """The engine's optional package is not installed; the message says how to install it."""


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling settings (the same meaning in every engine).

    Attributes:
        max_tokens: most new tokens per answer.
        temperature: 0 = greedy.
        top_p: nucleus sampling mass (ignored when greedy).
        seed: sampling seed (answers are reproducible for a given seed).
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (part of the cache key)."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed}


@dataclass(frozen=True, slots=True)
class Request:
    """One generation request.

    Attributes:
        prompt: the user message text.
        system: optional system message.
        frames: uint8 RGB frames [N, H, W, 3] shown to the model as one video (None: text only).
        schema: JSON schema the answer must follow (None: free text).
        sampling: sampling settings.
        schema_name: a name for the schema (OpenAI ``response_format`` requires one).
    """

    prompt: str
    system: str | None = None
    frames: np.ndarray | None = None
    schema: dict[str, Any] | None = None
    sampling: Sampling = field(default_factory=Sampling)
    schema_name: str = "answer"

    def messages(self, video: bool = True) -> list[dict[str, Any]]:
        """Chat messages in the Hugging Face multimodal format (content parts).

        Args:
            video: put the frames in as one ``video`` part (else one ``image`` part per frame).
        """
        msgs: list[dict[str, Any]] = []
        if self.system:
            msgs.append({"role": "system", "content": [{"type": "text", "text": self.system}]})
        parts: list[dict[str, Any]] = []
        if self.frames is not None:
            parts += [{"type": "video"}] if video else [{"type": "image"}] * len(self.frames)
        parts.append({"type": "text", "text": self.prompt})
        msgs.append({"role": "user", "content": parts})
        return msgs


@dataclass(slots=True)
class Generation:
    """One answer.

    Attributes:
        text: the raw generated text ("" when nothing came back).
        parsed: the decoded JSON answer when the request had a schema and it parsed.
        error: why the request failed (None when it did not).
        cached: the answer came from the request cache, not the engine.
        prompt_tokens: prompt length in tokens when the engine reports it.
        completion_tokens: answer length in tokens when the engine reports it.
    """

    text: str = ""
    parsed: Any = None
    error: str | None = None
    cached: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def ok(self) -> bool:
        """True when the generation succeeded (and parsed, if a schema was asked for)."""
        return self.error is None


@runtime_checkable
class Engine(Protocol):
    """What a stage needs from an inference engine."""

    #: engine kind ("transformers", "vllm", "openai").
    kind: str
    #: the model as the engine names it (path or id); part of the cache key.
    model_id: str

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """One generation per request, same order; per-request failures are in ``error``."""
        ...


def parse_json(text: str, schema: dict[str, Any] | None) -> Generation:
    """Check a raw answer against the request's schema (top-level shape and required keys).

    Constrained decoding guarantees the full schema; this check catches engines or servers that
    ignored it (and answers cut off by ``max_tokens``).

    Returns:
        A :class:`Generation` with ``parsed`` set, or with ``error`` and the raw ``text`` kept.
    """
    if schema is None:
        return Generation(text=text, parsed=None)
    try:
        # strict=False: a constrained string may contain raw control bytes the model picked.
        value = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        return Generation(text=text, error=f"answer is not valid JSON ({exc.msg} at char "
                          f"{exc.pos}): {text[:200]!r}")
    if schema.get("type") == "object":
        if not isinstance(value, dict):
            return Generation(text=text, error=f"answer is JSON but not an object: {text[:200]!r}")
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            return Generation(text=text, error=f"answer lacks required keys {missing}: "
                              f"{text[:200]!r}")
    return Generation(text=text, parsed=value)


def frames_digest(frames: np.ndarray | None) -> str | None:
    """sha256 of the frames' shape and bytes (part of the cache key)."""
    if frames is None:
        return None
    a = np.ascontiguousarray(frames)
    h = hashlib.sha256(json.dumps([list(a.shape), str(a.dtype)]).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def request_key(kind: str, model_id: str, req: Request) -> str:
    """Cache key: sha256 of (engine, model, prompt, system, frames, schema, sampling)."""
    payload = {
        "engine": kind, "model": model_id, "prompt": req.prompt, "system": req.system,
        "frames": frames_digest(req.frames), "schema": req.schema,
        "sampling": req.sampling.as_dict(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
