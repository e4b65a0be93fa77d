"""curation.ray_exec without a Ray instance: result ordering and engine selection."""

from __future__ import annotations

import pytest

from curation.ray_exec import RayEngine, in_order, mapper_for, resolve_engine
from prevad.errors import ValidationError


def test_results_are_yielded_in_batch_order_as_soon_as_possible():
    seen = []

    def arrivals():
        for k in (2, 0, 3, 1):
            seen.append(k)
            yield k, f"batch{k}"

    out = []
    for value in in_order(arrivals(), 4):
        out.append((value, list(seen)))
    # batch0 is released right when it arrives, batch1 releases the held batch2 and batch3
    assert out == [("batch0", [2, 0]), ("batch1", [2, 0, 3, 1]), ("batch2", [2, 0, 3, 1]),
                   ("batch3", [2, 0, 3, 1])]


def test_lost_or_repeated_batches_are_errors():
    with pytest.raises(ValidationError, match="results came back for 1 of 3 batches"):
        list(in_order([(0, "a"), (2, "c")], 3))
    with pytest.raises(ValidationError, match="batch index 1 repeated"):
        list(in_order([(1, "b"), (1, "b")], 3))


def test_engine_selection(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_engine("auto") == "local" and mapper_for("auto") is None
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert resolve_engine("auto") == "ray"
    engine = mapper_for("auto", actors=2, num_gpus=0.5)
    assert isinstance(engine, RayEngine) and (engine.actors, engine.num_gpus) == (2, 0.5)
    assert mapper_for("local") is None
    with pytest.raises(ValidationError, match="engine must be one of"):
        resolve_engine("dask")
    with pytest.raises(ValidationError, match="actors >= 1"):
        RayEngine(actors=0)
