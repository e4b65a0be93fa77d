"""What the model-based curation stages share: engine settings, items, prompts, frames.

An *item* is one work row of a stage resolved to a video file and a span. Describe, verify and
judge read rows of the catalog's ``clips`` view (docs/DECISIONS.md, D1): a split clip is the span
``[start_s, end_s]`` of its parent video's file (``videos.uri``), a never-split video is a clip of
itself (the whole file); the item id is the clip id, ``video_id`` the parent video and
``segment_id`` the clip's ``segments`` row (None for a whole video). Describe-anomaly reads
``annotations`` rows (the annotated clip, narrowed to the annotation's spans). Rows of
``segments`` and ``videos`` resolve the same way. Relative URIs are taken relative to the store
root.

Prompts are data files under ``curation/prompts/``; :func:`render` fills ``{name}`` fields, and
the files' bytes are part of each stage's ``stage_version``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curation.engines import CachedEngine, Engine, RequestCache, Sampling, make_engine
from curation.frames import FrameCache, FrameConfig, FrameError
from prevad import queries
from prevad.errors import ValidationError
from prevad.store import Store

PROMPTS_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Which engine and model a stage runs, and how.

    Attributes:
        kind: "transformers", "vllm" or "openai".
        model: model directory / hub id, or the served model name (openai).
        device: transformers device.
        batch_size: requests per engine call (transformers batch, vLLM/HTTP chunk).
        base_url: OpenAI-compatible server URL.
        api_key: the server's key.
        concurrency: HTTP requests in flight.
        timeout: seconds per HTTP request.
        max_retries: HTTP retries of transient errors.
        sampling: sampling settings.
        cache: use the persistent request cache under ``<store>/cache/``.
        llm_kwargs: extra ``vllm.LLM`` arguments.
    """

    kind: str
    model: str
    device: str = "auto"
    batch_size: int = 8
    base_url: str | None = None
    api_key: str = "EMPTY"
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 2
    sampling: Sampling = field(default_factory=Sampling)
    cache: bool = True
    llm_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the library's way in (the commands and flows check EngineOptions first, with the
        # same rules): a bad value is an error here, never a failed item per request
        from curation.engines import ENGINES
        from curation.options import check_bool, check_choice, check_number

        check_choice(self, "kind", list(ENGINES))
        for name in ("batch_size", "concurrency"):
            check_number(self, name, integer=True, minimum=1, strict=False)
        check_number(self, "max_retries", integer=True, strict=False)
        check_number(self, "timeout")
        check_bool(self, "cache")
        if not isinstance(self.sampling, Sampling):
            raise ValidationError(f"sampling must be a Sampling, got {self.sampling!r}")
        sampling = self.sampling
        check_number(sampling, "max_tokens", integer=True, minimum=1, strict=False)
        check_number(sampling, "temperature", strict=False)
        check_number(sampling, "top_p", maximum=1)
        check_number(sampling, "seed", integer=True, strict=False)

    def version_params(self) -> dict[str, Any]:
        """What of the engine changes a stage's results (model and sampling, not the engine)."""
        return {"model": self.model, "sampling": self.sampling.as_dict()}


def build_engine(cfg: EngineConfig, store: Store, *, vision: bool, frames: int = 8) -> Engine:
    """The configured engine, behind the store's request cache unless ``cfg.cache`` is off."""
    engine = make_engine(
        cfg.kind, cfg.model, vision=vision, device=cfg.device, batch_size=cfg.batch_size,
        frames=frames, base_url=cfg.base_url, api_key=cfg.api_key,
        concurrency=cfg.concurrency, timeout=cfg.timeout, max_retries=cfg.max_retries,
        **cfg.llm_kwargs,
    )
    if not cfg.cache:
        return engine
    return CachedEngine(engine, RequestCache(cache_dir(store) / "generations.sqlite"))


def cache_dir(store: Store) -> Path:
    """``<store>/cache`` (request cache and sampled frames)."""
    return store.root / "cache"


def prompt_path(name: str) -> Path:
    """The prompt file ``curation/prompts/<name>.md``."""
    return PROMPTS_DIR / f"{name}.md"


def load_prompt(name: str) -> str:
    """A prompt file's text."""
    return prompt_path(name).read_text(encoding="utf-8")


def render(template: str, **fields: Any) -> str:
    """Fill ``{name}`` fields (only the given names: other braces, e.g. JSON, stay as they are)."""
    for k, v in fields.items():
        template = template.replace("{" + k + "}", str(v))
    return template


def resolve_uri(store: Store, uri: str | None) -> Path | None:
    """A video URI as a local path (``file://`` and relative paths are resolved)."""
    if not uri:
        return None
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    p = Path(uri).expanduser()
    return p if p.is_absolute() else store.root / p


@dataclass(frozen=True, slots=True)
class Item:
    """A work row resolved to its video file and span."""

    item_id: str
    video_id: str
    segment_id: str | None
    path: Path | None
    start_s: float | None
    end_s: float | None


def videos_by_id(store: Store, ids: list[str]) -> dict[str, dict[str, Any]]:
    """``videos`` rows (uri, duration) keyed by video_id."""
    rows = store.query(queries.VIDEOS_BY_ID, {"ids": sorted(set(ids))}).to_pylist()
    return {r["video_id"]: r for r in rows}


def items_of(store: Store, input_table: str, rows: list[dict[str, Any]]) -> list[Item]:
    """Resolve work rows of ``clips``, ``segments``, ``videos`` or ``annotations`` to
    :class:`Item` (see the module docstring)."""
    if input_table == "clips":
        return [_clip_item(store, r) for r in rows]
    if input_table == "annotations":
        ids = sorted({r["video_id"] for r in rows})
        clips = {c["clip_id"]: c for c in store.query(queries.CLIP_FILES_BY_ID,
                                                       {"ids": ids}).to_pylist()}
    videos = videos_by_id(store, [r["video_id"] for r in rows])
    out = []
    for r in rows:
        v = videos.get(r["video_id"], {})
        vpath = resolve_uri(store, v.get("uri"))
        if input_table == "segments":
            # The span is in the video file's time; a segment without a stored video file is
            # read from its own uri, over its whole length.
            if vpath is None and r.get("uri"):
                out.append(Item(r["segment_id"], r["video_id"], r["segment_id"],
                                resolve_uri(store, r["uri"]), None, None))
            else:
                out.append(Item(r["segment_id"], r["video_id"], r["segment_id"], vpath,
                                r["start_s"], r["end_s"]))
        elif input_table == "videos":
            out.append(Item(r["video_id"], r["video_id"], None, vpath, None, None))
        elif input_table == "annotations":
            out.append(_annotation_item(store, r, clips.get(r["video_id"])))
        else:
            raise ValidationError(f"no items for input table {input_table!r}")
    return out


def _clip_item(store: Store, r: dict[str, Any]) -> Item:
    """A ``clips`` row as an item: a split clip is its span of the parent file (or its own file,
    for a clip stored as one by older code); a whole video is its whole file."""
    path = resolve_uri(store, r.get("uri"))
    if not r["is_segment"]:
        return Item(r["clip_id"], r["video_id"], None, path, None, None)
    if path is None and r.get("clip_uri"):
        return Item(r["clip_id"], r["video_id"], r["clip_id"],
                    resolve_uri(store, r["clip_uri"]), None, None)
    return Item(r["clip_id"], r["video_id"], r["clip_id"], path, r["start_s"], r["end_s"])


def _annotation_item(store: Store, r: dict[str, Any], clip: dict[str, Any] | None) -> Item:
    """An annotation as an item: its clip (``video_id`` is a clip id, D1), narrowed to the
    annotation's spans (relative to the clip) when the clip's length is known."""
    if clip is None:  # no such clip or video: its frames fail, naming it
        return Item(r["annotation_id"], r["video_id"], None, None, None, None)
    whole = not clip["is_segment"]
    path = resolve_uri(store, clip["uri"])
    offset = 0.0 if whole else clip["start_s"]
    length = clip["video_duration_s"] if whole else clip["end_s"] - clip["start_s"]
    if not whole and path is None and clip["clip_uri"]:
        # a clip stored as a file of its own (older stores): the file is the clip
        path, offset, whole = resolve_uri(store, clip["clip_uri"]), 0.0, True
    start, end = _span_of(r.get("spans") or [], length)
    if start is not None and end is not None:
        start, end = offset + start, offset + end
    elif not whole:
        start, end = clip["start_s"], clip["end_s"]
    return Item(r["annotation_id"], clip["video_id"], None if clip["is_segment"] is False
                else r["video_id"], path, start, end)


def _span_of(spans: list[list[float]], duration: float | None) -> tuple[float | None,
                                                                       float | None]:
    """The seconds covered by relative spans (first start to last end), if the duration is known."""
    if not spans or not duration:
        return None, None
    return min(s[0] for s in spans) * duration, max(s[1] for s in spans) * duration


class FrameSource:
    """Frames of items from the store's frame cache (decoded once, shared by the stages)."""

    def __init__(self, store: Store, cfg: FrameConfig) -> None:
        """Frames sampled with ``cfg``, cached under ``<store>/cache/frames``."""
        self.cfg = cfg
        self.cache = FrameCache(cache_dir(store) / "frames")

    def frames(self, item: Item) -> np.ndarray:
        """The item's frames.

        Raises:
            FrameError: no video file for the item, or none of its frames decode.
        """
        if item.path is None:
            raise FrameError(f"item {item.item_id!r} (video {item.video_id!r}) has no video "
                             "file: videos.uri is empty")
        return self.cache.get(item.path, item.start_s, item.end_s, self.cfg)
