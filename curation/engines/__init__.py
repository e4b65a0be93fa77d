"""Inference engines for the multimodal curation stages: one protocol, three implementations.

- ``transformers`` (:class:`~curation.engines.hf.TransformersEngine`): local models, CPU/CUDA,
  batched ``generate``, xgrammar-constrained JSON;
- ``vllm`` (:class:`~curation.engines.vllm_engine.VllmEngine`): vLLM offline, optional extra;
- ``openai`` (:class:`~curation.engines.openai_http.OpenAIEngine`): any OpenAI-compatible server.

:func:`make_engine` builds one by name; :class:`~curation.engines.cache.CachedEngine` puts the
persistent request cache in front of it.
"""

from __future__ import annotations

from typing import Any

from curation.engines.base import (
    Engine,
    EngineError,
    EngineUnavailableError,
    Generation,
    Request,
    Sampling,
    parse_json,
    request_key,
)
from curation.engines.cache import CachedEngine, RequestCache

ENGINES = ("transformers", "vllm", "openai")

__all__ = [
    "ENGINES", "CachedEngine", "Engine", "EngineError", "EngineUnavailableError", "Generation",
    "Request", "RequestCache", "Sampling", "make_engine", "parse_json", "request_key",
]


def make_engine(kind: str, model: str, *, vision: bool = False, device: str = "auto",
                batch_size: int = 8, frames: int = 8, base_url: str | None = None,
                api_key: str = "EMPTY", concurrency: int = 8, timeout: float = 120.0,
                max_retries: int = 2, **extra: Any) -> Engine:
    """Build an engine by name.

    Args:
        kind: "transformers", "vllm" or "openai".
        model: model directory / hub id (transformers, vllm) or served model name (openai).
        vision: the stage sends frames.
        device: transformers device ("auto", "cpu", "cuda").
        batch_size: transformers requests per ``generate`` call.
        frames: frames per request (vLLM's per-prompt image limit).
        base_url: the server's URL (openai).
        api_key: the server's key (openai).
        concurrency: requests in flight (openai).
        timeout: seconds per request (openai).
        max_retries: retries of transient errors (openai).
        **extra: passed to ``vllm.LLM`` (vllm only).

    Raises:
        EngineError: unknown kind, or the engine cannot be built.
        EngineUnavailableError: the engine's optional package is missing.
    """
    if kind == "transformers":
        from curation.engines.hf import TransformersEngine

        return TransformersEngine(model, device=device, batch_size=batch_size, vision=vision)
    if kind == "vllm":
        from curation.engines.vllm_engine import VllmEngine

        return VllmEngine(model, vision=vision, frames=frames, **extra)
    if kind == "openai":
        from curation.engines.openai_http import OpenAIEngine

        return OpenAIEngine(model, base_url=base_url or "", api_key=api_key,
                            concurrency=concurrency, timeout=timeout, max_retries=max_retries)
    raise EngineError(f"unknown engine {kind!r}: must be one of {', '.join(ENGINES)}")
