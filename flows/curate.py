"""The curation flows: one flow per stage, and ``curate`` (the whole chain, end to end).

``curate`` runs, in order, the steps of :data:`STEPS` it is asked for:

1. ``retrieve`` - captions of a corpus file -> ``candidates`` (:func:`curation.retrieve.retrieve`);
   ``video_urls`` (direct downloads) and ``streams`` (to record) given to the flow are registered
   as candidates first, whatever the steps;
2. the work-list stages ``acquire``, ``record``, ``dedup``, ``clean``, ``describe``, ``verify``,
   ``judge`` (:func:`flows.stage_flow.submit_stage`, each over its store work list);
3. ``review`` - Label Studio JSON file round trip: export the pre-labels
   (``prevad review export``) and import a completed export (``prevad review import``); with
   ``auto_accept`` set, that name accepts every pre-label as its reviewer (runs without a person);
4. ``features`` - CLIP frame features of the stored videos (:func:`lagovad.extract.extract`);
5. the data card.

The store is the source of truth: after a crash (even SIGKILL) rerunning the same flow redoes
only what the store does not hold yet (see ``tests/flows/test_crash_resume.py``).

Per-stage flows (``acquire``, ``clean``, ...) are made by :func:`flows.stage_flow.make_stage_flow`
and deployed from ``prefect.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.lagovad_flows import extract_task
from flows.stage_flow import (
    CURATION_CHAIN,
    artifact_key,
    checked_params,
    data_card_task,
    make_stage_flow,
    retry_transient,
    submit_stage,
)
from prevad.errors import ValidationError

#: Every step of :func:`curate`, in the order they run.
STEPS: tuple[str, ...] = ("retrieve", *CURATION_CHAIN, "review", "features")
#: Steps that need a model (``model`` parameter, or ``model`` in the stage's parameters).
MODEL_STEPS = frozenset({"describe", "verify", "judge"})
#: Options of the ``features`` step (``lagovad extract``).
FEATURE_OPTIONS = frozenset({"model", "pretrained", "stride", "offset", "size", "batch_size",
                             "workers", "device", "model_id"})

# one flow per work-list stage (prefect.yaml entrypoints flows/curate.py:<name>)
acquire = make_stage_flow("acquire", "acquire")
record = make_stage_flow("record", "record")
dedup = make_stage_flow("dedup", "dedup")
clean = make_stage_flow("clean", "clean")
describe = make_stage_flow("describe", "describe")
verify = make_stage_flow("verify", "verify")
judge = make_stage_flow("judge", "judge")
describe_anomaly = make_stage_flow("describe-anomaly", "describe-anomaly")


# ---------------------------------------------------------------------------- tasks
@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_transient)
def retrieve_task(store: str, corpus: str, settings: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Retrieve candidates from one corpus file (nothing to do when this version already ran)."""
    from curation.retrieve import retrieve
    from curation.stages import retrieve_settings
    from flows.stage_flow import publish_summary
    from prevad.store import Store

    summary = retrieve(Store(store), corpus, retrieve_settings(**(settings or {})))
    publish_summary(summary)
    return summary.to_dict()


@task(cache_policy=NO_CACHE)
def register_task(store: str, video_urls: list[str], streams: list[str],
                  stream_seconds: float) -> dict[str, int]:
    """Register direct video URLs and streams as candidates (idempotent)."""
    from curation.acquire import add_urls
    from curation.record import add_streams
    from prevad.store import Store

    st = Store(store)
    return {"video_urls": len(add_urls(st, list(video_urls))),
            "streams": len(add_streams(st, list(streams), stream_seconds))}


@task(cache_policy=NO_CACHE)
def review_export_task(store: str, review_dir: str, media_url: str | None,
                       default_split: str) -> dict[str, Any]:
    """``prevad review export``: the Label Studio import file of the videos awaiting review."""
    from prevad.review import Media, export_tasks
    from prevad.store import Store

    st = Store(store)
    out = Path(review_dir) / "tasks.json"
    media = Media(st.root, url_prefix=media_url) if media_url else Media(st.root, st.root)
    tasks, config, n, errors = export_tasks(st, out, media, default_split=default_split)
    for err in errors:
        get_run_logger().warning("review export: %s", err)
    return {"tasks": str(tasks), "label_config": str(config), "n_tasks": n,
            "errors": [str(e) for e in errors]}


@task(cache_policy=NO_CACHE)
def review_import_task(store: str, export_file: str) -> dict[str, Any]:
    """``prevad review import``: human annotations from a Label Studio JSON export file."""
    from prevad.review import import_export_file
    from prevad.store import Store

    summary = import_export_file(Store(store), export_file)
    for err in summary.errors:
        get_run_logger().warning("review import: %s", err)
    create_table_artifact(key=artifact_key("review-import"), table=[
        {"outcome": "written", "annotations": summary.written},
        {"outcome": "errors", "annotations": len(summary.errors)},
    ], description=f"human annotations imported from `{export_file}`")
    return {"file": export_file, "written": summary.written,
            "errors": [str(e) for e in summary.errors]}


@task(cache_policy=NO_CACHE)
def auto_accept_task(tasks_file: str, annotator: str) -> str:
    """The export file of ``tasks_file`` with every pre-label accepted by ``annotator``."""
    from curation.auto_review import accept_file

    return str(accept_file(tasks_file, Path(tasks_file).with_name("export.json"), annotator))


# ---------------------------------------------------------------------------- the flow
def _stage_params(name: str, params: dict[str, dict[str, Any]], model: dict[str, Any] | None
                  ) -> dict[str, Any]:
    """The factory keywords of stage ``name``: the shared ``model`` options under its own."""
    own = dict(params.get(name) or {})
    if name in MODEL_STEPS:
        own = {**(model or {}), **own}
        if not own.get("model"):
            raise ValidationError(f"step {name!r} needs a model: pass model={{'model': DIR}} "
                                  f"or params={{'{name}': {{'model': DIR}}}}")
    return own


def _check(steps: list[str], corpus: str | None, review_import: str | None,
           auto_accept: str | None, features: dict[str, Any] | None) -> None:
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValidationError(f"unknown step(s) {unknown}: expected some of {list(STEPS)}")
    if corpus is not None and not Path(corpus).is_file():
        raise ValidationError(f"corpus: no file at {corpus}")
    if review_import is not None and auto_accept:
        raise ValidationError("give review_import (a reviewed export) or auto_accept, not both")
    if "features" in steps and features is None:
        raise ValidationError("step 'features' needs features={'model': ..., 'pretrained': ...}")
    extra = sorted(set(features or {}) - FEATURE_OPTIONS)
    if extra:
        raise ValidationError(f"features: unknown option(s) {extra}; expected some of "
                              f"{sorted(FEATURE_OPTIONS)}")


@flow(name="curate", log_prints=True)
def curate(store: str, steps: list[str] | None = None, corpus: str | None = None,
           retrieve: dict[str, Any] | None = None, video_urls: list[str] | None = None,
           streams: list[str] | None = None, stream_seconds: float = 10.0,
           params: dict[str, dict[str, Any]] | None = None, model: dict[str, Any] | None = None,
           review_dir: str | None = None, media_url: str | None = None,
           default_split: str = "train", review_import: str | None = None,
           auto_accept: str | None = None, features: dict[str, Any] | None = None,
           engine: str = "auto", shard_size: int = 16, actors: int = 1, num_gpus: float = 0.0,
           retries: int = 2, retry_delay_s: float = 10.0, card: bool = True) -> dict[str, Any]:
    """The curation chain end to end on a store (see the module docstring).

    Args:
        store: store root (``prevad init``).
        steps: which of :data:`STEPS` to run, always in :data:`STEPS` order (default all;
            ``features`` only when ``features`` is given).
        corpus: caption corpus file for ``retrieve`` (MSR-VTT CSV/JSON, VATEX, CSV/JSONL);
            without it retrieval is skipped.
        retrieve: retrieval settings (:class:`curation.retrieve.Settings` fields).
        video_urls: whole videos to download (registered as candidates of source ``url``).
        streams: stream URLs to record for ``stream_seconds`` each.
        params: per stage its factory keywords (``{"acquire": {"url_template": ...}}``).
        model: engine options shared by describe/verify/judge (``engine``, ``model``,
            ``device``, ...); a stage's own ``params`` win.
        review_dir: folder of the review files (default ``<store>/review``).
        media_url: URL prefix Label Studio loads videos from (default: its local-file serving
            rooted at the store).
        default_split: split of reviewed videos that have none.
        review_import: a completed Label Studio JSON export to import.
        auto_accept: accept every pre-label as this reviewer (e.g. ``demo-auto-accept``).
        features: ``extract`` options (``model``, ``pretrained``, ``stride``, ``size``,
            ``batch_size``, ``workers``, ``device``, ``model_id``).
        engine, shard_size, actors, num_gpus, retries, retry_delay_s: as the stage flow.
        card: write and publish the data card at the end.

    Returns:
        ``{"steps": {step: result}, "card": path or None}``.

    Raises:
        ValidationError: unknown step, missing corpus file, a model step without a model, a
            stage parameter its option refuses (all checked before the first step runs).
    """
    asked = list(steps) if steps else [s for s in STEPS if s != "features" or features]
    _check(asked, corpus, review_import, auto_accept, features)
    chosen = [s for s in STEPS if s in asked]
    params = params or {}
    # every step's options are checked before the first step touches anything
    stage_params = {n: checked_params(n, _stage_params(n, params, model))
                    for n in CURATION_CHAIN if n in chosen}
    if "retrieve" in chosen and corpus is not None:
        checked_params("curation.stages:retrieve_settings", retrieve)
    out: dict[str, Any] = {"steps": {}, "card": None}
    if video_urls or streams:
        out["steps"]["register"] = register_task(store, video_urls or [], streams or [],
                                                 stream_seconds)
    if "retrieve" in chosen and corpus is not None:
        out["steps"]["retrieve"] = retrieve_task(store, corpus, retrieve)
    for name in CURATION_CHAIN:
        if name in chosen:
            out["steps"][name] = submit_stage(
                store, name, stage_params[name], engine=engine,
                shard_size=shard_size, actors=actors, num_gpus=num_gpus, retries=retries,
                retry_delay_s=retry_delay_s)
    if "review" in chosen:
        folder = review_dir or str(Path(store) / "review")
        exported = review_export_task(store, folder, media_url, default_split)
        result: dict[str, Any] = {"export": exported}
        reviewed = review_import
        if auto_accept:
            reviewed = auto_accept_task(exported["tasks"], auto_accept)
        if reviewed is not None:
            result["import"] = review_import_task(store, reviewed)
        out["steps"]["review"] = result
    if "features" in chosen:
        f = dict(features or {})
        out["steps"]["features"] = extract_task(
            store, None, f.pop("model", "ViT-B-16"), f.pop("pretrained", "openai"),
            f.pop("stride", 8), f.pop("offset", None), f.pop("size", None),
            f.pop("batch_size", 64), f.pop("workers", 2), f.pop("device", None),
            f.pop("model_id", None), None)
    if card:
        out["card"] = data_card_task(store)
    return out
