"""Tiny random-weight models from real architectures' configs, for tests and CPU benchmarks.

Nothing is downloaded: a byte-level BPE tokenizer is trained on a few sentences with the
``tokenizers`` library (every byte is in its alphabet, so any JSON text can be spelled), given
the Qwen2-VL special tokens and a Qwen2-style chat template, and saved with

- :func:`build_tiny_vlm`: a Qwen2-VL model (vision tower + language model) with its real
  processor (``Qwen2VLProcessor``: image processor, video processor, tokenizer, chat template);
- :func:`build_tiny_llm`: a text-only Qwen2 causal LM with the same tokenizer.

The weights are random: the output is noise, which is exactly what the constrained-decoding
tests need (the grammar, not the model, must make the output schema-valid).
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
)

#: Qwen2-VL's chat template (user/assistant turns, image and video placeholders).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "A man walks along a street at night while cars pass by.",
    "Two people fight in a parking lot and a crowd gathers.",
    "A car crashes into a wall; smoke rises from the engine.",
    "The video shows a kitchen where a pot catches fire.",
    '{"description": "a person falls", "verdict": "consistent", "score": 0.5}',
    '{"anomaly": true, "category": "Car Accident", "confidence": 0.9, "reason": "crash"}',
    "Normal Violence Robbery Fire Explosion Assault Riot Vandalism Mugging Collapse",
    "unsupported_claims consistent inconsistent partially_consistent true false null",
]


def build_tokenizer(vocab_size: int = 400):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with Qwen2-VL's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _text_kwargs(tok, vocab: int) -> dict:
    return {
        "vocab_size": vocab,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 2048,
        "bos_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def _vocab(tok) -> int:
    # Room for every id, rounded up as real checkpoints pad their embeddings.
    return (len(tok) + 63) // 64 * 64


def _save_generation_config(model, tok, path: Path) -> None:
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(path)


def build_tiny_vlm(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random Qwen2-VL model and its processor to ``path``; returns ``path``."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    path = Path(path)
    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = _text_kwargs(tok, _vocab(tok))
    # mrope sections (temporal, height, width) must sum to head_dim / 2 = 8.
    text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 3, 3],
                               "rope_theta": 10000.0}
    config = Qwen2VLConfig(
        text_config=text,
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2,
                       "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    _save_generation_config(model, tok, path)
    # Few pixels -> few visual tokens: 56x56 -> 4x4 patches -> 4 tokens per frame pair.
    pixels = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}
    proc = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=CHAT_TEMPLATE,
    )
    proc.save_pretrained(path)
    return path


def build_tiny_llm(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random text-only Qwen2 causal LM and its tokenizer to ``path``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tok = build_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**_text_kwargs(tok, _vocab(tok)))).eval()
    _save_generation_config(model, tok, path)
    tok.save_pretrained(path)
    return path
