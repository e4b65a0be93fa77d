"""Run a stage's ``process`` on Ray while this process stays the store's single writer.

:class:`RayEngine` is a :data:`prevad.stage.BatchMapper`: pass it as
``run_stage(store, stage, map_batches=RayEngine(...))``. The work list's batches become a Ray
Dataset (one row per batch, rows pickled so any column type survives); ``map_batches`` sends them
to an actor pool whose actors each build the stage once (``stage_factory()``: the place to load a
model onto the actor's GPU) and run :func:`prevad.stage.process_batch` on them. Results come back
to the driver in batch order, and :func:`~prevad.stage.run_stage` commits them shard by shard, so
nothing but the driver ever writes to the store.

Where it runs: ``address`` (or ``RAY_ADDRESS``) names a cluster (``ray://head:10001`` or
``auto``); without either, a local Ray instance is started. :func:`mapper_for` turns the
``--engine local|ray|auto`` choice of the flows and commands into a mapper (``auto`` = Ray when
``RAY_ADDRESS`` is set).

Ray is an optional dependency (``pip install 'lagovad[ray]'``); it is imported only when used.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prevad.errors import ValidationError
from prevad.stage import BatchMapper, ItemResult, Stage, process_batch

ENGINES = ("local", "ray", "auto")
StageFactory = Callable[[], Stage]


class _StageActor:
    """One Ray actor: builds its stage once, then processes pickled batches."""

    def __init__(self, stage_blob: bytes | None, factory: StageFactory | None,
                 name: str, version: str) -> None:
        from ray import cloudpickle

        stage = factory() if factory is not None else cloudpickle.loads(stage_blob)
        if (stage.name, stage.version) != (name, version):
            # Results of another version would be stored under the driver's version.
            raise ValidationError(
                f"stage factory built {stage.name!r} version {stage.version!r} on a Ray actor, "
                f"but the driver runs {name!r} version {version!r}"
            )
        self.stage = stage

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        out = [pickle.dumps(process_batch(self.stage, pickle.loads(blob)))
               for blob in batch.column("rows").to_pylist()]
        return pa.table({"i": batch.column("i"), "results": pa.array(out, pa.binary())})


class RayEngine:
    """A :data:`~prevad.stage.BatchMapper` that runs ``process`` on a Ray actor pool.

    Args:
        stage_factory: builds the stage on each actor (once per actor: load models here). None
            sends the driver's stage itself (pickled) to the actors.
        actors: actors in the pool.
        num_gpus: GPUs requested per actor (fractions share a GPU).
        num_cpus: CPUs requested per actor.
        address: Ray cluster address; default ``$RAY_ADDRESS``, else a local instance.
        runtime_env: Ray runtime environment for the job (e.g. ``{"working_dir": "."}``).
    """

    def __init__(self, stage_factory: StageFactory | None = None, *, actors: int = 1,
                 num_gpus: float = 0.0, num_cpus: float = 1.0, address: str | None = None,
                 runtime_env: dict[str, Any] | None = None) -> None:
        if actors < 1 or num_gpus < 0 or num_cpus < 0:
            raise ValidationError(f"RayEngine needs actors >= 1 and num_gpus, num_cpus >= 0, got "
                                  f"actors={actors}, num_gpus={num_gpus}, num_cpus={num_cpus}")
        self.stage_factory = stage_factory
        self.actors = actors
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.address = address
        self.runtime_env = runtime_env

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address:  # a cluster: its own dashboard; actor logs stream to this driver
            ray.init(address=address, runtime_env=self.runtime_env)
        else:  # a private local instance for this process
            ray.init(runtime_env=self.runtime_env, include_dashboard=False, log_to_driver=False)

    def __call__(self, stage: Stage, batches: Iterable[list[dict[str, Any]]]
                 ) -> Iterator[list[ItemResult]]:
        """Process ``batches`` on the actor pool; yield each batch's results in input order."""
        items = [{"i": k, "rows": pickle.dumps(b)} for k, b in enumerate(batches)]
        if not items:
            return
        import ray
        from ray import cloudpickle

        self._connect()
        ray.data.DataContext.get_current().enable_progress_bars = False
        blob = None if self.stage_factory else cloudpickle.dumps(stage)
        ds = ray.data.from_items(items).map_batches(
            _StageActor,
            fn_constructor_args=(blob, self.stage_factory, stage.name, stage.version),
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_gpus=self.num_gpus,
            num_cpus=self.num_cpus,
        )
        rows = ((int(row["i"]), pickle.loads(row["results"])) for row in ds.iter_rows())
        yield from in_order(rows, len(items))


def in_order(indexed: Iterable[tuple[int, Any]], n: int) -> Iterator[Any]:
    """Yield the values of ``(index, value)`` pairs in index order 0..n-1 as soon as possible.

    Ray Data streams results as they finish; early ones wait here until their turn.

    Raises:
        ValidationError: an index is repeated or out of range, or some never arrived.
    """
    pending: dict[int, Any] = {}
    want = 0
    for k, value in indexed:
        if not want <= k < n or k in pending:
            raise ValidationError(f"batch index {k} repeated or out of range 0..{n - 1}")
        pending[k] = value
        while want in pending:
            yield pending.pop(want)
            want += 1
    if want != n:
        raise ValidationError(f"results came back for {want} of {n} batches")


def resolve_engine(engine: str) -> str:
    """``local`` or ``ray`` for an ``--engine`` value (``auto``: Ray when RAY_ADDRESS is set).

    Raises:
        ValidationError: ``engine`` is not one of :data:`ENGINES`.
    """
    if engine not in ENGINES:
        raise ValidationError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "ray" if os.environ.get("RAY_ADDRESS") else "local"
    return engine


def mapper_for(engine: str, stage_factory: StageFactory | None = None, *, actors: int = 1,
               num_gpus: float = 0.0, num_cpus: float = 1.0) -> BatchMapper | None:
    """The ``map_batches`` for :func:`prevad.stage.run_stage` that ``engine`` selects.

    Returns:
        None for the local engine (run_stage's default), else a :class:`RayEngine`.
    """
    if resolve_engine(engine) == "local":
        return None
    return RayEngine(stage_factory, actors=actors, num_gpus=num_gpus, num_cpus=num_cpus)
