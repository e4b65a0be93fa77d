"""Store at scale: atomic multi-table commits under SIGKILL, compaction, verify/repair, workers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from prevad import Store, interop, queries
from prevad import store as store_mod
from prevad.cli import app
from prevad.errors import CorruptStoreError, DuplicateIdError, ReadOnlyStoreError
from prevad.maintenance import repair, verify
from prevad.records import StageResult, Video
from prevad.stage import Failed, Ok, Stage, run_stage

runner = CliRunner()
#: File-system steps of the write path; the crash hook kills the process before the N-th one.
WRITE_STEPS = ("replace", "fsync", "unlink", "link", "rename", "mkdir")


# ---------------------------------------------------------------------- helpers
def _content(store: Store) -> dict[str, list]:
    """Every table's rows without timestamps, as sorted JSON (order-free snapshot)."""
    out = {}
    for t, spec in store_mod.TABLES.items():
        rows = store.read(t).select(spec.content_columns).to_pylist()
        out[t] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out


def _leftovers(root: Path) -> list[str]:
    tmp = [str(p) for p in root.rglob("*.tmp")]
    return sorted(tmp + [str(p) for p in store_mod.orphan_files(root)]
                  + [str(p) for p in root.glob(store_mod.JOURNAL)])


#: The class list of the made-up benchmark "bench" (unknown benchmarks must name theirs).
BENCH_CLASSES = ["Normal", "Fight"]


def _entries(n: int, offset: int = 0) -> list[dict]:
    return [
        {"path": f"f/{i}.npy", "video_path": f"v{i:05d}.mp4",
         "class_name": "Normal" if i % 2 else "Fight", "descriptions": None,
         "anomaly_span": [] if i % 2 else [[0.1, 0.5]]}
        for i in range(offset, offset + n)
    ]


def _crashing(root: str, steps_file: str, kill_at: int, action: str) -> None:
    """Child: run ``action`` and SIGKILL itself just before its ``kill_at``-th write step."""
    count = {"n": 0}

    def hook(fn):
        def wrapped(*a, **k):
            count["n"] += 1
            if count["n"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return wrapped

    for name in WRITE_STEPS:
        setattr(os, name, hook(getattr(os, name)))
    store_mod.exchange_paths = hook(store_mod.exchange_paths)
    s = Store(root)
    count["n"] = 0  # only the action's own steps
    ACTIONS[action](s)
    Path(steps_file).write_text(str(count["n"]))
    os._exit(0)


def _import_action(s: Store) -> None:
    path = Path(s.root).parent / "bench.json"
    interop.import_benchmark(s, "bench", path, classes=BENCH_CLASSES)


def _features_action(s: Store) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    row = StageResult("vid-x", "extract_features", "m", "ok", attempt=1)
    s.write_features("vid-x", "m", arr, extra_rows={"stage_results": [row]})


def _compact_action(s: Store) -> None:
    s.compact()


ACTIONS = {"import": _import_action, "features": _features_action, "compact": _compact_action}


def _sweep(tmp_path: Path, action: str, prepare) -> int:
    """Crash ``action`` before each of its write steps in turn; check all-old or all-new."""
    ctx = mp.get_context("fork")
    template = tmp_path / "template"
    prepare(template)
    old = _content(Store(template / "s"))
    old_parts = {t: len(Store(template / "s").part_files(t)) for t in store_mod.TABLES}
    # dry run: how many write steps the action takes, and the state it leads to
    done = tmp_path / "done"
    _copy(template, done)
    steps = tmp_path / "steps.txt"
    p = ctx.Process(target=_crashing, args=(str(done / "s"), str(steps), 10**9, action))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    total = int(steps.read_text())
    new = _content(Store(done / "s"))
    assert new != old or action == "compact"
    for kill_at in range(1, total + 1):
        work = tmp_path / f"k{kill_at}"
        _copy(template, work)
        p = ctx.Process(target=_crashing, args=(str(work / "s"), str(steps), kill_at, action))
        p.start()
        p.join(60)
        assert p.exitcode == -signal.SIGKILL, f"step {kill_at} of {total} did not crash"
        after = Store(work / "s")  # the next command
        state = _content(after)
        assert state in (old, new), f"{action}: crash before step {kill_at}/{total} mixed states"
        assert _leftovers(work / "s") == [], f"{action}: leftovers after step {kill_at}"
        if action == "compact":
            parts = {t: len(after.part_files(t)) for t in store_mod.TABLES}
            for t, n in parts.items():
                assert n in (old_parts[t], min(old_parts[t], 1)), (t, n, kill_at)
        assert verify(after).ok, verify(after).problems
    return total


def _copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    # the store records its root: opening the copy rebuilds the catalog (not a write step)
    Store(dst / "s")


# ---------------------------------------------------------------------- crash tests
@pytest.mark.slow
def test_sigkill_during_import_leaves_all_old_or_all_new(tmp_path: Path) -> None:
    def prepare(d: Path) -> None:
        s = Store.init(d / "s")
        s.append("videos", [Video.create("other", "a")])
        (d / "bench.json").write_text(json.dumps(_entries(40)))

    assert _sweep(tmp_path, "import", prepare) >= 8  # many points, not only before the write


@pytest.mark.slow
def test_sigkill_during_feature_commit_leaves_all_old_or_all_new(tmp_path: Path) -> None:
    def prepare(d: Path) -> None:
        Store.init(d / "s").append("videos", [Video("vid-x", "yt", "x")])

    assert _sweep(tmp_path, "features", prepare) >= 6


@pytest.mark.slow
def test_sigkill_during_compaction_leaves_all_old_or_all_new(tmp_path: Path) -> None:
    def prepare(d: Path) -> None:
        s = Store.init(d / "s", compact_threshold=0)
        for i in range(4):
            s.append("videos", [Video.create("yt", f"v{i}")])

    assert _sweep(tmp_path, "compact", prepare) >= 5


# ---------------------------------------------------------------------- multi-table commits
def test_append_many_is_checked_as_a_whole(store: Store) -> None:
    v = Video.create("yt", "a")
    store.append("videos", [v])
    before = _content(store)
    clash = Video(v.video_id, "yt", "a", uri="elsewhere.mp4")
    with pytest.raises(DuplicateIdError, match="uri"):
        store.append_many({
            "stage_results": [StageResult(v.video_id, "probe", "1", "ok")],
            "videos": [clash],
        })
    assert _content(store) == before  # the stage_results row did not land either
    res = store.append_many({"videos": [v, Video.create("yt", "b")],
                             "stage_results": [StageResult(v.video_id, "probe", "1", "ok")]})
    assert (res["videos"].written, res["videos"].skipped, res["stage_results"].written) == (1, 1, 1)


def test_duplicates_are_found_across_partitions_and_with_a_damaged_key_index(
        store: Store) -> None:
    v = Video.create("yt", "a")
    store.append("videos", [v])
    # same key under another partition value: still the same key, refused
    with pytest.raises(DuplicateIdError, match="already stored"):
        store.append("videos", [Video(v.video_id, "vimeo", "a")])
    # a torn key index is not trusted: recomputed from the part file
    for side in store.root.rglob("*.keys.npy"):
        side.write_bytes(b"\x93NUMPY torn")
    fresh = Store(store.root)
    assert fresh.append("videos", [v]).skipped == 1
    with pytest.raises(DuplicateIdError):
        fresh.append("videos", [Video(v.video_id, "yt", "a", uri="x")])


# ---------------------------------------------------------------------- compaction
def test_auto_compaction_bounds_part_files_and_keeps_rows(tmp_path: Path) -> None:
    s = Store.init(tmp_path / "s", compact_threshold=4)
    vids = [Video.create("yt", f"v{i}") for i in range(11)]
    for v in vids:
        s.append("videos", [v])
    assert len(s.part_files("videos")) <= 5
    assert sorted(s.read("videos").column("video_id").to_pylist()) == sorted(
        v.video_id for v in vids)
    assert s.append("videos", vids).skipped == 11  # dedup still sees compacted rows
    res = s.compact()
    assert res.files_after == 1 and len(s.part_files("videos")) == 1
    assert s.query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 11
    assert verify(s).ok


def test_cli_compact(tmp_path: Path) -> None:
    s = Store.init(tmp_path / "s", compact_threshold=0)
    for i in range(3):
        s.append("videos", [Video.create("yt", f"v{i}")])
    r = runner.invoke(app, ["compact", str(s.root)])
    assert r.exit_code == 0 and "3 -> 1 part files" in r.output
    assert len(s.part_files("videos")) == 1


# ---------------------------------------------------------------------- verify / repair
W = Video.create("yt", "w")


def _filled(tmp_path: Path) -> Store:
    s = Store.init(tmp_path / "s")
    s.append("videos", [Video.create("yt", f"v{i}") for i in range(3)])
    s.append("videos", [W])
    s.write_features(W.video_id, "m", np.ones((2, 3), np.float32))
    return s


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _cli_fails_clearly(args: list[str], names: str) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "store ready" not in r.output
    assert r.output.startswith("error:") or "error:" in r.output
    assert names in r.output, r.output


def test_truncated_part_file(tmp_path: Path) -> None:
    s = _filled(tmp_path)
    bad = s.part_files("videos")[0]
    _truncate(bad, 100)
    root = str(s.root)
    _cli_fails_clearly(["query", root, "SELECT * FROM videos"], bad.name)
    _cli_fails_clearly(["init", root], bad.name)
    _cli_fails_clearly(["verify", root], bad.name)
    with pytest.raises(CorruptStoreError, match=bad.name):
        s.read("videos")
    report = repair(root)
    assert report.remaining == [] and len(report.quarantined) == 1
    moved = list((s.root / "quarantine").rglob(bad.name))
    assert len(moved) == 1 and json.loads(next((s.root / "quarantine").rglob("report.json"))
                                          .read_text())["quarantined"]
    assert Store(root).query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 1
    assert runner.invoke(app, ["verify", root]).exit_code == 0


def test_truncated_catalog(tmp_path: Path) -> None:
    s = _filled(tmp_path)
    _truncate(s.root / "catalog.duckdb", 1000)
    root = str(s.root)
    # queries do not read the catalog (it is for other DuckDB clients): they keep working
    assert runner.invoke(app, ["query", root, "SELECT count(*) FROM videos"]).exit_code == 0
    assert runner.invoke(app, ["stats", root]).exit_code == 0
    _cli_fails_clearly(["init", root], "catalog.duckdb")
    _cli_fails_clearly(["verify", root], "catalog.duckdb")
    assert not verify(root).ok
    assert repair(root).remaining == []
    assert Store(root).query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 4


def test_garbage_marker(tmp_path: Path) -> None:
    s = _filled(tmp_path)
    (s.root / "store.json").write_text("}{ garbage")
    root = str(s.root)
    for args in (["query", root, "SELECT 1"], ["init", root], ["stats", root]):
        _cli_fails_clearly(args, "store.json")
    assert [p.kind for p in verify(root).problems] == ["marker"]
    assert repair(root).remaining == []
    assert Store(root).read("videos").num_rows == 4


def test_garbage_journal_and_orphans(tmp_path: Path) -> None:
    s = _filled(tmp_path)
    before = _content(s)
    (s.root / store_mod.JOURNAL).write_text('{"renames": [')
    orphan = s.part_files("videos")[0].with_name(".part-x.parquet.tmp")
    orphan.write_bytes(b"half")
    root = str(s.root)
    _cli_fails_clearly(["query", root, "SELECT 1"], "_journal.json")
    _cli_fails_clearly(["init", root], "_journal.json")
    kinds = sorted(p.kind for p in verify(root).problems)
    assert kinds == ["journal", "orphan"]
    report = repair(root)
    assert report.remaining == [] and not orphan.exists()
    assert _content(Store(root)) == before


def test_verify_reports_missing_feature_file(tmp_path: Path) -> None:
    s = _filled(tmp_path)
    (s.root / s.feature_path(W.video_id, "m")).unlink()
    problems = verify(s).problems
    assert [p.kind for p in problems] == ["feature"] and W.video_id in problems[0].message


def test_read_only_store_answers_queries_and_refuses_writes(tmp_path: Path) -> None:
    s = _filled(tmp_path)
    (s.root / ".lock").unlink()
    ro = Store(s.root, read_only=True)
    assert ro.query("SELECT count(*) AS n FROM videos").column("n")[0].as_py() == 4
    assert ro.read("videos").num_rows == 4
    with pytest.raises(ReadOnlyStoreError, match="read-only"):
        ro.append("videos", [Video.create("yt", "new")])
    assert not (s.root / ".lock").exists()


# ---------------------------------------------------------------------- concurrent workers
def _worker(root: str, log: str, fail: bool, barrier: Any = None) -> None:
    waited: list[bool] = []

    def process(rows):
        if barrier is not None and not waited:
            # both workers take their work list before either commits: a worker that starts
            # after the other's failed commit would (rightly) retry those items as attempt 2
            barrier.wait(60)
            waited.append(True)
        with open(log, "a") as fh:
            for r in rows:
                fh.write(r["video_id"] + "\n")
        time.sleep(0.02)  # keep both workers inside the work list at once
        if fail:
            return [Failed("flaky source") for _ in rows]
        return [Ok(output={"n": 1}) for _ in rows]

    stage = Stage("probe", "v1", "videos", process, batch_size=2, max_attempts=3)
    run_stage(Store(root), stage, shard_size=3)
    os._exit(0)


@pytest.mark.parametrize("fail", [False, True])
def test_two_workers_split_the_work(tmp_path: Path, fail: bool) -> None:
    s = Store.init(tmp_path / "s")
    vids = [Video.create("yt", f"v{i:03d}") for i in range(40)]
    s.append("videos", vids)
    ctx = mp.get_context("fork")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_worker, args=(str(s.root), str(lg), fail, barrier))
             for lg in logs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    done = [lg.read_text().split() if lg.exists() else [] for lg in logs]
    assert sorted(done[0] + done[1]) == sorted(v.video_id for v in vids)  # each item once
    assert done[0] and done[1], "both workers should have taken a share"
    rows = s.read("stage_results").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(v.video_id for v in vids)
    assert {r["attempt"] for r in rows} == {1}
    assert json.loads((s.root / "claims" / "probe.json").read_text()) == {}
    if fail:  # a second pair of workers retries every item once, with attempt 2
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_worker, args=(str(s.root), str(lg), fail, barrier))
                 for lg in logs]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        rows = s.read("stage_results").to_pylist()
        keys = [(r["id"], r["attempt"]) for r in rows]
        assert len(keys) == len(set(keys)) == 80


def test_stage_media_paths_are_store_relative(store: Store) -> None:
    from prevad.records import Segment

    store.append("videos", [Video.create("yt", "a")])
    media = store.root / "media" / "clip.mp4"

    def process(rows):
        media.parent.mkdir(exist_ok=True)
        media.write_bytes(b"x")
        r = rows[0]
        return [Ok({"segments": [Segment("s1", r["video_id"], "yt", 0, 1, uri=str(media))]})]

    run_stage(store, Stage("trim", "v1", "videos", process))
    assert store.read("segments").column("uri").to_pylist() == ["media/clip.mp4"]


def test_work_list_query_reads_named_sql(store: Store) -> None:
    store.append("videos", [Video.create("yt", "a")])
    got = store.query(queries.ATTEMPTS_OF_IDS, {"stage": "x", "stage_version": "1",
                                                "ids": ["nope"]})
    assert got.num_rows == 0 and isinstance(got, pa.Table)


def test_reimport_shortcut_only_when_every_row_is_still_stored(tmp_path: Path) -> None:
    s = Store.init(tmp_path / "s")
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_entries(6)))
    first = interop.import_benchmark(s, "bench", path, classes=BENCH_CLASSES)
    assert (first.written, first.skipped) == (12, 0)
    again = interop.import_benchmark(s, "bench", path, classes=BENCH_CLASSES)
    assert (again.written, again.skipped) == (0, 12)
    # lose the annotations (as a repair quarantine would): the shortcut must not apply
    for part in s.part_files("annotations"):
        part.unlink()
        store_mod.sidecar_path(part).unlink()
    third = interop.import_benchmark(Store(s.root), "bench", path, classes=BENCH_CLASSES)
    assert (third.written, third.skipped) == (6, 6)
    assert Store(s.root).read("annotations").num_rows == 6
