"""The transformers engine: a local model (directory or cached hub id), batched ``generate``.

Images and videos go through the model's own processor (its chat template places them);
structured output is enforced by xgrammar (the grammar library vLLM uses) as a logits processor,
so even a random-weight model can only produce schema-valid JSON. Nothing is downloaded:
everything is loaded with ``local_files_only=True``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curation.engines.base import EngineError, Generation, Request, parse_json

log = logging.getLogger(__name__)


def resolve_model_path(model: str) -> str:
    """A local directory as an absolute path, or a hub id as given.

    Raises:
        EngineError: ``model`` looks like a path (absolute, ``./``, ``~``) and is not a folder.
    """
    p = Path(model).expanduser()
    if p.is_dir():
        return str(p.resolve())
    # A hub id is "name" or "org/name"; anything else is meant as a folder.
    if p.exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise EngineError(f"model directory {model!r} does not exist (expected a folder with "
                          "config.json, or a Hugging Face hub id already in the local cache)")
    return model


def _dtype_kw(dtype: Any) -> dict[str, Any]:
    """``from_pretrained``'s dtype keyword: ``dtype`` since transformers 4.56, ``torch_dtype``
    before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


class TransformersEngine:
    """Batched generation with a transformers model on CPU or CUDA.

    Args:
        model: a local model directory or a hub id already in the local Hugging Face cache.
        device: "cpu", "cuda", "cuda:1", or "auto" (CUDA when available).
        batch_size: requests per ``generate`` call (left-padded batch).
        vision: the stage sends frames: the model must come with an image/video processor.
        dtype: torch dtype name; default bfloat16 on CUDA, float32 on CPU.

    Raises:
        EngineError: the model folder is missing, not in the cache, has no processor (when
            ``vision``), or cannot be loaded.
    """

    kind = "transformers"

    def __init__(self, model: str, *, device: str = "auto", batch_size: int = 8,
                 vision: bool = False, dtype: str | None = None) -> None:
        import torch

        self.model_id = resolve_model_path(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        dtype = dtype or ("bfloat16" if self.device.type == "cuda" else "float32")
        self.processor, self.model = self._load(vision, getattr(torch, dtype))
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        # Left padding: every row's answer starts right after its prompt.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.video = getattr(self.processor, "video_processor", None) is not None
        self._compiler: Any = None
        self._grammars: dict[str, Any] = {}

    # ------------------------------------------------------------------ loading
    def _load(self, vision: bool, dtype: Any) -> tuple[Any, Any]:
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
        )
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        try:
            config = AutoConfig.from_pretrained(self.model_id, local_files_only=True)
            processor = AutoProcessor.from_pretrained(self.model_id, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EngineError(
                f"cannot load model {self.model_id!r} from local files (nothing is downloaded): "
                f"{str(exc).splitlines()[0]}"
            ) from None
        multimodal = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        has_vision_proc = any(getattr(processor, a, None) is not None
                              for a in ("image_processor", "video_processor"))
        if vision and not (multimodal and has_vision_proc):
            what = "an image/video processor (processor_config.json / preprocessor_config.json)" \
                if multimodal else "a vision-language architecture"
            raise EngineError(
                f"model {self.model_id!r} ({config.model_type}) has no {what}: this stage sends "
                "video frames, so it needs a vision-language model saved with its processor"
            )
        cls = AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
        try:
            model = cls.from_pretrained(self.model_id, local_files_only=True, **_dtype_kw(dtype))
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot load weights of {self.model_id!r}: "
                              f"{str(exc).splitlines()[0]}") from None
        return processor, model.to(self.device).eval()

    # ------------------------------------------------------------------ grammar
    def _grammar(self, schema: dict[str, Any]) -> Any:
        """xgrammar's compiled grammar of a JSON schema (compiled once per schema)."""
        import xgrammar as xgr

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            if self._compiler is None:
                cfg = self.model.config
                vocab = getattr(getattr(cfg, "text_config", cfg), "vocab_size", None) \
                    or cfg.get_text_config().vocab_size
                eos = self.model.generation_config.eos_token_id
                eos = eos if eos is not None else self.tokenizer.eos_token_id
                stops = [eos] if isinstance(eos, int) else list(eos)
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab,
                                                          stop_token_ids=stops)
                self._compiler = xgr.GrammarCompiler(info)
            # No free whitespace: a random-weight model would otherwise fill max_tokens with it.
            # The schema text keeps its property order: xgrammar emits properties in that order.
            self._grammars[key] = self._compiler.compile_json_schema(json.dumps(schema),
                                                                     any_whitespace=False)
        return self._grammars[key]

    # ------------------------------------------------------------------ generation
    def _prompt(self, req: Request) -> str:
        msgs = req.messages(video=self.video)
        if req.frames is None:
            # Text-only chat templates expect plain string content.
            msgs = [{"role": m["role"], "content": m["content"][0]["text"]} for m in msgs]
        return self.processor.apply_chat_template(msgs, add_generation_prompt=True,
                                                  tokenize=False)

    def _inputs(self, reqs: Sequence[Request]) -> Any:
        texts = [self._prompt(r) for r in reqs]
        with_frames = [r.frames for r in reqs if r.frames is not None]
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt"}
        if with_frames and self.video:
            kwargs["videos"] = [list(f) for f in with_frames]
        elif with_frames:
            kwargs["images"] = [list(f) for f in with_frames]
        if self.processor is self.tokenizer:
            return self.tokenizer(texts, **kwargs).to(self.device)
        # BatchFeature.to casts only floating tensors (pixels) to the model's dtype (bf16 on GPU).
        return self.processor(text=texts, **kwargs).to(self.device, dtype=self.model.dtype)

    def _run(self, reqs: Sequence[Request]) -> list[Generation]:
        import torch
        import xgrammar as xgr

        s = reqs[0].sampling
        inputs = self._inputs(reqs)
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_tokens,
                                  "pad_token_id": self.tokenizer.pad_token_id}
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            torch.manual_seed(s.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if reqs[0].schema is not None:
            # A fresh processor per call: it keeps per-row matcher state.
            kwargs["logits_processor"] = [xgr.contrib.hf.LogitsProcessor(
                self._grammar(reqs[0].schema))]
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        start = inputs["input_ids"].shape[1]
        new = out[:, start:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        pad = self.tokenizer.pad_token_id
        gens = []
        for i, (req, text) in enumerate(zip(reqs, texts, strict=True)):
            g = parse_json(text, req.schema)
            g.prompt_tokens = int(inputs["attention_mask"][i].sum())
            g.completion_tokens = int((new[i] != pad).sum())
            gens.append(g)
        return gens

    def _run_isolated(self, reqs: Sequence[Request]) -> list[Generation]:
        """Run a batch; if it fails, run its requests one by one so one bad request fails alone."""
        try:
            return self._run(reqs)
        except Exception as exc:  # noqa: BLE001 - a request's error must not stop the others
            if len(reqs) == 1:
                return [Generation(error=f"{type(exc).__name__}: {exc}"[:1000])]
            log.warning("batch of %d failed (%s); retrying one by one", len(reqs), exc)
            return [g for r in reqs for g in self._run_isolated([r])]

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Answer requests in left-padded batches of ``batch_size``.

        Requests are grouped by (schema, sampling, with/without frames) since one ``generate``
        call shares its settings; results come back in the order of ``requests``.
        """
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            key = json.dumps([r.schema, r.sampling.as_dict(), r.frames is None], sort_keys=True)
            groups.setdefault(key, []).append(i)
        out: list[Generation | None] = [None] * len(requests)
        for idx in groups.values():
            for b in range(0, len(idx), self.batch_size):
                chunk = idx[b : b + self.batch_size]
                for i, g in zip(chunk, self._run_isolated([requests[i] for i in chunk]),
                                strict=True):
                    out[i] = g
        return [g for g in out if g is not None]
