"""`make demo`: the curation chain closes its loop on a generated world (no internet, no GPU).

On Prefect's embedded server, each step a thin task or flow over the library:

1. a generated world (:mod:`curation.world`): ~80 corpus videos whose captions come from a
   grammar over the taxonomy, H.264 files with planted cuts, dissolves, title cards, duplicates,
   broken files and one visual anomaly event per anomalous video, the truth table, and a
   held-out test split (never curated) in the benchmarks' annotation format;
2. the world served on 127.0.0.1 (byte ranges on and off, one HLS stream); the chain runs on
   it: retrieve (dense captions) -> acquire (yt-dlp) -> record (ffmpeg, the stream) -> dedup
   (exact and near copies dropped) -> clean (PySceneDetect: single-shot clips, the unit of
   every later step) -> describe / verify / judge on tiny random-weight Qwen2-VL / Qwen2
   models built locally (their words are noise: every clip gets the same pre-label);
3. review through the Label Studio export/import files, by a **simulated reviewer**
   (:mod:`curation.simulated_review`, annotator ``simulated-reviewer``) that corrects the AI
   pre-labels of the clips from the truth table (category, anomaly yes/no, frame-exact spans
   relative to the clip); the demo prints how many pre-labels it changed;
4. CLIP frame features of the curated clips as decoded (tiny random CLIP; nothing planted);
5. ``lagovad train --labels human`` on the reviewed labels;
6. zero-shot evaluation on the held-out world split (``lagovad eval --benchmark world
   --annotations ... --definition ...``) and ``lagovad detect`` on one held-out video under a
   free-text definition.

It prints the held-out AUC and exits non-zero when training was skipped or the AUC is below
0.9. Usage: ``python -m flows.demo --out runs/demo``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

# Prefect reads this when it is imported: the embedded server can take longer than the default
# 20 s to start on a loaded 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows.curate import curate, review_export_task, review_import_task  # noqa: E402
from flows.lagovad_flows import extract_task, train_flow  # noqa: E402
from flows.stage_flow import data_card_task  # noqa: E402
from prevad.io import atomic_write_json  # noqa: E402

REVIEWER = "simulated-reviewer"
DEMO_MODEL = "lagovad-tiny"
CLIP_TINY = "lagovad-clip-tiny"
#: The held-out AUC the demo must reach (else it exits non-zero).
MIN_AUC = 0.9
#: Retrieval keeps the captions that match a category (min_score), as many as there are.
RETRIEVE = {"method": "dense", "top_k": 1000, "min_score": 0.3}
FRAMES = {"frames": 2, "frame_size": 56}
#: Weights seed of the tiny judge. A random model gives the same answer to every prompt; with
#: seed 4 it is self-consistent ("anomaly, Explosion"), so every item reaches review with it.
JUDGE_SEED = 4
FEATURES = {"model": CLIP_TINY, "pretrained": "none", "device": "cpu", "batch_size": 64,
            "workers": 2}
#: Training of lagovad-tiny on the reviewed labels.
TRAIN = {"epochs": 20, "batch_size": 8, "lr": 1e-2}
HUMAN_LABELS = """
SELECT split, count(*) AS n, count(*) FILTER (WHERE is_anomaly) AS abnormal
FROM annotations WHERE dataset = 'prevad' AND annotator_kind = 'human'
  AND annotator = $annotator::VARCHAR
GROUP BY split ORDER BY split
"""


# ---------------------------------------------------------------------------- tasks
@task(cache_policy=NO_CACHE)
def world_task(folder: str, videos: int, test_videos: int, seed: int,
               profile: str) -> dict[str, Any]:
    """Generate the world (only what is missing when the folder already holds it)."""
    from curation.world import generate_world

    return generate_world(folder, videos, seed=seed, test_videos=test_videos,
                          scale_profile=profile, workers=2).to_dict()


@task(cache_policy=NO_CACHE)
def build_models(folder: str) -> dict[str, str]:
    """Tiny random-weight Qwen2-VL (describe, verify) and Qwen2 (judge) models, built once."""
    from curation.engines.tiny import build_tiny_llm, build_tiny_vlm

    vlm, llm = Path(folder) / "tiny-qwen2-vl", Path(folder) / f"tiny-qwen2-seed{JUDGE_SEED}"
    if not (vlm / "config.json").is_file():
        build_tiny_vlm(vlm)
    if not (llm / "config.json").is_file():
        build_tiny_llm(llm, seed=JUDGE_SEED)
    return {"vlm": str(vlm), "llm": str(llm)}


@task(cache_policy=NO_CACHE)
def init_store_task(root: str) -> str:
    """``prevad init`` (idempotent)."""
    from prevad import Store

    Store.init(root)
    return root


@task(cache_policy=NO_CACHE)
def simulated_review_task(store: str, tasks_file: str, world: str) -> dict[str, Any]:
    """The simulated reviewer's Label Studio export of the review tasks (next to them)."""
    from curation.simulated_review import review_file
    from prevad import Store

    out = Path(tasks_file).with_name("export.json")
    stats = review_file(Store(store), tasks_file, world, out, annotator=REVIEWER, spans="all")
    return {"file": str(out), **stats.to_dict()}


@task(cache_policy=NO_CACHE)
def human_labels(root: str) -> list[dict[str, Any]]:
    """The reviewer's labels per split (what training uses)."""
    from prevad import Store

    return Store(root).query(HUMAN_LABELS, {"annotator": REVIEWER}).to_pylist()


@task(cache_policy=NO_CACHE)
def curated_counts(root: str, steps: dict[str, Any]) -> dict[str, Any]:
    """What the chain kept: videos downloaded, copies dedup dropped, single-shot clips."""
    from prevad import Store

    store = Store(root)
    dedup = steps.get("dedup") or {}
    clips = store.read("segments", ["segment_id", "video_id"])
    return {"videos": store.read("videos", ["video_id"]).num_rows,
            "duplicates": dict(dedup.get("rejected") or {}),
            "clips": clips.num_rows,
            "clipped_videos": len(set(clips.column("video_id").to_pylist()))}


@task(cache_policy=NO_CACHE)
def held_out_features(world: str, out: str) -> dict[str, Any]:
    """Tiny-CLIP features of the held-out videos as decoded (``lagovad extract --out``)."""
    from lagovad.extract import extract
    from lagovad.image_encoder import load_image_encoder

    encoder = load_image_encoder(CLIP_TINY, None, device="cpu")
    s = extract([Path(world) / "test" / "videos"], encoder, out_dir=out,
                batch_size=FEATURES["batch_size"], decode_workers=FEATURES["workers"],
                progress=False)
    return {"folder": out, "extracted": s.extracted, "skipped": s.skipped, "failed": s.failed}


@task(cache_policy=NO_CACHE)
def evaluate_world(checkpoint: str, features: str, world: str, out: str) -> dict[str, Any]:
    """Zero-shot evaluation on the held-out split: what ``lagovad eval --benchmark world``
    with the world's ``--annotations`` and ``--definition`` does."""
    import lagovad
    from lagovad.eval import runner
    from lagovad.eval.sources import feature_source

    ann = Path(world) / "test" / "annotations.json"
    defn = Path(world) / "test" / "definition.json"
    dev = runner.pick_device("cpu")
    model, _ = lagovad.load_checkpoint(Path(checkpoint), device=dev)
    scorer = runner.ModelScorer(model, dev, "descriptions", 16)

    def score(bench, definition):
        return scorer.score(bench, definition, feature_source(features, bench).loaders,
                            progress=False)

    results = runner.run(["world"], score, f"LaGoVAD ({Path(checkpoint).name})",
                         annotations={"world": ann}, out_dir=Path(out),
                         definitions={"world": defn})
    det = results["benchmarks"]["world"]["detection"]
    return {"auc": det["auc"], "ap": det["ap"], "n_videos": det["n_videos"],
            "reports": out, "command": (
                f"lagovad eval --benchmark world --annotations {ann} --definition {defn} "
                f"--features {features} --checkpoint {checkpoint} --out {out}")}


@task(cache_policy=NO_CACHE)
def detect_task(checkpoint: str, world: str, out: str) -> dict[str, Any]:
    """``lagovad detect`` on the first anomalous held-out video, under a free-text definition
    (the world's descriptions of its category), with the truth beside the intervals."""
    from curation.world import load_truth
    from curation.world.grammar import descriptions
    from lagovad.definition import AnomalyDefinition
    from lagovad.detect import detect, encoder_for, load_detector, write_outputs

    truth = load_truth(world)
    row = next(r for _, r in sorted(truth.items()) if r["split"] == "test" and r["is_anomaly"])
    texts = descriptions(row["category"], 2)
    net, label = load_detector(Path(checkpoint), device="cpu")
    encoder = encoder_for(net, device="cpu")
    det = detect(Path(world) / row["file"], AnomalyDefinition.from_strings(texts), net, encoder,
                 checkpoint=label, cache_dir=Path(out) / "cache", min_duration_s=0.5)
    files = write_outputs(det, out)
    return {"video": row["file"], "definition": texts, "truth_s": row["anomaly_s"],
            "intervals_s": [[round(iv.start_s, 2), round(iv.end_s, 2)] for iv in det.intervals],
            "max_score": float(det.anomaly_scores.max()),
            "files": {k: str(v) for k, v in files.items()}}


def _network_params(cls_path: str) -> dict[str, Any]:
    """``allow_private_network=True`` where the stage's settings have that field (D4)."""
    import importlib

    module, _, name = cls_path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    fields = {f.name for f in dataclasses.fields(cls)}
    return {"allow_private_network": True} if "allow_private_network" in fields else {}


def train_curated(root: str, out: str, labels: list[dict[str, Any]], epochs: int
                  ) -> dict[str, Any]:
    """Train lagovad-tiny on the reviewed labels (``--labels human``), when both kinds exist."""
    n = sum(r["n"] for r in labels if r["split"] == "train")
    abnormal = sum(r["abnormal"] for r in labels if r["split"] == "train")
    if not abnormal or abnormal == n:
        reason = (f"the {n} reviewed train items are all "
                  f"{'abnormal' if abnormal else 'normal'}; training needs both")
        get_run_logger().warning("training skipped: %s", reason)
        return {"skipped": reason}
    return train_flow(root, out, model=DEMO_MODEL, epochs=epochs,
                      batch_size=TRAIN["batch_size"], lr=TRAIN["lr"], dataset="prevad",
                      val_split="", device="cpu",
                      options={"labels": "human", "warmup_steps": 5, "progress": False,
                               "detach_pool": True, "overwrite": True})


# ---------------------------------------------------------------------------- the flow
@flow(name="lagovad-demo", log_prints=True)
def demo(out: str = "runs/demo", videos: int = 80, test_videos: int = 24, seed: int = 0,
         profile: str = "small", epochs: int = TRAIN["epochs"], stream_seconds: float = 3.0,
         min_auc: float = MIN_AUC) -> dict[str, Any]:
    """Curate a generated world, review it, train on it and evaluate on its held-out split.

    Args:
        out: output folder (world, store, models, review files, checkpoints, evaluation).
        videos: corpus videos of the world.
        test_videos: held-out test videos.
        seed: the world's seed.
        profile: the world's scale profile (``default`` or ``small``).
        epochs: training epochs on the reviewed labels.
        stream_seconds: seconds of the world's HLS stream to record.
        min_auc: the held-out AUC below which the run counts as failed (``ok`` false).

    Returns:
        Summary of every step (also ``<out>/summary.json``); ``ok`` tells whether training
        ran and the held-out AUC reached ``min_auc``.
    """
    from curation.world.serve import WorldServer

    log = get_run_logger()
    out_dir = Path(out).resolve()
    world, root = str(out_dir / "world"), str(out_dir / "store")
    summary: dict[str, Any] = {"world": world_task(world, videos, test_videos, seed, profile)}
    init_store_task(root)
    models = build_models(str(out_dir / "models"))
    vlm = {"engine": "transformers", "model": models["vlm"], "device": "cpu", "batch_size": 8,
           "max_tokens": 96}
    params = {
        "acquire": {"retries": 1, "backoff_s": 0.2,
                    **_network_params("curation.acquire:AcquireSettings")},
        "record": {"socket_timeout_s": 15.0, **_network_params("curation.record:RecordSettings")},
        "describe": {**vlm, **FRAMES, "min_chars": 4, "max_chars": 40},
        "verify": {**vlm, **FRAMES, "min_score": 0.0, "min_clip_mean": None,
                   "clip_model": CLIP_TINY, "clip_pretrained": None, "max_claims": 2,
                   "max_claim_chars": 8},
        "judge": {**vlm, "model": models["llm"], "require_verified": False,
                  "max_reason_chars": 40},
    }
    with WorldServer(world) as server:
        corpus = server.corpus(out_dir / "corpus.csv")
        summary["curate"] = curate(
            root, steps=["retrieve", "acquire", "record", "dedup", "clean", "describe", "verify",
                         "judge"],
            corpus=str(corpus), retrieve=RETRIEVE, streams=[server.stream_url],
            stream_seconds=stream_seconds, params=params, engine="local", retries=0,
            card=False)
        summary["served"] = dict(server.stats)
    summary["curated"] = curated_counts(root, summary["curate"]["steps"])
    review_dir = str(Path(root) / "review")
    exported = review_export_task(root, review_dir, None, "train")
    reviewed = simulated_review_task(root, exported["tasks"], world)
    summary["review"] = {"export": exported, "reviewer": reviewed,
                         "import": review_import_task(root, reviewed["file"])}
    log.info("the simulated reviewer changed %d of %d pre-labels", reviewed["changed"],
             reviewed["tasks"])
    summary["features"] = extract_task(
        root, None, FEATURES["model"], FEATURES["pretrained"], 8, None, None,
        FEATURES["batch_size"], FEATURES["workers"], FEATURES["device"], None, None)
    summary["human_labels"] = human_labels(root)
    summary["train"] = train_curated(root, str(out_dir / "train"), summary["human_labels"],
                                     epochs)
    checkpoint = summary["train"].get("checkpoint")
    if checkpoint:
        feats = held_out_features(world, str(out_dir / "features" / "world-test"))
        summary["held_out_features"] = feats
        summary["eval"] = evaluate_world(checkpoint, feats["folder"], world,
                                         str(out_dir / "eval"))
        summary["detect"] = detect_task(checkpoint, world, str(out_dir / "detect"))
        log.info("held-out world AUC = %.4f", summary["eval"]["auc"])
    auc = (summary.get("eval") or {}).get("auc")
    summary["ok"] = bool(checkpoint) and auc is not None and auc >= min_auc
    summary["min_auc"] = min_auc
    summary["card"] = data_card_task(root, title="PreVAD demo curation (generated world)")
    summary["outputs"] = {
        "world": world, "store": root, "corpus": str(out_dir / "corpus.csv"),
        "review_tasks": exported["tasks"], "review_export": reviewed["file"],
        "checkpoint": checkpoint, "evaluation": str(out_dir / "eval"),
        "detect": str(out_dir / "detect"), "data_card": summary["card"],
        "summary": str(out_dir / "summary.json"),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def report(summary: dict[str, Any]) -> str:
    """What the run did, where every output is, and how to see the runs in the Prefect UI."""
    rev = summary["review"]["reviewer"]
    w = summary["world"]["counts"]
    lines = ["", "PreVAD demo finished.",
             f"  world           {w['corpus']} corpus videos ({w['anomalous']} anomalous "
             f"captions), {w['test']} held-out",
             _curated_line(summary["curated"]),
             f"  review          the simulated reviewer changed {rev['changed']} of "
             f"{rev['tasks']} pre-labels ({rev['category_changed']} categories, "
             f"{rev['anomaly_flipped']} anomaly yes/no, {rev['spans_drawn']} items with spans)"]
    labels = {r["split"]: r for r in summary["human_labels"]}
    if "train" in labels:
        lines.append(f"  reviewed labels train {labels['train']['n']} items "
                     f"({labels['train']['abnormal']} abnormal)")
    if "skipped" in summary["train"]:
        lines.append(f"  training        SKIPPED: {summary['train']['skipped']}")
    if "eval" in summary:
        lines.append(f"  held-out AUC    {summary['eval']['auc']:.4f} on "
                     f"{summary['eval']['n_videos']} world test videos (target >= "
                     f"{summary['min_auc']})")
        d = summary["detect"]
        lines.append(f"  detect          {Path(d['video']).name} under {d['definition'][0]!r}: "
                     f"intervals {d['intervals_s']} s (planted {d['truth_s']} s)")
    lines += ["", "Outputs:"]
    lines += [f"  {k:<14} {v}" for k, v in summary["outputs"].items()]
    if "eval" in summary:
        lines += ["", "Evaluate again:  " + summary["eval"]["command"]]
    lines += ["Query the store:  prevad curate status " + summary["outputs"]["store"],
              "Prefect UI on these runs (stored in $PREFECT_HOME, default ~/.prefect):",
              "  prefect server start --host 127.0.0.1   # then open http://127.0.0.1:4200/runs"]
    return "\n".join(lines)


def _curated_line(c: dict[str, Any]) -> str:
    dups = c["duplicates"]
    kinds = ", ".join(f"{n} {k.removesuffix('_duplicate')}" for k, n in sorted(dups.items()))
    return (f"  curated         {c['videos']} videos stored, {sum(dups.values())} copies dropped "
            f"by dedup ({kinds or 'none'}), {c['clips']} single-shot clips from "
            f"{c['clipped_videos']} videos")


def failure(summary: dict[str, Any]) -> str | None:
    """Why the run did not close its loop (training skipped, AUC too low), or None."""
    if summary.get("ok"):
        return None
    if "skipped" in summary["train"]:
        return str(summary["train"]["skipped"])
    if "eval" not in summary:
        return "no checkpoint to evaluate"
    return f"held-out AUC {summary['eval']['auc']:.4f} < {summary['min_auc']}"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: exit status 1 when training was skipped or the AUC is low."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--videos", type=int, default=80)
    parser.add_argument("--test-videos", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    summary = demo(out=args.out, videos=args.videos, test_videos=args.test_videos,
                   seed=args.seed, epochs=args.epochs)
    print(report(summary))
    why = failure(summary)
    if why:
        print(f"error: the demo did not close its loop: {why}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
