"""The vLLM offline engine (optional: ``pip install '.[vllm]'``, needs a GPU).

All requests of a call go to ``LLM.generate`` at once, so vLLM batches them itself (continuous
batching). Prompts come from the model's own chat template (its Hugging Face processor, loaded
from local files); frames go in as the model's ``video`` multimodal input (or as images for
models without a video processor); the schema is enforced by vLLM's structured outputs
(xgrammar backend, the same library the transformers engine uses).

vLLM is imported lazily: the rest of the toolkit works without it, and asking for this engine
without it installed raises :class:`~curation.engines.base.EngineUnavailableError` with the
install command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from curation.engines.base import EngineUnavailableError, Generation, Request, parse_json
from curation.engines.hf import resolve_model_path

INSTALL_HINT = ("the vllm engine needs vLLM (Linux + NVIDIA GPU): pip install 'lagovad[vllm]' "
                "(or pip install vllm); use --engine transformers on CPU")


def import_vllm() -> Any:
    """The ``vllm`` module, or :class:`EngineUnavailableError` with the install hint."""
    try:
        import vllm
    except ImportError as exc:
        raise EngineUnavailableError(f"{INSTALL_HINT} ({exc})") from None
    return vllm


def build_prompt(processor: Any, req: Request, video: bool) -> dict[str, Any]:
    """vLLM prompt dict for a request: chat-templated text + ``multi_modal_data``.

    Args:
        processor: the model's Hugging Face processor (or tokenizer for text-only models).
        req: the request.
        video: pass the frames as one video (else as a list of images).
    """
    msgs = req.messages(video=video)
    if req.frames is None:
        msgs = [{"role": m["role"], "content": m["content"][0]["text"]} for m in msgs]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    prompt: dict[str, Any] = {"prompt": text}
    if req.frames is not None:
        prompt["multi_modal_data"] = (
            {"video": req.frames} if video else {"image": list(req.frames)}
        )
    return prompt


def sampling_params(vllm: Any, req: Request) -> Any:
    """``vllm.SamplingParams`` for a request, with the schema as structured output."""
    s = req.sampling
    kwargs: dict[str, Any] = {"max_tokens": s.max_tokens, "temperature": s.temperature,
                              "top_p": s.top_p if s.temperature > 0 else 1.0, "seed": s.seed}
    if req.schema is not None:
        sp = vllm.sampling_params
        if hasattr(sp, "StructuredOutputsParams"):  # vLLM >= 0.11
            kwargs["structured_outputs"] = sp.StructuredOutputsParams(json=req.schema)
        else:  # vLLM 0.6 - 0.10
            kwargs["guided_decoding"] = sp.GuidedDecodingParams(json=req.schema)
    return vllm.SamplingParams(**kwargs)


class VllmEngine:
    """Offline batched generation with ``vllm.LLM``.

    Args:
        model: a local model directory or a hub id in the local cache.
        vision: the stage sends frames (the video/image limits per prompt are set for it).
        frames: frames per request (for ``limit_mm_per_prompt`` when frames go as images).
        **llm_kwargs: passed to ``vllm.LLM`` (``tensor_parallel_size``, ``gpu_memory_utilization``,
            ``max_model_len``, ...).

    Raises:
        EngineUnavailableError: vLLM is not installed.
        EngineError: the model folder does not exist.
    """

    kind = "vllm"

    def __init__(self, model: str, *, vision: bool = False, frames: int = 8,
                 **llm_kwargs: Any) -> None:
        self.model_id = resolve_model_path(model)
        self._vllm = import_vllm()
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(self.model_id, local_files_only=True)
        self.video = getattr(self.processor, "video_processor", None) is not None
        if vision:
            limit = {"video": 1} if self.video else {"image": frames}
            llm_kwargs.setdefault("limit_mm_per_prompt", limit)
        self.llm = self._vllm.LLM(model=self.model_id, **llm_kwargs)

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """All requests in one ``LLM.generate`` call (vLLM schedules the batch)."""
        if not requests:
            return []
        prompts = [build_prompt(self.processor, r, self.video) for r in requests]
        params = [sampling_params(self._vllm, r) for r in requests]
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:  # noqa: BLE001 - one bad request: retry one by one
            if len(requests) == 1:
                return [Generation(error=f"{type(exc).__name__}: {exc}"[:1000])]
            return [g for r in requests for g in self.generate([r])]
        gens = []
        for req, out in zip(requests, outputs, strict=True):
            comp = out.outputs[0]
            g = parse_json(comp.text, req.schema)
            g.prompt_tokens = len(out.prompt_token_ids or [])
            g.completion_tokens = len(comp.token_ids)
            gens.append(g)
        return gens
