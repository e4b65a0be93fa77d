"""The OpenAI-compatible HTTP engine (``vllm serve``, ``transformers serve``, any such server).

Requests run concurrently (a thread pool of ``concurrency``), each with a timeout. Only
transient failures are retried, with exponential backoff: connection errors, timeouts, 408/409,
429 and 5xx answers. A 4xx answer (bad request, unknown model) fails the request at once.
Frames are sent as JPEG data URLs, one ``image_url`` part per frame (what every
OpenAI-compatible multimodal server accepts); the schema goes in ``response_format``
(``json_schema``), which vLLM enforces with guided decoding.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from curation.engines.base import (
    EngineError,
    EngineUnavailableError,
    Generation,
    Request,
    parse_json,
)

TRANSIENT_STATUS = frozenset({408, 409, 429})


def _jpeg_data_url(frame: np.ndarray, quality: int = 90) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def build_messages(req: Request) -> list[dict[str, Any]]:
    """OpenAI chat messages for a request (frames as ``image_url`` data URLs, then the text)."""
    msgs: list[dict[str, Any]] = []
    if req.system:
        msgs.append({"role": "system", "content": req.system})
    if req.frames is None:
        msgs.append({"role": "user", "content": req.prompt})
    else:
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": _jpeg_data_url(f)}} for f in req.frames
        ]
        parts.append({"type": "text", "text": req.prompt})
        msgs.append({"role": "user", "content": parts})
    return msgs


def build_body(model: str, req: Request) -> dict[str, Any]:
    """Keyword arguments of ``chat.completions.create`` for one request."""
    s = req.sampling
    body: dict[str, Any] = {
        "model": model, "messages": build_messages(req), "max_tokens": s.max_tokens,
        "temperature": s.temperature, "seed": s.seed,
    }
    if s.temperature > 0:
        body["top_p"] = s.top_p
    if req.schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": req.schema_name, "schema": req.schema, "strict": True},
        }
    return body


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: connection, timeout, 408/409/429 and 5xx."""
    import openai

    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in TRANSIENT_STATUS or exc.status_code >= 500
    return False


class OpenAIEngine:
    """Chat completions against an OpenAI-compatible server.

    Args:
        model: the model name the server serves.
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        api_key: the server's key ("EMPTY" for servers without one).
        concurrency: requests in flight at once.
        timeout: seconds per request attempt.
        max_retries: retries of a transient failure (0 = one attempt).
        backoff: first retry delay in seconds (doubled each retry).

    Raises:
        EngineUnavailableError: the ``openai`` package is not installed.
    """

    kind = "openai"

    def __init__(self, model: str, *, base_url: str, api_key: str = "EMPTY",
                 concurrency: int = 8, timeout: float = 120.0, max_retries: int = 2,
                 backoff: float = 0.5) -> None:
        try:
            import openai
        except ImportError:  # pragma: no cover - openai is a dependency
            raise EngineUnavailableError(
                "the openai engine needs the openai package: pip install openai") from None
        if not base_url:
            raise EngineError("the openai engine needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        self.model_id = model
        self.base_url = base_url
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff
        # The client's own retries are off: ours retry only transient errors, with our backoff.
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout,
                                    max_retries=0)

    def _one(self, req: Request) -> Generation:
        body = build_body(self.model_id, req)
        attempt = 0
        while True:
            try:
                resp = self.client.chat.completions.create(**body)
                break
            except Exception as exc:  # noqa: BLE001 - every error becomes this request's error
                if is_transient(exc) and attempt < self.max_retries:
                    time.sleep(self.backoff * 2**attempt)
                    attempt += 1
                    continue
                tries = f" after {attempt + 1} attempts" if attempt else ""
                return Generation(error=f"{type(exc).__name__}{tries}: {exc}"[:1000])
        if not resp.choices:
            return Generation(error="server returned no choices")
        text = resp.choices[0].message.content or ""
        gen = parse_json(text, req.schema)
        if resp.usage is not None:
            gen.prompt_tokens = resp.usage.prompt_tokens
            gen.completion_tokens = resp.usage.completion_tokens
        return gen

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Send the requests ``concurrency`` at a time; results in request order."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))
