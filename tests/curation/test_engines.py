"""Inference engines on tiny random-weight models (real generation paths, nothing faked)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from curation import describe, judge, verify
from curation.engines import (
    CachedEngine,
    EngineError,
    EngineUnavailableError,
    Request,
    RequestCache,
    Sampling,
    make_engine,
    parse_json,
    request_key,
)
from curation.engines.hf import TransformersEngine
from curation.engines.openai_http import build_body
from curation.engines.vllm_engine import build_prompt

#: a short reason keeps random-weight answers short (a random model fills strings to the limit).
JCFG = judge.JudgeConfig(max_reason_chars=10)
FAST = Sampling(max_tokens=80)  # room for 12 chars of up to 4 bytes each + JSON


def frames(seed: int, n: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 56, 56, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def vlm(tiny_vlm: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_vlm), device="cpu", batch_size=4, vision=True)


@pytest.fixture(scope="module")
def llm(tiny_llm: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_llm), device="cpu", batch_size=4)


def test_constrained_decoding_makes_random_weights_schema_valid(vlm: TransformersEngine) -> None:
    cfg = describe.DescribeConfig(min_chars=5, max_chars=12)
    sch = describe.schema(cfg)
    reqs = [Request("Describe the video.", frames=frames(i), schema=sch, sampling=FAST)
            for i in range(2)]
    gens = vlm.generate(reqs)
    assert len(gens) == 2
    for g in gens:
        assert g.ok, g.error
        jsonschema.validate(g.parsed, sch)
        assert g.completion_tokens and g.prompt_tokens
    # The same random model without the grammar does not write this JSON: the grammar does.
    free = vlm.generate([Request("Describe the video.", frames=frames(0),
                                 sampling=Sampling(max_tokens=20))])[0]
    assert not parse_json(free.text, sch).ok


def test_verify_schema_on_the_vlm(vlm: TransformersEngine) -> None:
    sch = verify.schema(verify.VerifyConfig(max_claims=2, max_claim_chars=8))
    gens = vlm.generate([Request("Check it.", frames=frames(i), schema=sch,
                                 sampling=Sampling(max_tokens=120)) for i in range(2)])
    for g in gens:
        assert g.ok, g.error
        jsonschema.validate(g.parsed, sch)


def test_judge_schema_on_the_text_llm(llm: TransformersEngine) -> None:
    sch = judge.schema(JCFG)
    gens = llm.generate([Request(f"Judge video {i}.", schema=sch,
                                 sampling=Sampling(max_tokens=120)) for i in range(4)])
    for g in gens:
        assert g.ok, g.error
        jsonschema.validate(g.parsed, sch)


@pytest.mark.slow
def test_batched_answers_equal_one_at_a_time(tiny_llm: Path) -> None:
    batched = TransformersEngine(str(tiny_llm), device="cpu", batch_size=4)
    single = TransformersEngine(str(tiny_llm), device="cpu", batch_size=1)
    sch = describe.schema(describe.DescribeConfig(min_chars=3, max_chars=30))
    # Prompts of different lengths: the batch is left-padded.
    reqs = [Request("x" * (1 + 7 * i), schema=sch, sampling=FAST) for i in range(4)]
    assert [g.text for g in batched.generate(reqs)] == [g.text for g in single.generate(reqs)]


def test_truncated_answer_is_a_failed_generation_with_raw_text(llm: TransformersEngine) -> None:
    sch = judge.schema()
    g = llm.generate([Request("Judge.", schema=sch, sampling=Sampling(max_tokens=3))])[0]
    assert not g.ok and "not valid JSON" in g.error
    assert g.text  # the raw text is kept


def test_missing_model_dir_and_uncached_hub_id(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        TransformersEngine(str(tmp_path / "nope"))
    with pytest.raises(EngineError, match="nothing is downloaded"):
        TransformersEngine("someone/not-a-cached-model-xyz")


def test_model_without_processor(tiny_vlm: Path, tiny_llm: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="vision-language"):
        TransformersEngine(str(tiny_llm), vision=True)
    stripped = tmp_path / "vlm-no-processor"
    shutil.copytree(tiny_vlm, stripped)
    (stripped / "processor_config.json").unlink()
    with pytest.raises(EngineError, match="processor"):
        TransformersEngine(str(stripped), vision=True)


def test_vllm_missing_gives_the_install_hint(tiny_vlm: Path) -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - only where vLLM is installed
        pytest.skip("vLLM is installed here")
    with pytest.raises(EngineUnavailableError, match=r"pip install 'lagovad\[vllm\]'"):
        make_engine("vllm", str(tiny_vlm), vision=True)


def test_vllm_prompt_carries_video_and_chat_template(vlm: TransformersEngine) -> None:
    req = Request("Describe.", frames=frames(1), schema=describe.schema(describe.DescribeConfig()))
    p = build_prompt(vlm.processor, req, video=True)
    assert "<|vision_start|><|video_pad|><|vision_end|>Describe." in p["prompt"]
    assert p["prompt"].endswith("<|im_start|>assistant\n")
    assert p["multi_modal_data"]["video"].shape == (4, 56, 56, 3)
    text = build_prompt(vlm.processor, Request("Only text."), video=True)
    assert "multi_modal_data" not in text and "<|video_pad|>" not in text["prompt"]


def test_openai_body_has_schema_and_frames() -> None:
    sch = judge.schema()
    body = build_body("m", Request("Judge.", system="sys", frames=frames(2, n=2), schema=sch,
                                   schema_name="judge"))
    assert body["response_format"]["json_schema"]["schema"] == sch
    assert body["response_format"]["json_schema"]["name"] == "judge"
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    jpeg = base64.b64decode(parts[0]["image_url"]["url"].split(",", 1)[1])
    assert Image.open(io.BytesIO(jpeg)).size == (56, 56)


def test_unknown_engine() -> None:
    with pytest.raises(EngineError, match="unknown engine 'tgi'"):
        make_engine("tgi", "m")


# ---------------------------------------------------------------------------- cache
@pytest.mark.slow
def test_cache_never_sends_a_finished_generation_again(llm: TransformersEngine,
                                                       tmp_path: Path) -> None:
    sch = judge.schema(JCFG)
    reqs = [Request(f"Judge {i}.", schema=sch, sampling=Sampling(max_tokens=120))
            for i in range(3)]
    eng = CachedEngine(llm, RequestCache(tmp_path / "c.sqlite"))
    first = eng.generate(reqs)
    assert eng.sent == 3 and all(g.ok for g in first)
    again = eng.generate(reqs + [Request("Judge 3.", schema=sch, sampling=Sampling(120))])
    assert eng.sent == 4 and eng.hits == 3
    assert [g.parsed for g in again[:3]] == [g.parsed for g in first]
    assert all(g.cached for g in again[:3]) and not again[3].cached
    # Another process sees the same entries.
    key = request_key(llm.kind, llm.model_id, reqs[0])
    code = ("import sys; from curation.engines.cache import RequestCache; "
            f"g = RequestCache({str(tmp_path / 'c.sqlite')!r}).get({key!r}); "
            "print(g.text if g else 'MISS')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert json.loads(out.stdout) == first[0].parsed


def test_cache_key_covers_every_input() -> None:
    base = Request("p", frames=frames(0), schema={"type": "object"}, sampling=Sampling(10))
    k = request_key("transformers", "m", base)
    variants = [
        request_key("openai", "m", base), request_key("transformers", "m2", base),
        request_key("transformers", "m", Request("q", frames=base.frames, schema=base.schema,
                                                 sampling=base.sampling)),
        request_key("transformers", "m", Request("p", frames=frames(1), schema=base.schema,
                                                 sampling=base.sampling)),
        request_key("transformers", "m", Request("p", frames=base.frames, schema=None,
                                                 sampling=base.sampling)),
        request_key("transformers", "m", Request("p", frames=base.frames, schema=base.schema,
                                                 sampling=Sampling(11))),
    ]
    assert k not in variants and len(set(variants)) == len(variants)


def test_failed_generations_are_not_cached(llm: TransformersEngine, tmp_path: Path) -> None:
    eng = CachedEngine(llm, RequestCache(tmp_path / "c.sqlite"))
    req = Request("Judge.", schema=judge.schema(), sampling=Sampling(max_tokens=3))
    assert not eng.generate([req])[0].ok
    assert not eng.generate([req])[0].ok
    assert eng.sent == 2 and len(eng.cache) == 0
