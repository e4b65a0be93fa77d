"""Training-free CLIP baseline: frame-text cosine similarity under the benchmark definitions.

The frame features are CLIP ``encode_image`` outputs (after the visual projection), so texts are
encoded with open_clip ``encode_text``, which applies the text projection: both live in the joint
embedding space. A class embedding is the normalised mean of its descriptions' normalised
embeddings (``descriptions``) or the embedding of its name (``names``); Normal uses the shared
normal prompt. Per step: ``sims = 100 * cos(frame, class)`` over [Normal, classes]; the anomaly
score is ``1 - softmax(sims)[Normal]``; classification uses ``sims`` with the same min/max rule.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from lagovad.eval.benchmarks import Benchmark, Definition, EvalError
from lagovad.eval.protocol import VideoScores

LOGIT_SCALE = 100.0  # CLIP's trained logit scale (exp(4.6052))


class ClipBaseline:
    """Zero-shot CLIP scorer.

    Args:
        name: open_clip model name (e.g. ``ViT-B-16``, or ``lagovad-clip-tiny`` for tests).
        pretrained: open_clip pretrained tag (e.g. ``openai``) or a local checkpoint file.
        device: Torch device.
        prompts: ``descriptions`` or ``names``.
    """

    def __init__(self, name: str = "ViT-B-16", pretrained: str | None = "openai",
                 device: torch.device | None = None, prompts: str = "descriptions"):
        import open_clip

        from lagovad.image_encoder import ImageEncoderError, load_image_encoder

        self.device = device or torch.device("cpu")
        # Same loader as extraction: QuickGELU for OpenAI weights, clear offline errors.
        try:
            self.model = load_image_encoder(name, pretrained, device=self.device, half=False,
                                            option="--clip-pretrained").model
        except ImageEncoderError as exc:
            raise EvalError(f"cannot build the CLIP baseline: {exc}") from exc
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.prompts = prompts

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Normalised projected text embeddings ``[N, E]``."""
        tokens = self.tokenizer(texts).to(self.device)
        emb = self.model.encode_text(tokens).float()
        return emb / emb.norm(dim=-1, keepdim=True)

    def class_embeddings(self, defn: Definition) -> torch.Tensor:
        """``[C, E]`` normalised embeddings, Normal first then ``defn.classes``."""
        rows = [self.encode([defn.normal])[0]]
        for c in defn.classes:
            texts = list(defn.descriptions[c]) if self.prompts == "descriptions" else [c]
            mean = self.encode(texts).mean(dim=0)
            rows.append(mean / mean.norm())
        return torch.stack(rows)

    @torch.no_grad()
    def score(self, bench: Benchmark, defn: Definition,
              features: dict[str, Callable[[], np.ndarray]], progress: bool = True,
              ) -> dict[str, VideoScores]:
        """Per-video anomaly scores and class similarities."""
        text = self.class_embeddings(defn)
        out = {}
        for name, load in tqdm(features.items(), desc=f"{bench.name} (CLIP)", unit="video",
                               disable=not progress, leave=False):
            arr = torch.from_numpy(np.asarray(load(), dtype=np.float32)).to(self.device)
            if arr.ndim != 2 or arr.shape[1] != text.shape[1]:
                raise EvalError(f"features of {name} must be [T, {text.shape[1]}] to match the "
                                f"CLIP embedding, got {tuple(arr.shape)}")
            sims = LOGIT_SCALE * (arr / arr.norm(dim=-1, keepdim=True).clamp_min(1e-12)) @ text.T
            anomaly = 1.0 - torch.softmax(sims, dim=-1)[:, 0]
            out[name] = VideoScores(anomaly.cpu().numpy(), sims.cpu().numpy())
        return out
