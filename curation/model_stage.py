"""A model stage is declared, not copied: :class:`ModelStage` and the one runner behind it.

A model-based curation stage (describe, verify, judge, describe-anomaly, or a new one) is one
:class:`ModelStage` declaration: its name, prompt file, answer schema, config class, input table,
the upstream stages whose results it reads, what of its config goes into the stage version, and
two small functions:

- ``ask(ctx, work)`` — for one item, the fields to fill into the prompt (a dict), or a result
  decided without the model (``Failed``: no upstream result yet; ``Rejected``: input too long);
- ``read(ctx, work, answer)`` — the model's parsed answer -> ``Ok`` / ``Rejected`` / ``Failed``.

:meth:`ModelStage.stage` turns a declaration and a config into a :class:`prevad.stage.Stage`:
it picks the input table, resolves the upstream versions it reads, renders the prompt, samples
the frames of vision stages from the store's frame cache (``<store>/cache/frames``), makes one
engine call per batch (behind the request cache) and hands each answer to ``read``. Work lists,
attempts, claims and atomic commits are :func:`prevad.stage.run_stage`'s.

Upstream versions (docs/DECISIONS.md, D3): a stage that reads another stage's results reads
those of ONE version of it, ``cfg.<upstream>_version`` when the config names one (the CLI's
``--describe-version``, ``--verify-version``), else the newest version with ``ok`` results
(:func:`prevad.queries.newest_ok_version`). That version is part of the stage's own version,
so a new upstream run puts the downstream stage back to work, and a failed run of another
upstream configuration hides nothing.

The stage version hashes :meth:`EngineConfig.version_params` (model, sampling), the frame
settings (vision stages), ``params(cfg)``, the upstream versions, the prompt file's bytes and
``code_version``.

Items (docs/DECISIONS.md, D1): a stage's work list is the rows of the catalog's ``clips`` view
(:data:`prevad.queries.CLIPS_VIEW`): the clips the latest clean decision of each video kept, and
every video clean never split as a clip of itself; duplicates found by ``dedup`` have none. The
item id is the clip id; outputs carry ``video_id`` = the parent video and ``segment_id`` = the
clip's ``segments`` row (None for a whole video).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.engines import Engine, Request
from curation.frames import FrameError
from curation.mllm import (
    EngineConfig,
    FrameSource,
    Item,
    build_engine,
    items_of,
    prompt_path,
    render,
)
from prevad import queries
from prevad.errors import ValidationError
from prevad.stage import Failed, ItemResult, Ok, Rejected, Stage, StageSummary, run_stage
from prevad.stage import stage_version as hash_version
from prevad.store import Store


@dataclass(frozen=True, slots=True)
class Upstream:
    """One item's result of an upstream stage, at the upstream version the stage reads."""

    status: str
    reason: str | None
    output: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True when the upstream stage passed the item."""
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class Work:
    """One work item as the stage's functions see it.

    Attributes:
        row: the input row (columns of the input table).
        item: the row resolved to its video file and span.
        upstream: upstream stage name -> the item's result there (None: no result).
    """

    row: dict[str, Any]
    item: Item
    upstream: Mapping[str, Upstream | None]

    def ids(self) -> dict[str, Any]:
        """``video_id`` and ``segment_id``: the first fields of a stage output."""
        return {"video_id": self.item.video_id, "segment_id": self.item.segment_id}


@dataclass(frozen=True, slots=True)
class Answer:
    """The model's answer to one item.

    Attributes:
        parsed: the decoded JSON answer (it has the schema's required keys).
        text: the raw text.
        cached: it came from the request cache.
        prompt_tokens: prompt length, when the engine reports it.
        completion_tokens: answer length, when the engine reports it.
        frames: the frames sent (vision stages), else None.
        fields: what ``ask`` filled into the prompt.
    """

    parsed: dict[str, Any]
    text: str
    cached: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    frames: np.ndarray | None
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Context:
    """What a stage's functions see of its run.

    Attributes:
        cfg: the stage's config.
        version: the stage version.
        model: the engine's model id (stored in outputs).
        engine: the engine kind (stored in outputs).
        tools: what the declaration's ``tools`` built (verify: its CLIP scorer).
        upstream_versions: upstream stage -> the version read (None: it has no ok result).
    """

    cfg: Any
    version: str
    model: str
    engine: str
    tools: Mapping[str, Any]
    upstream_versions: Mapping[str, str | None]


#: Help of a config's ``<stage>_version`` option (``--describe-version``, ...).
UPSTREAM_HELP = ("The {stage} version to read (default: the newest one with ok results; "
                 "`prevad curate status` shows it).")

Ask = Callable[[Context, Work], "dict[str, Any] | ItemResult"]
Read = Callable[[Context, Work, Answer], ItemResult]


def no_fields(ctx: Context, work: Work) -> dict[str, Any]:
    """The default ``ask``: the prompt has no per-item fields."""
    return {}


def no_tools(cfg: Any, ecfg: EngineConfig, given: dict[str, Any]) -> dict[str, Any]:
    """The default ``tools``: whatever the caller passed."""
    return given


@dataclass(frozen=True, slots=True)
class ModelStage:
    """The declaration of a model-based stage (see the module docstring).

    Attributes:
        name: the stage name in ``stage_results``.
        prompt: the prompt file: a name (``curation/prompts/<prompt>.md``) or a path.
        config: the config dataclass (default config: ``config()``).
        schema: config -> the answer's JSON schema.
        params: config -> what of the config changes results (into the version).
        read: the answer of one item -> its result.
        ask: one item -> its prompt fields, or its result decided without the model.
        vision: frames are sampled (``cfg.frames``, a FrameConfig) and sent with the prompt.
        input_table: the work-list input: ``clips`` (the catalog's view, D1: every clip, a
            never-split video being a clip of itself; duplicates have none) or
            ``annotations``.
        upstream: stages whose results it may read; for each, the config has a
            ``<stage>_version`` field (None: the newest version with ok results).
        reads: config -> the upstream stages it reads with that config (default: all).
        fixed_fields: prompt fields filled once, before the per-item ones (judge's taxonomy).
        tools: (config, engine config, keyword arguments of ``stage``) -> objects the
            functions use (``ctx.tools``), built before the engine.
        schema_name: the schema's name in requests (default: ``name``).
        code_version: bump when the stage's code changes its results.
        help: the command's help (default: the config class's first docstring paragraph).
    """

    name: str
    prompt: str | Path
    config: type[Any]
    schema: Callable[[Any], dict[str, Any]]
    params: Callable[[Any], dict[str, Any]]
    read: Read
    ask: Ask = no_fields
    vision: bool = True
    input_table: str = "clips"
    upstream: tuple[str, ...] = ()
    reads: Callable[[Any], tuple[str, ...]] | None = None
    fixed_fields: Callable[[], dict[str, Any]] = dict
    tools: Callable[[Any, EngineConfig, dict[str, Any]], dict[str, Any]] = no_tools
    schema_name: str | None = None
    code_version: int = 1
    help: str = ""

    def __post_init__(self) -> None:
        names = {f.name for f in dataclasses.fields(self.config)}
        missing = [version_field(u) for u in self.upstream if version_field(u) not in names]
        if missing:
            raise ValidationError(f"model stage {self.name!r}: {self.config.__name__} lacks "
                                  f"the upstream version field(s) {missing}")
        if self.vision and "frames" not in names:
            raise ValidationError(f"model stage {self.name!r}: a vision stage's config needs "
                                  "a 'frames' field (a FrameConfig)")

    # ------------------------------------------------------------------ what it reads
    def upstream_versions(self, store: Store, cfg: Any) -> dict[str, str | None]:
        """The upstream version each upstream stage is read at, for ``cfg`` (D3).

        Raises:
            ValidationError: a version named in ``cfg`` has no ok or rejected result of that
                stage.
        """
        read = self.reads(cfg) if self.reads is not None else self.upstream
        out: dict[str, str | None] = {}
        for up in read:
            chosen = getattr(cfg, version_field(up))
            if chosen is None:
                out[up] = queries.newest_ok_version(store, up)
                continue
            done = store.query(queries.DONE_VERSIONS_OF_STAGE,
                               {"stage": up}).column("stage_version").to_pylist()
            if chosen not in done:
                raise ValidationError(
                    f"{up} version {chosen!r} has no ok or rejected result in {store.root}: "
                    f"expected one of {done or '(none: run `prevad curate ' + up + '` first)'}")
            out[up] = chosen
        return out

    def version(self, ecfg: EngineConfig, cfg: Any,
                upstream: Mapping[str, str | None]) -> str:
        """The stage version (see the module docstring).

        Args:
            ecfg: engine and model.
            cfg: the stage's config.
            upstream: the upstream versions read (:meth:`upstream_versions`).
        """
        params = dict(ecfg.version_params())
        if self.vision:
            params["frames"] = [cfg.frames.n, cfg.frames.size]
        params.update(self.params(cfg))
        if upstream:
            params["upstream"] = dict(upstream)
        return hash_version(self.name, params, files=[self.prompt_file()],
                            code_version=self.code_version)

    def prompt_file(self) -> Path:
        """The prompt template's file (its bytes are part of the version)."""
        return self.prompt if isinstance(self.prompt, Path) else prompt_path(self.prompt)

    # ------------------------------------------------------------------ the stage
    def stage(self, store: Store, ecfg: EngineConfig, cfg: Any = None, *,
              engine: Engine | None = None, **tools: Any) -> Stage:
        """The stage on ``store``.

        Args:
            store: the store (its request and frame caches are used).
            ecfg: engine and model.
            cfg: the stage's config (default: ``config()``).
            engine: an already built engine (else built from ``ecfg``).
            **tools: passed to the declaration's ``tools`` (verify: ``clip=``).

        Raises:
            ValidationError: a config of another class, or a named upstream version with no
                ok or rejected result.
        """
        cfg = self.config() if cfg is None else cfg
        if not isinstance(cfg, self.config):
            raise ValidationError(f"model stage {self.name!r}: expected a "
                                  f"{self.config.__name__}, got {type(cfg).__name__}")
        table = self.input_table
        ups = self.upstream_versions(store, cfg)
        version = self.version(ecfg, cfg, ups)
        built = self.tools(cfg, ecfg, tools)
        eng = engine or build_engine(ecfg, store, vision=self.vision,
                                     **({"frames": cfg.frames.n} if self.vision else {}))
        ctx = Context(cfg, version, eng.model_id, eng.kind, built, ups)
        source = FrameSource(store, cfg.frames) if self.vision else None
        template = render(self.prompt_file().read_text(encoding="utf-8"), **self.fixed_fields())
        request = _RequestMaker(template, self.schema(cfg), ecfg, self.schema_name or self.name,
                                source)

        def process(rows: list[dict[str, Any]]) -> list[ItemResult]:
            works = _works(store, table, rows, ctx.upstream_versions)
            results: list[ItemResult | None] = [None] * len(works)
            pending: list[tuple[int, dict[str, Any], Request]] = []
            for i, work in enumerate(works):
                asked = self.ask(ctx, work)
                if isinstance(asked, Ok | Rejected | Failed):
                    results[i] = asked
                    continue
                req = request(work.item, asked)
                if isinstance(req, Failed):
                    results[i] = req
                    continue
                pending.append((i, asked, req))
            gens = eng.generate([p[2] for p in pending]) if pending else []
            for (i, asked, req), gen in zip(pending, gens, strict=True):
                if not gen.ok:
                    results[i] = Failed(gen.error or "generation failed", output={"raw": gen.text})
                    continue
                answer = Answer(gen.parsed, gen.text, gen.cached, gen.prompt_tokens,
                                gen.completion_tokens, req.frames, asked)
                results[i] = self.read(ctx, works[i], answer)
            return [r for r in results if r is not None]

        return Stage(self.name, version, table, process, batch_size=ecfg.batch_size)

    def run(self, store: Store, ecfg: EngineConfig, cfg: Any = None, *,
            limit: int | None = None, progress: bool = False) -> StageSummary:
        """Build the stage and run it over its work list; returns the run's summary."""
        return run_stage(store, self.stage(store, ecfg, cfg), limit=limit, progress=progress)


def version_field(upstream: str) -> str:
    """The config field naming the upstream version a stage reads (``describe_version``)."""
    return upstream.replace("-", "_") + "_version"


@dataclass(frozen=True, slots=True)
class _RequestMaker:
    """Prompt + frames + schema -> one engine request (or the item's frame error)."""

    template: str
    schema: dict[str, Any]
    ecfg: EngineConfig
    schema_name: str
    source: FrameSource | None

    def __call__(self, item: Item, fields: dict[str, Any]) -> Request | Failed:
        frames = None
        if self.source is not None:
            try:
                frames = self.source.frames(item)
            except FrameError as exc:
                return Failed(f"frames: {exc}")
        return Request(render(self.template, **fields), frames=frames, schema=self.schema,
                       sampling=self.ecfg.sampling, schema_name=self.schema_name)


def upstream_results(store: Store, stage: str, version: str | None,
                     ids: list[str]) -> dict[str, Upstream]:
    """Each id's latest result of ``stage`` at ``version`` (empty when ``version`` is None)."""
    if version is None or not ids:
        return {}
    tbl = store.query(queries.RESULTS_OF_VERSION,
                      {"stage": stage, "stage_version": version, "ids": sorted(set(ids))})
    out = {}
    for r in tbl.to_pylist():
        try:
            output = json.loads(r["output_json"]) if r["output_json"] else {}
        except json.JSONDecodeError:
            output = {}
        out[r["id"]] = Upstream(r["status"], r["reason"],
                                output if isinstance(output, dict) else {})
    return out


def _works(store: Store, table: str, rows: list[dict[str, Any]],
           versions: Mapping[str, str | None]) -> list[Work]:
    """The batch's rows as :class:`Work`, with their upstream results."""
    items = items_of(store, table, rows)
    ids = [it.item_id for it in items]
    ups = {s: upstream_results(store, s, v, ids) for s, v in versions.items()}
    return [Work(row, it, {s: ups[s].get(it.item_id) for s in ups})
            for row, it in zip(rows, items, strict=True)]


def upstream_text(work: Work, stage: str, key: str) -> str | None:
    """A non-empty string field of the item's ok upstream output, else None."""
    up = work.upstream.get(stage)
    value = up.output.get(key) if up is not None and up.ok else None
    return value if isinstance(value, str) and value else None


def missing_upstream(work: Work, stage: str, ctx: Context, hint: str = "") -> Failed:
    """The failure of an item with no usable result of ``stage`` (it stays on the work list)."""
    version = ctx.upstream_versions.get(stage)
    at = f" at {stage} version {version}" if version else ""
    return Failed(f"no {stage} result for {work.item.item_id!r}{at}: run "
                  f"`prevad curate {stage}` first{hint}")
