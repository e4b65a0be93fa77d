"""Corpus readers and the retrieve stage (dense, bm25, hybrid, clip) on real and small corpora."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from curation import corpora
from curation.common import CurationError
from curation.encoders import BM25, DenseEncoder, default_dense_model_dir
from curation.retrieve import DEFAULT_QUERIES, Settings, load_queries, retrieve
from prevad import taxonomy
from prevad.errors import MalformedFileError

SMALL = [
    ("v1", "a car crashes into another car on a highway"),
    ("v2", "a woman is cooking pasta in a kitchen"),
    ("v3", "a building is on fire and firefighters spray water"),
    ("v4", "a man plays the guitar on stage"),
    ("v5", "two men are fighting and punching each other in the street"),
    ("v6", "a cat sleeps on a sofa"),
]


@pytest.fixture
def msrvtt_csv(shared_dir: Path) -> Path:
    """The real MSR-VTT 1k-A caption CSV (1000 captions, CRLF)."""
    return shared_dir / "corpora" / "msrvtt_1kA_test.csv"


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    """A generic CSV corpus with ids, urls and spans."""
    p = tmp_path / "small.csv"
    lines = ["id,url,caption,start,end"] + [
        f"{i},https://example.org/{i}.mp4,{c},1,5" for i, c in SMALL]
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture(scope="session")
def tiny_dense_dir(tmp_path_factory) -> Path:
    """A tiny random BERT saved like a sentence-transformers folder (real tokenizer files)."""
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-dense")
    src = default_dense_model_dir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    (out / "1_Pooling").mkdir()
    shutil.copy(src / "1_Pooling" / "config.json", out / "1_Pooling" / "config.json")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    return out


class CountingEncoder:
    """Wraps an encoder and counts how many texts it embedded (to prove the cache works)."""

    def __init__(self, inner):
        self.inner, self.model_id, self.calls = inner, inner.model_id, []

    def encode(self, texts):
        self.calls.append(len(texts))
        return self.inner.encode(texts)


# ---------------------------------------------------------------------------- readers
def test_msrvtt_csv_real_file(msrvtt_csv):
    assert corpora.detect_layout(msrvtt_csv) == "msrvtt_csv"
    layout, caps = corpora.read_corpus(msrvtt_csv)
    assert len(caps) == 1000 and len({c.source_video_id for c in caps}) == 1000
    assert caps[0] == corpora.Caption("msrvtt", "video9770",
                                      "a person is connecting something to system")
    assert not any("\r" in c.caption for c in caps)


def test_msrvtt_json_and_vatex_layouts(tmp_path):
    info = {"videos": [{"video_id": "video0", "url": "https://www.youtube.com/watch?v=abc",
                        "start time": 137.72, "end time": 149.44, "category": 9}],
            "sentences": [{"video_id": "video0", "caption": "a car is shown", "sen_id": 0},
                          {"video_id": "video0", "caption": "a red car drives", "sen_id": 1}]}
    p = tmp_path / "videodatainfo.json"
    p.write_text(json.dumps(info))
    layout, caps = corpora.read_corpus(p)
    assert layout == "msrvtt_json" and len(caps) == 2
    assert (caps[1].url, caps[1].start_s, caps[1].end_s) == (info["videos"][0]["url"], 137.72,
                                                             149.44)
    v = tmp_path / "vatex.json"
    v.write_text(json.dumps([{"videoID": "a_b-c_000010_000020", "enCap": ["x", "y"],
                              "chCap": ["z"]}]))
    layout, caps = corpora.read_corpus(v)
    assert layout == "vatex" and [c.caption for c in caps] == ["x", "y"]
    assert (caps[0].source_video_id, caps[0].start_s, caps[0].end_s) == ("a_b-c", 10.0, 20.0)
    assert caps[0].url == "https://www.youtube.com/watch?v=a_b-c"


def test_generic_csv_and_jsonl(tmp_path, small_csv):
    layout, caps = corpora.read_corpus(small_csv)
    assert layout == "csv" and len(caps) == 6 and caps[0].start_s == 1.0
    j = tmp_path / "c.jsonl"
    j.write_text('{"url": "https://x/1.mp4", "text": "a dog runs"}\n\n'
                 '{"id": "k", "sentence": "rain", "start_s": 2}\n')
    layout, caps = corpora.read_corpus(j)
    assert layout == "jsonl" and caps[0].source_video_id == "https://x/1.mp4"
    assert (caps[1].source_video_id, caps[1].start_s) == ("k", 2.0)


@pytest.mark.parametrize("content, layout, message", [
    ("", None, "is empty"),
    ("id,url,title\n1,http://x,hello\n", None, "missing caption column"),
    ("id,caption,start\n1,hi,soon\n", None, "is not a number of seconds"),
    ('[{"videoID": "nospan", "enCap": ["x"]}]', "vatex", "is not '<youtube id>_<start>_<end>'"),
    ('{"videos": [], "sentences": [{"video_id": "v9", "caption": "c"}]}', None,
     "not in 'videos'"),
    ("key;vid_key;video_id;sentence\r\nret0;msr1;video1;\r\n", None, "no value for 'sentence'"),
])
def test_bad_corpora_are_clear_errors(tmp_path, content, layout, message):
    p = tmp_path / ("c.json" if content.startswith(("[", "{")) else "c.csv")
    p.write_text(content)
    with pytest.raises(MalformedFileError, match=message):
        corpora.read_corpus(p, layout)


def test_query_sets_cover_the_28_subcategories_with_descriptions():
    qs = load_queries(DEFAULT_QUERIES)
    assert [q.category for q in qs] == list(taxonomy.SUB_CATEGORIES)
    assert all(len(q.texts) >= 3 and all(len(t.split()) >= 3 for t in q.texts) for q in qs)


def test_bad_query_file_is_a_clear_error(tmp_path):
    p = tmp_path / "q.json"
    p.write_text(json.dumps({"queries": [{"category": "Car Acident", "texts": ["x"]}]}))
    with pytest.raises(CurationError, match="did you mean 'Car Accident'"):
        load_queries(p)


# ---------------------------------------------------------------------------- scoring
def test_bm25_ranks_the_lexical_match_first():
    index = BM25([c for _, c in SMALL])
    scores = index.score(["a building on fire", "cooking in the kitchen"])
    assert scores[:, 0].argmax() == 2 and scores[:, 1].argmax() == 1
    assert scores[5, 0] == 0.0  # no shared word


def test_bm25_stage_writes_candidates_once_and_reruns_on_new_query_set(store, small_csv,
                                                                       tmp_path):
    s = Settings(method="bm25", top_k=1, min_score=0.5)
    summary = retrieve(store, small_csv, s)
    assert (summary.items, summary.ok) == (1, 1)
    rows = {r.source_video_id: r for r in store.records("candidates")}
    assert rows["v3"].query == "Fire" and rows["v1"].query == "Car Accident"
    v5 = {m["category"] for m in json.loads(rows["v5"].metadata_json)["matches"]}
    assert v5 & {"Assault", "Crowd Violence"}
    assert "v6" not in rows  # shares no word with any query
    meta = json.loads(rows["v3"].metadata_json)
    assert meta["method"] == "bm25" and meta["caption"] == SMALL[2][1]
    assert (meta["start_s"], meta["end_s"]) == (1.0, 5.0) and rows["v3"].duration_s == 4.0
    assert rows["v3"].url == "https://example.org/v3.mp4" and rows["v3"].title == SMALL[2][1]
    [status] = [r for r in store.records("stage_results") if r.stage == "retrieve"]
    assert status.id.startswith("corpus:") and status.output["candidates"] == len(rows)
    # same corpus, same settings: nothing to do, nothing duplicated
    assert retrieve(store, small_csv, s).items == 0
    assert store.read("candidates").num_rows == len(rows)
    # a changed query set is a new stage version: runs again
    q = tmp_path / "fire_only.json"
    q.write_text(json.dumps({"queries": [{"category": "Fire", "texts": ["a house burns"]}]}))
    again = retrieve(store, small_csv, Settings(method="bm25", top_k=1, min_score=0.5,
                                                queries=q))
    assert again.ok == 1 and again.stage_version != summary.stage_version


def test_dense_corpus_embeddings_are_cached_and_not_recomputed(store, small_csv, tmp_path,
                                                               tiny_dense_dir):
    enc = CountingEncoder(DenseEncoder(tiny_dense_dir))
    retrieve(store, small_csv, Settings(model_dir=tiny_dense_dir, top_k=2, min_score=-1),
             encoder=enc)
    n_sentences = sum(len(q.texts) for q in load_queries(DEFAULT_QUERIES))
    assert enc.calls == [6, n_sentences]  # corpus once, then the queries
    assert list((store.root / "cache" / "embeddings").rglob("*.npy"))
    q = tmp_path / "q2.json"
    q.write_text(json.dumps({"queries": [{"category": "Fire", "texts": ["a fire burns"]}]}))
    enc.calls.clear()
    retrieve(store, small_csv, Settings(model_dir=tiny_dense_dir, top_k=2, min_score=-1,
                                        queries=q), encoder=enc)
    assert enc.calls == [1]  # only the new query: the corpus came from the cache
    enc.calls.clear()
    retrieve(store, small_csv, Settings(model_dir=tiny_dense_dir, top_k=3, min_score=-1,
                                        queries=q), encoder=enc)
    assert enc.calls == []  # known query sentences come from the store's query cache
    out = [r for r in store.records("stage_results") if r.stage == "retrieve"]
    assert sorted(r.output["embedding_cache_hit"] for r in out) == [False, True, True]


def test_hybrid_and_clip_methods_run_and_rank(store, small_csv, tiny_dense_dir):
    hy = retrieve(store, small_csv, Settings(method="hybrid", model_dir=tiny_dense_dir, top_k=1))
    assert hy.ok == 1
    hybrid = [r for r in store.records("candidates")
              if json.loads(r.metadata_json)["method"] == "hybrid"]
    # the lexical vote lifts the exact matches to the top despite the random dense model
    fire_top = {r.source_video_id for r in hybrid for m in json.loads(r.metadata_json)["matches"]
                if m["category"] == "Fire" and m["rank"] == 1}
    assert fire_top == {"v3"}
    clip = {"backend": "open_clip", "name": "lagovad-clip-tiny", "pretrained": None}
    cl = retrieve(store, small_csv, Settings(method="clip", clip=clip, top_k=1, min_score=-1))
    assert cl.ok == 1
    clip_rows = [r for r in store.records("candidates")
                 if json.loads(r.metadata_json)["method"] == "clip"]
    assert clip_rows and all(r.query in taxonomy.SUB_CATEGORIES for r in clip_rows)


def test_empty_corpus_writes_nothing(store, tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(MalformedFileError, match="empty"):
        retrieve(store, p, Settings(method="bm25"))
    assert store.read("candidates").num_rows == 0 and store.read("stage_results").num_rows == 0


@pytest.mark.slow
def test_real_minilm_retrieves_real_msrvtt_captions(store, msrvtt_csv):
    """The shipped all-MiniLM-L6-v2 on the real captions: the fire and car queries find them."""
    summary = retrieve(store, msrvtt_csv, Settings(method="dense", top_k=5))
    assert summary.ok == 1
    rows = store.records("candidates")
    fire = [r.title for r in rows if r.query == "Fire"]
    car = [r.title for r in rows if r.query == "Car Accident"]
    assert any("fire" in t or "burn" in t or "flame" in t for t in fire)
    assert any("car" in t or "crash" in t for t in car)
    emb = np.load(next((store.root / "cache" / "embeddings").rglob("*.npy")))
    distinct = {c.caption for c in corpora.read_corpus(msrvtt_csv)[1]}
    assert emb.shape == (len(distinct), 384) == (995, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)


def test_dense_embedding_does_not_depend_on_batching_or_padding(tiny_dense_dir):
    """Texts of very different lengths batched together (padded) embed exactly as when each
    is embedded alone: the attention mask covers the padding and the mean skips it."""
    texts = ["fire", "a car crashes into a wall on a wet road at night", "", "a man runs",
             "people " * 40]
    enc = DenseEncoder(tiny_dense_dir, batch_size=4)
    together = enc.encode(texts)
    alone = np.concatenate([enc.encode([t]) for t in texts])
    assert together.shape == (5, together.shape[1]) and np.isfinite(together).all()
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert enc.encode([]).shape == (0, together.shape[1])
