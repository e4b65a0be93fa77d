"""The one stage contract every curation stage runs on (Prefect-free).

A :class:`Stage` names its input table and a function over a batch of input rows (plain dicts,
the table's columns). The function returns one :data:`ItemResult` per row, in order:

- :class:`Ok` — the item passed; ``outputs`` maps table names to records to store with it;
- :class:`Rejected` — the item is done and filtered out, with a reason (counted in stats);
- :class:`Failed` — the attempt failed (error text kept); the item stays on the work list until
  ``max_attempts`` is reached.

:func:`run_stage` takes the stage's work list from the store, processes it in shards, and commits
each shard's outputs together with its ``stage_results`` rows in ONE :meth:`Store.append_many`
(all land or none). An exception raised by ``process`` for a batch becomes a failed result for
each item of that batch (after retrying the items one by one, so one bad item does not fail its
neighbours). Items with ``max_attempts`` attempts are not retried (counted as ``exhausted``).

Several workers (processes, even on other machines sharing the folder) may run one stage on one
store at once. Each shard is *claimed* under the store lock before it is processed: the claim
file ``claims/<stage>.json`` maps ``<stage version>:<item id>`` to the claiming run (run id,
host, pid, lease expiry); an item claimed by a live run is skipped by the others, and its attempt
number is read from ``stage_results`` under the same lock, so two workers never do one item at
once nor write the same attempt number. The commit releases the shard's claims under the lock;
results of items whose claim was lost (lease expired and taken over) are dropped instead of
committed. Claims of a dead process on this host, or past their lease, are taken over.

Media files a stage writes into the store folder are recorded store-relative: absolute paths under
the store root in output records' ``uri``/``location`` fields are rewritten relative to the root.

``Stage.version`` is a hash of everything that changes the stage's result
(:func:`stage_version`): a new version puts every input back on the work list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import socket
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prevad import queries
from prevad.errors import CorruptStoreError, ValidationError
from prevad.records import StageResult
from prevad.store import TABLES, Store

#: Stage names and run ids name files (``claims/<stage>.json``, ``stage_runs/<stage>/<run>``).
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(value: Any, what: str) -> str:
    """A stage name or run id: 1-128 letters, digits, ``.``, ``_``, ``-`` (a file name part).

    Raises:
        ValidationError: anything else (it would name a file outside its folder).
    """
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise ValidationError(f"{what} must be 1-128 letters, digits, '.', '_' or '-' starting "
                              f"with a letter or digit, got {str(value)[:80]!r}")
    return value


@dataclass(frozen=True, slots=True)
class Ok:
    """The item passed: records to store (table name -> records) and a JSON-able output."""

    outputs: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    output: Any = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The item is filtered out for ``reason`` (a short, countable token such as 'too_short')."""

    reason: str
    output: Any = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The attempt failed with ``error``; the item is retried on a later run."""

    error: str
    output: Any = None


ItemResult = Ok | Rejected | Failed
Process = Callable[[list[dict[str, Any]]], Sequence[ItemResult]]


@dataclass(frozen=True, slots=True)
class Stage:
    """A curation stage on the store.

    Attributes:
        name: stage name as stored in ``stage_results.stage`` (e.g. "retrieve", "clean").
        version: :func:`stage_version` of what changes the result.
        input_table: the table whose rows are the work items (see ``queries.WORK_LIST_INPUTS``).
        process: batch of input rows -> one result per row, same order.
        batch_size: rows handed to ``process`` at once.
        max_attempts: failed items are retried until they have this many attempts.
    """

    name: str
    version: str
    input_table: str
    process: Process
    batch_size: int = 16
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not self.version:
            raise ValidationError("Stage.name and Stage.version must be non-empty strings")
        check_name(self.name, "Stage.name")
        if self.input_table not in queries.WORK_LIST_INPUTS:
            raise ValidationError(
                f"Stage.input_table must be one of {sorted(queries.WORK_LIST_INPUTS)}, "
                f"got {self.input_table!r}"
            )
        if self.batch_size < 1 or self.max_attempts < 1:
            raise ValidationError("Stage.batch_size and Stage.max_attempts must be >= 1")


def stage_version(
    name: str,
    params: Mapping[str, Any] | None = None,
    files: Sequence[str | Path] = (),
    code_version: int = 1,
) -> str:
    """A short hash of what changes a stage's result.

    Args:
        name: stage name.
        params: JSON-able parameters (model id, thresholds, ...); key order does not matter.
        files: data files the result depends on (prompts, query sets): their bytes are hashed.
        code_version: bump when the stage's code changes its results.

    Returns:
        ``"v<code_version>-<12 hex>"``.
    """
    h = hashlib.sha256()
    h.update(json.dumps([name, code_version, params or {}], sort_keys=True, default=str).encode())
    for f in files:
        h.update(hashlib.sha256(Path(f).read_bytes()).digest())
    return f"v{code_version}-{h.hexdigest()[:12]}"


@dataclass(slots=True)
class StageSummary:
    """What one run of a stage did (returned, stored under ``stage_runs/``, published by flows)."""

    stage: str
    stage_version: str
    run_id: str
    items: int = 0
    ok: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    exhausted: int = 0
    seconds: float = 0.0

    @property
    def items_per_s(self) -> float:
        """Processed items per second of wall time (0 when nothing ran)."""
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with ``items_per_s``."""
        return {**asdict(self), "items_per_s": self.items_per_s}


def _status_row(stage: Stage, item_id: str, attempt: int, result: ItemResult,
                run_id: str) -> StageResult:
    output = None if result.output is None else json.dumps(result.output, default=str)
    if isinstance(result, Ok):
        return StageResult(item_id, stage.name, stage.version, "ok", output_json=output,
                           attempt=attempt, run_id=run_id)
    if isinstance(result, Rejected):
        return StageResult(item_id, stage.name, stage.version, "rejected", reason=result.reason,
                           output_json=output, attempt=attempt, run_id=run_id)
    return StageResult(item_id, stage.name, stage.version, "failed", error=result.error,
                       output_json=output, attempt=attempt, run_id=run_id)


def _process_batch(stage: Stage, rows: list[dict[str, Any]]) -> list[ItemResult]:
    """Run ``process``; on an exception, retry item by item so only the bad item fails."""
    try:
        results = list(stage.process(rows))
    except Exception:  # noqa: BLE001 - an item's error must not stop the run
        if len(rows) == 1:
            return [Failed(traceback.format_exc(limit=3).strip()[-2000:])]
        return [r for row in rows for r in _process_batch(stage, [row])]
    if len(results) != len(rows):
        raise ValidationError(
            f"stage {stage.name!r}: process returned {len(results)} results for {len(rows)} rows"
        )
    for r in results:
        if not isinstance(r, Ok | Rejected | Failed):
            raise ValidationError(
                f"stage {stage.name!r}: process must return Ok/Rejected/Failed, got {type(r)}"
            )
    return results


#: Seconds a claim stays valid without its run committing (then others may take the item).
DEFAULT_LEASE_S = 3600.0


def _claims_path(store: Store, stage: Stage) -> Path:
    return store.root / "claims" / f"{stage.name}.json"


def _claim_problem(key: Any, claim: Any) -> str | None:
    if not isinstance(key, str):
        return f"claim key {key!r} is not a string"
    if not isinstance(claim, dict):
        return f"claim of {key[:60]!r} is not an object"
    for name, kinds in (("run_id", str), ("host", str), ("version", str)):
        if name in claim and not isinstance(claim[name], kinds):
            return f"claim of {key[:60]!r}: {name} must be a string"
    pid, until = claim.get("pid", 0), claim.get("until", 0)
    if isinstance(pid, bool) or not isinstance(pid, int):
        return f"claim of {key[:60]!r}: pid must be a whole number, got {pid!r}"
    if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(until):
        return f"claim of {key[:60]!r}: until must be a time in seconds, got {until!r}"
    return None


def _parse_claims(path: Path) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """A claims file's claims, or (None, what is wrong). A missing file holds no claims."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return None, "not a regular file"
    try:
        claims = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None, "not valid JSON"
    if not isinstance(claims, dict):
        return None, "not a JSON object of claims"
    for key, claim in claims.items():
        why = _claim_problem(key, claim)
        if why:
            return None, why
    return claims, None


def claims_file_problem(path: Path) -> str | None:
    """What is wrong with a claims file (``prevad verify``), or None when it is valid."""
    _, why = _parse_claims(path)
    return f"claims file is malformed ({why})" if why else None


def _load_claims(store: Store, stage: Stage) -> dict[str, dict[str, Any]]:
    """Live claims of a stage (dead or expired ones dropped). Call under the store lock.

    Raises:
        CorruptStoreError: the claims file is malformed (named, with the way forward).
    """
    path = _claims_path(store, stage)
    claims, why = _parse_claims(path)
    if claims is None:
        raise CorruptStoreError(
            f"claims file {path} is malformed ({why}); `prevad repair {store.root}` resets it "
            f"(claims only reserve items for running workers: stop this stage's workers first)"
        )
    now, host = time.time(), socket.gethostname()
    live = {}
    for item, c in claims.items():
        if c.get("until", 0) < now:
            continue
        if c.get("host") == host and not pid_alive(int(c.get("pid", 0))):
            continue
        live[item] = c
    return live


def _claim_key(stage: Stage, item_id: Any) -> str:
    """Claims are per stage version: runs of two versions do not block each other."""
    return f"{stage.version}:{item_id}"


def _save_claims(store: Store, stage: Stage, claims: dict[str, dict[str, Any]]) -> None:
    # not fsynced: a claim only matters while its process lives, and a crash ends both
    store.write_file(str(_claims_path(store, stage).relative_to(store.root)),
                     json.dumps(claims).encode(), durable=False)


def _release_claims(store: Store, stage: Stage, run_id: str) -> None:
    """Drop every claim of ``run_id`` on ``stage`` (nothing to do after a clean run)."""
    with store._locked():
        claims = _load_claims(store, stage)
        kept = {k: c for k, c in claims.items() if c.get("run_id") != run_id}
        if len(kept) != len(claims):
            _save_claims(store, stage, kept)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a non-positive id never does)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attempted_since(store: Store, stage: Stage, key: str, window: list[dict[str, Any]]
                     ) -> np.ndarray:
    """Which window items have a ``stage_results`` row at their ``next_attempt`` by now.

    Another worker that took an item since this run's work list was read wrote a row with
    exactly that key (id, stage, version, attempt); the part files' key indexes (cached per
    immutable file) answer without reading any row.
    """
    probe = pa.table({
        "id": [str(r[key]) for r in window], "stage": [stage.name] * len(window),
        "stage_version": [stage.version] * len(window),
        "attempt": pa.array([int(r["next_attempt"]) for r in window], pa.int32()),
    })
    return store.stored_mask("stage_results", probe)


def _claim(store: Store, stage: Stage, pending: deque[dict[str, Any]], size: int,
           run_id: str, lease_s: float, summary: StageSummary, *, replace_own: bool = False
           ) -> list[dict[str, Any]]:
    """Claim up to ``size`` items from the front of ``pending`` (consumed); fresh attempts.

    Attempt numbers come from the work list; only items that another worker attempted since
    (seen in the key indexes) are looked up again. ``replace_own``: this run's earlier claims
    (its shards are committed) are dropped in the same write.
    """
    key = queries.WORK_LIST_INPUTS[stage.input_table]
    with store._locked():
        claims = _load_claims(store, stage)
        if replace_own:
            claims = {k: c for k, c in claims.items() if c.get("run_id") != run_id}
        shard: list[dict[str, Any]] = []
        while pending and len(shard) < size:
            window = []
            while pending and len(window) < size - len(shard):
                row = pending.popleft()
                if _claim_key(stage, row[key]) not in claims:
                    window.append(row)
            if not window:
                break
            touched = _attempted_since(store, stage, key, window)
            state = {}
            if touched.any():
                state = {
                    r["id"]: r for r in store.query(queries.ATTEMPTS_OF_IDS, {
                        "stage": stage.name, "stage_version": stage.version,
                        "ids": [str(r[key]) for r, t in zip(window, touched, strict=True) if t],
                    }).to_pylist()
                }
            for n, row in enumerate(window):
                if len(shard) == size:
                    pending.extendleft(reversed(window[n:]))  # not looked at: back in front
                    break
                st = state.get(str(row[key]))
                attempt = st["attempts"] + 1 if st else int(row["next_attempt"])
                if (st is not None and st["done"]) or attempt != row["next_attempt"]:
                    continue  # another worker did it since our work list was read
                if attempt > stage.max_attempts:
                    summary.exhausted += 1
                    continue
                shard.append(row)
        if shard:
            until = time.time() + lease_s
            me = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                  "until": until, "version": stage.version}
            claims.update({_claim_key(stage, r[key]): me for r in shard})
        if shard or replace_own:
            _save_claims(store, stage, claims)
        return shard


def _store_relative(store: Store, record: Any) -> Any:
    """The record with absolute paths under the store root (``uri``, ``location``) made relative."""
    changes = {}
    for name in ("uri", "location"):
        value = getattr(record, name, None)
        if isinstance(value, str) and os.path.isabs(value):
            path = Path(value).resolve()
            if store.root in path.parents:
                changes[name] = str(path.relative_to(store.root))
    return dataclasses.replace(record, **changes) if changes else record


def commit_results(store: Store, stage: Stage, rows: list[dict[str, Any]],
                   results: Sequence[ItemResult], run_id: str, *, release: bool = True) -> None:
    """Store a shard's outputs and status rows in one atomic commit, releasing its claims.

    Items whose claim now belongs to another run (the lease ran out and was taken over) are left
    out, so an attempt number is never written twice. ``release=False`` keeps the claims file
    as it is (:func:`run_stage` drops them with its next claim: one claims write per shard);
    claims of done items only make other workers skip what they would skip anyway.
    """
    key = queries.WORK_LIST_INPUTS[stage.input_table]
    with store._locked():
        claims = _load_claims(store, stage)
        mine = [
            (row, res) for row, res in zip(rows, results, strict=True)
            if claims.get(_claim_key(stage, row[key]), {}).get("run_id", run_id) == run_id
        ]
        per_table: dict[str, list[Any]] = {}
        for _, res in mine:
            if isinstance(res, Ok):
                for table, recs in res.outputs.items():
                    if table not in TABLES:
                        raise ValidationError(
                            f"stage {stage.name!r} output to unknown table {table!r}"
                        )
                    per_table.setdefault(table, []).extend(
                        _store_relative(store, r) for r in recs
                    )
        status = [
            _status_row(stage, str(row[key]), int(row["next_attempt"]), res, run_id)
            for row, res in mine
        ]
        if status:
            store.append_many({**{t: r for t, r in per_table.items() if r},
                               "stage_results": status})
        if not release:
            return
        for row in rows:
            if claims.get(_claim_key(stage, row[key]), {}).get("run_id") == run_id:
                del claims[_claim_key(stage, row[key])]
        _save_claims(store, stage, claims)


def process_batch(stage: Stage, rows: list[dict[str, Any]]) -> list[ItemResult]:
    """Public name of the per-batch step (used by executors that run ``process`` elsewhere)."""
    return _process_batch(stage, rows)


#: How batches are processed: ``(stage, batches) -> one result list per batch, in batch order``.
#: The default runs ``stage.process`` in this process; ``curation.ray_exec`` runs it on Ray
#: actors while this process stays the store's single writer.
BatchMapper = Callable[["Stage", Iterable[list[dict[str, Any]]]], Iterator[Sequence[ItemResult]]]


def local_map_batches(stage: Stage, batches: Iterable[list[dict[str, Any]]]
                      ) -> Iterator[list[ItemResult]]:
    """The default :data:`BatchMapper`: each batch through :func:`process_batch`, in order."""
    for batch in batches:
        yield _process_batch(stage, batch)


def run_stage(
    store: Store,
    stage: Stage,
    *,
    shard_size: int = 64,
    limit: int | None = None,
    progress: bool = False,
    run_id: str | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    map_batches: BatchMapper | None = None,
) -> StageSummary:
    """Run ``stage`` over its work list, claiming and committing shard by shard.

    Args:
        store: the store to read inputs from and write results to.
        stage: the stage.
        shard_size: items claimed and committed together.
        limit: process at most this many items (None = all).
        progress: show a progress bar (command line).
        run_id: identifies this run in ``stage_results.run_id`` (generated if None).
        lease_s: seconds a claimed shard stays reserved for this run.
        map_batches: where ``process`` runs (:data:`BatchMapper`; default: in this process,
            shard by shard). A remote mapper (Ray) gets every batch of the work list in one call
            (its actors build the model once per run), so the run claims all its work up front;
            results always come back here and are committed shard by shard.

    Returns:
        The run's :class:`StageSummary` (also written to ``stage_runs/<stage>/<run_id>.json``).
    """
    run_id = check_name(run_id or uuid.uuid4().hex[:12], "run_id")
    summary = StageSummary(stage.name, stage.version, run_id)
    todo = queries.work_list(store, stage.name, stage.version, stage.input_table).to_pylist()
    summary.exhausted = sum(1 for r in todo if r["next_attempt"] > stage.max_attempts)
    pending = deque(r for r in todo if r["next_attempt"] <= stage.max_attempts)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending) if limit is None else min(limit, len(pending)),
                   desc=stage.name, unit="item")
    start = time.perf_counter()
    rejected: Counter[str] = Counter()
    def claimed_shards() -> Iterator[list[dict[str, Any]]]:
        taken = 0
        while limit is None or taken < limit:
            size = shard_size if limit is None else min(shard_size, limit - taken)
            # locally the previous shard is committed: its claims go in this claim's write
            shard = _claim(store, stage, pending, size, run_id, lease_s, summary,
                           replace_own=map_batches is None)
            if not shard:
                return
            taken += len(shard)
            yield shard

    # Locally each shard is claimed, processed and committed in turn. A remote mapper (Ray) gets
    # every batch of the work list in one call, so its actors build their models once for the
    # whole run; this run then claims all of the work up front (the cluster is the parallelism)
    # and still commits shard by shard as results come back.
    shards: Iterable[list[dict[str, Any]]]
    outcomes: Iterator[Sequence[ItemResult]] | None = None
    if map_batches is None:
        shards = claimed_shards()
    else:
        shards = list(claimed_shards())
        outcomes = iter(map_batches(stage, (
            shard[b : b + stage.batch_size] for shard in shards
            for b in range(0, len(shard), stage.batch_size))))
    try:
        for shard in shards:
            results: list[ItemResult] = []
            for b in range(0, len(shard), stage.batch_size):
                batch = shard[b : b + stage.batch_size]
                out = _process_batch(stage, batch) if outcomes is None else list(next(outcomes))
                if len(out) != len(batch):
                    raise ValidationError(f"stage {stage.name!r}: the batch mapper returned "
                                          f"{len(out)} results for {len(batch)} rows")
                results.extend(out)
                if bar is not None:
                    bar.update(len(batch))
            commit_results(store, stage, shard, results, run_id, release=outcomes is not None)
            for res in results:
                summary.items += 1
                if isinstance(res, Ok):
                    summary.ok += 1
                elif isinstance(res, Rejected):
                    rejected[res.reason] += 1
                else:
                    summary.failed += 1
    finally:
        # claims this run still holds (an exception between claim and commit) are released, so
        # a retry in this same process does not skip them until the lease runs out
        _release_claims(store, stage, run_id)
    if bar is not None:
        bar.close()
    summary.rejected = dict(rejected)
    summary.seconds = time.perf_counter() - start
    store.write_file(f"stage_runs/{stage.name}/{run_id}.json",
                     (json.dumps(summary.to_dict(), indent=2) + "\n").encode())
    return summary
