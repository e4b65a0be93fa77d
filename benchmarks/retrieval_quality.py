"""Recall and candidate budget of text retrieval on the labelled MSR-VTT 1k-A captions.

Labels: ``benchmarks/data/msrvtt_1kA_anomaly_labels.csv`` (every one of the 1000 captions read
and marked anomalous when it describes a visible event of a PreVAD sub-category; talk *about*
an event, video games and cartoons are not anomalous). For each method and setting the script
prints the candidate count (union over the 28 categories), the recall of the anomalous videos
and the precision, and the top 10 of three taxonomy queries per method.

Usage::

    python benchmarks/retrieval_quality.py [--corpus ../shared/corpora/msrvtt_1kA_test.csv]
        [--methods dense bm25 hybrid] [--store /tmp/retrieval-bench-store]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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

LABELS = ROOT / "benchmarks" / "data" / "msrvtt_1kA_anomaly_labels.csv"
SHOW = ("Car Accident", "Fire", "Assault")


def _labels() -> set[str]:
    with open(LABELS, newline="") as fh:
        return {r["video_id"] for r in csv.DictReader(fh) if r["anomalous"] == "1"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path,
                    default=ROOT.parent / "shared" / "corpora" / "msrvtt_1kA_test.csv")
    ap.add_argument("--methods", nargs="+", default=["dense", "bm25", "hybrid"])
    ap.add_argument("--store", type=Path, default=Path("/tmp/retrieval-bench-store"))
    args = ap.parse_args()
    store = Store.init(args.store)
    corpus = Corpus.read(args.corpus)
    positives = _labels()
    vid_ids = [v[1] for v in corpus.videos]
    print(f"corpus: {len(corpus.captions)} captions, {len(positives)} labelled anomalous\n")
    encoders: dict[str, object] = {}
    grids = {"dense": [-1.0, 0.3, 0.35, 0.4, 0.45, 0.5], "hybrid": [0.0],
             "bm25": [0.0, 2.0, 3.0, 4.0, 5.0], "clip": [-1.0]}
    print("| method | queries | aggregate | top-k | min-score | candidates | recall | precision |")
    print("|---|---|---|---|---|---|---|---|")
    tops: dict[str, dict[str, list[tuple[str, float, bool]]]] = {}
    for method in args.methods:
        for qfile in (DEFAULT_QUERIES, QUERY_DIR / "taxonomy_names.json"):
            for aggregate in (("max", "mean") if method in ("dense", "clip") else ("max",)):
                s = Settings(method=method, queries=qfile, aggregate=aggregate)
                if method not in encoders:
                    encoders[method] = s.encoder()
                qs = load_queries(qfile)
                scored = score_corpus(store, corpus, qs, s, encoders[method])
                for k in (5, 10, 20, 30):
                    for ms in grids[method]:
                        hits = select(scored, k, ms)
                        got = {vid_ids[v] for v in hits}
                        tp = len(got & positives)
                        print(f"| {method} | {qfile.stem} | {aggregate} | {k} | {ms} | "
                              f"{len(got)} | {tp}/{len(positives)} = {tp / len(positives):.2f}"
                              f" | {tp / max(1, len(got)):.2f} |")
                if qfile == DEFAULT_QUERIES and aggregate == "max":
                    cats = [q.category for q in qs]
                    tops[method] = {}
                    for name in SHOW:
                        c = cats.index(name)
                        col = scored.video_scores[:, c]
                        order = col.argsort()[::-1][:10]
                        tops[method][name] = [
                            (corpus.captions[corpus.captions_of(int(v))[0]].caption,
                             float(col[v]), vid_ids[v] in positives) for v in order]
    for name in SHOW:
        for method, per in tops.items():
            print(f"\n**{name}** — {method} (✔ = labelled anomalous)\n")
            print("| # | score | caption |\n|---|---|---|")
            for i, (cap, sc, pos) in enumerate(per[name], start=1):
                print(f"| {i} | {sc:.3f} | {cap}{' ✔' if pos else ''} |")


if __name__ == "__main__":
    main()
