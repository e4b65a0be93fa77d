"""Prefect flows for curation stages: any :class:`prevad.stage.Stage` on a store.

A stage is named by a *stage reference* (:mod:`curation.registry`): a short name registered in
``curation.registry.STAGES``, or an import path ``"package.module:factory"`` whose factory takes
the stage's parameters as keywords and returns the :class:`~prevad.stage.Stage`.

The flow is a thin task over :func:`prevad.stage.run_stage`. The store is the source of truth:
the work list holds only items without an ok/rejected result, so rerunning a flow (after a crash,
a retry or a new version) redoes exactly what is missing. For that reason the task has no Prefect
cache (a cached result could hide work the store still lists); it is retried only for transient
errors (:func:`is_transient`), never for bad input. Each run publishes a table artifact (ok /
rejected by reason / failed, items/s) and, optionally, the store's data card.

Concurrency: tasks carry tags (``gpu`` for model stages, ``download`` for network stages; see
:data:`STAGE_TAGS`); ``prefect concurrency-limit create gpu 1`` makes a server run one at a time.

Without ``PREFECT_API_URL`` every flow runs on Prefect's embedded server.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from curation.registry import STAGES, resolve_factory, short_name, stage_factory, with_store
from prevad.stage import StageSummary

__all__ = ["CURATION_CHAIN", "STAGES", "STAGE_TAGS", "chain", "checked_params",
           "make_stage_flow", "resolve_factory", "stage_flow", "submit_stage"]

#: The work-list stages of the curation chain, in order (names registered in ``STAGES``); run
#: by :func:`chain`. ``flows.curate.curate`` adds retrieval before and review + features after.
CURATION_CHAIN: tuple[str, ...] = ("acquire", "record", "dedup", "clean", "describe", "verify",
                                   "judge")

#: Concurrency tags per stage name (stages not listed get none).
STAGE_TAGS: dict[str, tuple[str, ...]] = {
    "retrieve": (),
    "acquire": ("download",),
    "record": ("download",),
    "dedup": (),
    "clean": (),
    "describe": ("gpu",),
    "verify": ("gpu",),
    "judge": ("gpu",),
    "describe-anomaly": ("gpu",),
}

#: OSError subclasses that are the input's fault, not the moment's: never retried.
PERMANENT_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
)
#: Ray errors that mean a worker, node or connection went away (retrying may succeed).
TRANSIENT_RAY_ERRORS = frozenset({
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError",
    "ObjectLostError", "OwnerDiedError", "WorkerCrashedError", "GetTimeoutError",
    "RaySystemError",
})


# ---------------------------------------------------------------------------- retries
def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may go away on retry: I/O, connection and timeout errors, lost Ray workers.

    Missing files, permissions and every validation error are permanent.
    """
    if isinstance(exc, (*PERMANENT_OS_ERRORS, ValueError, TypeError, KeyError)):
        return False
    if isinstance(exc, OSError | TimeoutError):  # ConnectionError is an OSError
        return True
    return type(exc).__module__.startswith("ray.") and type(exc).__name__ in TRANSIENT_RAY_ERRORS


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task only for :func:`is_transient` errors."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classified, not swallowed
        return is_transient(exc)
    return False


# ---------------------------------------------------------------------------- artifacts
def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from ``parts``."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def summary_table(summary: StageSummary) -> list[dict[str, Any]]:
    """Rows of the stage-run artifact: ok, rejected by reason, failed, exhausted, total."""
    rows: list[dict[str, Any]] = [{"outcome": "ok", "reason": "", "items": summary.ok}]
    rows += [{"outcome": "rejected", "reason": reason, "items": n}
             for reason, n in sorted(summary.rejected.items())]
    rows.append({"outcome": "failed", "reason": "", "items": summary.failed})
    rows.append({"outcome": "exhausted", "reason": "attempts used up", "items": summary.exhausted})
    rows.append({"outcome": "total", "reason": f"{summary.items_per_s:.2f} items/s",
                 "items": summary.items})
    return rows


def publish_summary(summary: StageSummary) -> None:
    """Table artifact of one stage run (call inside a flow or task run)."""
    create_table_artifact(
        table=summary_table(summary),
        key=artifact_key("stage", summary.stage),
        description=(f"**{summary.stage}** version `{summary.stage_version}`, run "
                     f"`{summary.run_id}`: {summary.items} items in {summary.seconds:.1f} s "
                     f"({summary.items_per_s:.2f} items/s)"),
    )


@task(cache_policy=NO_CACHE)
def data_card_task(store: str, title: str = "PreVAD curation") -> str:
    """Write the store's data card and publish it (link + Markdown artifacts)."""
    from prevad.card import write_card
    from prevad.store import Store

    path = write_card(Store(store), Path(store) / "data_cards" / "card.md", title=title)
    create_link_artifact(link=path.resolve().as_uri(), link_text=str(path),
                         key=artifact_key("data-card-link"),
                         description=f"Data card of the store {store}")
    create_markdown_artifact(markdown=path.read_text(), key=artifact_key("data-card"),
                             description=f"Data card of the store {store} (plots beside {path})")
    return str(path)


# ---------------------------------------------------------------------------- the stage task
@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=retry_transient)
def run_stage_task(store: str, stage: str, params: dict[str, Any] | None = None,
                   engine: str = "auto", shard_size: int = 64, limit: int | None = None,
                   actors: int = 1, num_gpus: float = 0.0) -> dict[str, Any]:
    """Run one stage over its work list (thin wrapper over :func:`prevad.stage.run_stage`).

    Args:
        store: store root.
        stage: stage reference (see :func:`resolve_factory`).
        params: keyword arguments of the stage factory.
        engine: ``local``, ``ray`` or ``auto`` (Ray when ``RAY_ADDRESS`` is set).
        shard_size: items committed together.
        limit: at most this many items (None = the whole work list).
        actors: Ray actors (``ray`` engine).
        num_gpus: GPUs per Ray actor (``ray`` engine).

    Returns:
        The run's summary (:meth:`StageSummary.to_dict`).
    """
    from curation.ray_exec import mapper_for
    from prevad.stage import run_stage
    from prevad.store import Store

    factory = stage_factory(stage, with_store(stage, params, store))
    st = factory()
    mapper = mapper_for(engine, factory, actors=actors, num_gpus=num_gpus)
    summary = run_stage(Store(store), st, shard_size=shard_size, limit=limit,
                        map_batches=mapper)
    publish_summary(summary)
    get_run_logger().info(
        "%s %s: %d items, %d ok, rejected %s, %d failed, %d exhausted (%.2f items/s)",
        summary.stage, summary.stage_version, summary.items, summary.ok, summary.rejected,
        summary.failed, summary.exhausted, summary.items_per_s,
    )
    return summary.to_dict()


def checked_params(stage: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` of ``stage`` checked as ``prevad curate run -p`` checks them (names, types,
    and the stage's own config checks), before anything is built or touched.

    Raises:
        ValidationError: an unknown stage or parameter, or a value its option refuses.
    """
    from curation.stage_params import check_params

    resolve_factory(stage)
    return check_params(stage, dict(params or {}))


def submit_stage(store: str, stage: str, params: dict[str, Any] | None = None, *,
                 engine: str = "auto", shard_size: int = 64, limit: int | None = None,
                 actors: int = 1, num_gpus: float = 0.0, retries: int = 2,
                 retry_delay_s: float = 10.0, tags: Sequence[str] | None = None
                 ) -> dict[str, Any]:
    """Run :func:`run_stage_task` inside the current flow with the stage's tags and retries."""
    name = short_name(stage)
    task_tags = list(STAGE_TAGS.get(name, ()) if tags is None else tags)
    return run_stage_task.with_options(
        name=f"stage-{name}", tags=task_tags, retries=retries, retry_delay_seconds=retry_delay_s
    )(store, stage, params, engine, shard_size, limit, actors, num_gpus)


@flow(name="stage", log_prints=True)
def stage_flow(store: str, stage: str, params: dict[str, Any] | None = None,
               engine: str = "auto", shard_size: int = 64, limit: int | None = None,
               actors: int = 1, num_gpus: float = 0.0, retries: int = 2,
               retry_delay_s: float = 10.0, tags: list[str] | None = None,
               card: bool = True) -> dict[str, Any]:
    """Run any curation stage on a store; publish its summary and the data card.

    Args:
        store: store root (created by ``prevad init``).
        stage: a :data:`STAGES` name or ``"package.module:factory"``.
        params: keyword arguments of the stage factory.
        engine: ``local``, ``ray`` or ``auto`` (Ray when ``RAY_ADDRESS`` is set).
        shard_size: items committed together.
        limit: at most this many items.
        actors: Ray actors; num_gpus: GPUs per Ray actor.
        retries: task retries on transient errors; retry_delay_s: seconds between them.
        tags: concurrency tags (default :data:`STAGE_TAGS` of the stage).
        card: write and publish the store's data card after the stage.

    Returns:
        The stage run's summary, with ``card`` (the card's path) when written.
    """
    params = checked_params(stage, params)
    summary = submit_stage(store, stage, params, engine=engine, shard_size=shard_size,
                           limit=limit, actors=actors, num_gpus=num_gpus, retries=retries,
                           retry_delay_s=retry_delay_s, tags=tags)
    if card:
        summary["card"] = data_card_task(store)
    return summary


def make_stage_flow(name: str, ref: str, tags: Sequence[str] | None = None,
                    default_params: dict[str, Any] | None = None) -> Flow:
    """A flow named ``name`` that runs the stage ``ref`` (one flow per curation stage).

    Assign the result to a module attribute so ``prefect.yaml`` can name it as an entrypoint,
    e.g. ``clean = make_stage_flow("clean", "curation.clean:make_stage")`` in ``flows/curate.py``.
    """
    defaults = dict(default_params or {})

    def run(store: str, params: dict[str, Any] | None = None, engine: str = "auto",
            shard_size: int = 64, limit: int | None = None, actors: int = 1,
            num_gpus: float = 0.0, card: bool = True) -> dict[str, Any]:
        checked = checked_params(ref, {**defaults, **(params or {})})
        summary = submit_stage(store, ref, checked, engine=engine,
                               shard_size=shard_size, limit=limit, actors=actors,
                               num_gpus=num_gpus,
                               tags=STAGE_TAGS.get(name, ()) if tags is None else tags)
        if card:
            summary["card"] = data_card_task(store)
        return summary

    run.__doc__ = f"Run the {name!r} stage ({ref}) on a store; publish its summary and card."
    return flow(run, name=name, log_prints=True)


@flow(name="chain", log_prints=True)
def chain(store: str, stages: list[str] | None = None,
           params: dict[str, dict[str, Any]] | None = None, engine: str = "auto",
           shard_size: int = 64, actors: int = 1, num_gpus: float = 0.0, retries: int = 2,
           retry_delay_s: float = 10.0, card: bool = True) -> dict[str, Any]:
    """Run stages in order on a store (default :data:`CURATION_CHAIN`), then the data card.

    Every reference is resolved and every stage's parameters checked (:func:`checked_params`)
    before the first stage runs, so a typo or a bad value fails at once. Rerunning after a
    crash continues where the store says work is left.

    Args:
        store: store root.
        stages: stage references in order (default :data:`CURATION_CHAIN`).
        params: per stage (reference or short name) its factory keywords.
        engine, shard_size, actors, num_gpus, retries, retry_delay_s: as :func:`stage_flow`.
        card: write and publish the data card at the end.

    Returns:
        ``{"stages": {name: summary}, "card": path or None}``.
    """
    refs = list(stages or CURATION_CHAIN)
    params = params or {}
    # every stage's parameters are checked before the first stage touches anything
    checked = {ref: checked_params(ref, params.get(ref, params.get(short_name(ref))))
               for ref in refs}
    out: dict[str, Any] = {"stages": {}, "card": None}
    for ref in refs:
        name = short_name(ref)
        out["stages"][name] = submit_stage(
            store, ref, checked[ref], engine=engine, shard_size=shard_size,
            actors=actors, num_gpus=num_gpus, retries=retries, retry_delay_s=retry_delay_s)
    if card:
        out["card"] = data_card_task(store)
    return out
