"""Print the stage version of each model stage for its default configuration, as JSON.

Run it on two commits to see whether a change moved a stage version (a new version re-runs
every item of the stage)::

    python scripts/stage_versions.py > after.json
    git stash; python scripts/stage_versions.py > before.json; git stash pop
    diff before.json after.json

The store is a fresh temporary one: with no segments, with one segment, and with one ``ok``
describe / verify result (what verify and judge read). The model stages read the ``clips`` view
whatever the store holds, so only the last state moves the versions (upstream versions read).
No model is loaded: a stand-in engine object is passed, as the version does not depend on it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from curation import describe, describe_anomaly, judge, verify
from curation.mllm import EngineConfig
from prevad.records import Segment, StageResult, Video, make_id
from prevad.store import Store


class _NoEngine:
    """Stands in for an engine: a stage's version never depends on the engine object."""

    model_id = "none"
    kind = "none"


def versions(store: Store) -> dict[str, Any]:
    """Default-config versions of the four model stages on ``store``."""
    ecfg = EngineConfig("transformers", "some/model")
    eng: Any = _NoEngine()
    return {
        "describe": describe.make_stage(store, ecfg, engine=eng).version,
        "verify": verify.make_stage(store, ecfg, engine=eng, clip=eng).version,
        "judge": judge.make_stage(store, ecfg, engine=eng).version,
        "judge-unverified": judge.make_stage(
            store, ecfg, judge.JudgeConfig(require_verified=False), engine=eng).version,
        "describe-anomaly": describe_anomaly.make_stage(store, ecfg, engine=eng).version,
    }


def main() -> None:
    """Print the versions on three store states as one JSON object."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.init(Path(tmp) / "store")
        out = {"videos": versions(store)}
        vid = make_id("video", "v0")
        store.append("videos", [Video(vid, "test", "v0", uri="v0.mp4", duration_s=4.0)])
        seg = Segment(make_id("segment", vid), vid, "test", 0.0, 2.0)
        store.append("segments", [seg])
        out["segments"] = versions(store)
        store.append("stage_results", [
            StageResult(seg.segment_id, "describe", "v1-describe", "ok",
                        output_json=json.dumps({"description": "a car hits a wall"})),
            StageResult(seg.segment_id, "verify", "v1-verify", "ok", output_json="{}"),
        ])
        out["with-upstream"] = versions(store)
    json.dump(out, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
