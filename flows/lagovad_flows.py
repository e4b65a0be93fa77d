"""Prefect flows over the LaGoVAD library: ``extract-features``, ``train`` and ``evaluate``.

Each flow is one thin task over the function the ``lagovad`` command calls
(:func:`lagovad.extract.extract`, :func:`lagovad.train.train`, :func:`lagovad.eval.runner.run`),
with the same defaults, a ``gpu`` concurrency tag, retries only for transient errors
(:func:`flows.stage_flow.retry_transient`) and a table artifact of what it did. Extraction and
training resume from the store / the output folder, so a rerun after a crash continues.

Without ``PREFECT_API_URL`` they run on Prefect's embedded server; deployments are in
``prefect.yaml``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.stage_flow import artifact_key, retry_transient
from lagovad.eval.benchmarks import BENCHMARKS as ALL_BENCHMARKS


# ---------------------------------------------------------------------------- extract-features
@task(cache_policy=NO_CACHE, tags=["gpu"], retries=2, retry_delay_seconds=10,
      retry_condition_fn=retry_transient)
def extract_task(store: str, inputs: list[str] | None, model: str, pretrained: str | None,
                 stride: int, offset: int | None, size: int | None, batch_size: int,
                 workers: int, device: str | None, model_id: str | None,
                 export: str | None) -> dict[str, Any]:
    """CLIP frame features into the store (videos already extracted are skipped)."""
    from lagovad.extract import extract
    from lagovad.image_encoder import load_image_encoder
    from prevad.store import Store

    encoder = load_image_encoder(model, pretrained, device=device)
    summary = extract(inputs or None, encoder, store=Store(store), export_dir=export,
                      stride=stride, offset=offset, size=size, batch_size=batch_size,
                      decode_workers=workers, model_id=model_id, progress=False)
    out = asdict(summary)
    out["frames_per_s"] = summary.frames_per_s
    out["model_id"] = model_id or encoder.model_id
    create_table_artifact(
        key=artifact_key("extract-features"),
        table=[{"outcome": k, "videos": out[k]}
               for k in ("extracted", "skipped", "failed", "total")],
        description=(f"features `{out['model_id']}` into `{store}`: {summary.frames_decoded} "
                     f"frames in {summary.seconds:.1f} s ({summary.frames_per_s:.0f} frames/s)"),
    )
    return out


@flow(name="extract-features", log_prints=True)
def extract_features(store: str, inputs: list[str] | None = None, model: str = "ViT-B-16",
                     pretrained: str | None = "openai", stride: int = 8, offset: int | None = None,
                     size: int | None = None, batch_size: int = 64, workers: int = 2,
                     device: str | None = None, model_id: str | None = None,
                     export: str | None = None) -> dict[str, Any]:
    """Extract CLIP frame features into a store (``lagovad extract --store``).

    Args:
        store: store root; without ``inputs`` every stored video is extracted.
        inputs: video files or folders to add to the store.
        model, pretrained: open_clip model and weights (tag, local file, or 'none').
        stride, offset, size: sampling protocol (default: one frame in 8, from frame 4).
        batch_size: frames per forward; workers: videos decoded concurrently.
        device: cuda / cpu (default: cuda when present).
        model_id: feature model id stored with the features.
        export: also write ``<export>/<stem>.npy``.
    """
    out = extract_task(store, inputs, model, pretrained, stride, offset, size, batch_size,
                       workers, device, model_id, export)
    get_run_logger().info("extracted %d, skipped %d, failed %d of %d videos", out["extracted"],
                          out["skipped"], out["failed"], out["total"])
    return out


# ---------------------------------------------------------------------------- train
@task(cache_policy=NO_CACHE, tags=["gpu"], retries=1, retry_delay_seconds=10,
      retry_condition_fn=retry_transient)
def train_task(config: dict[str, Any]) -> dict[str, Any]:
    """Train (resuming from ``config['resume']`` when given); returns metrics and checkpoint."""
    from lagovad.train import TrainConfig, resolve_resume, train

    cfg = TrainConfig(**config)
    metrics = train(cfg)
    checkpoint = resolve_resume(cfg.out)
    create_table_artifact(
        key=artifact_key("train"),
        table=[{"metric": k, "value": v} for k, v in sorted(metrics.items())
               if isinstance(v, int | float | str)],
        description=f"`{cfg.model}` on `{cfg.store}`: last checkpoint `{checkpoint}`",
    )
    return {"metrics": metrics, "checkpoint": str(checkpoint)}


@flow(name="train", log_prints=True)
def train_flow(store: str, out: str, model: str = "lagovad-b16", epochs: int = 40,
               batch_size: int = 64, lr: float = 5e-5, seed: int = 2024,
               feature_model: str | None = None, dataset: str | None = None,
               train_split: str = "train", val_split: str = "val", device: str = "auto",
               pretrained: str | None = None, resume: str | None = None,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train LaGoVAD on a store (``lagovad train``); ``options`` sets any other TrainConfig field.

    Returns:
        ``{"metrics": last epoch's metrics, "checkpoint": last checkpoint folder}``.
    """
    config = {"store": store, "out": out, "model": model, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "seed": seed, "feature_model": feature_model,
              "dataset": dataset, "train_split": train_split, "val_split": val_split,
              "device": device, "pretrained": pretrained, "resume": resume, "progress": False,
              **(options or {})}
    result = train_task(config)
    get_run_logger().info("checkpoint: %s", result["checkpoint"])
    return result


# ---------------------------------------------------------------------------- evaluate
@task(cache_policy=NO_CACHE, tags=["gpu"], retries=1, retry_delay_seconds=10,
      retry_condition_fn=retry_transient)
def evaluate_task(features: str, benchmarks: list[str], out: str, checkpoint: str | None,
                  clip_baseline: str | None, clip_pretrained: str | None,
                  feature_model: str | None, allow_missing: bool, prompts: str,
                  device: str | None, batch_size: int, method: str | None) -> dict[str, Any]:
    """Zero-shot evaluation of a checkpoint (or the CLIP baseline) on ``benchmarks``."""
    from lagovad.eval import runner
    from lagovad.eval.benchmarks import EvalError, check_name
    from lagovad.eval.sources import feature_source

    if (checkpoint is None) == (clip_baseline is None):
        raise EvalError("pass exactly one of checkpoint or clip_baseline")
    names = list(dict.fromkeys(check_name(n) for n in benchmarks))
    dev = runner.pick_device(device)
    if checkpoint is not None:
        import lagovad

        model, _ = lagovad.load_checkpoint(Path(checkpoint), device=dev)
        scorer_obj = runner.ModelScorer(model, dev, prompts, batch_size)
        label = method or f"LaGoVAD ({Path(checkpoint).name})"
    else:
        from lagovad.eval.baseline import ClipBaseline

        scorer_obj = ClipBaseline(clip_baseline, clip_pretrained, dev, prompts)
        label = method or f"CLIP {clip_baseline} (training-free)"

    def score(bench, defn):
        src = feature_source(features, bench, allow_missing, feature_model)
        return scorer_obj.score(bench, defn, src.loaders)

    results = runner.run(names, score, label, out_dir=Path(out))
    rows = [{"benchmark": name, **{k: r["detection"][k] for k in
                                   ("metric", "auc", "ap", "n_videos", "coverage")}}
            for name, r in results["benchmarks"].items()]
    create_table_artifact(key=artifact_key("evaluate"), table=rows,
                          description=f"{label}: zero-shot detection; reports in `{out}`")
    return results


@flow(name="evaluate", log_prints=True)
def evaluate(features: str, out: str = "runs/eval", checkpoint: str | None = None,
             benchmarks: list[str] | None = None, clip_baseline: str | None = None,
             clip_pretrained: str | None = "openai", feature_model: str | None = None,
             allow_missing: bool = False, prompts: str = "descriptions",
             device: str | None = None, batch_size: int = 16,
             method: str | None = None) -> dict[str, Any]:
    """Zero-shot evaluation on the seven benchmarks (``lagovad eval --all``).

    Args:
        features: folder of ``<video>.npy`` (flat or per benchmark) or a store root.
        out: reports folder (JSON, Markdown tables, figures).
        checkpoint: LaGoVAD checkpoint folder (or pass ``clip_baseline``).
        benchmarks: subset of the seven (default all).
        clip_baseline, clip_pretrained: training-free CLIP baseline instead of a checkpoint.
        feature_model: feature model id inside a store.
        allow_missing: evaluate the videos present instead of failing.
        prompts: ``descriptions`` (official) or ``names``.
        device, batch_size, method: as ``lagovad eval``.
    """
    results = evaluate_task(features, list(benchmarks or ALL_BENCHMARKS), out, checkpoint,
                            clip_baseline, clip_pretrained, feature_model, allow_missing,
                            prompts, device, batch_size, method)
    log = get_run_logger()
    for name, r in results["benchmarks"].items():
        det = r["detection"]
        log.info("%s: %s = %.4f (%d videos)", name, det["metric"],
                 det["ap"] if det["metric"] == "ap" else det["auc"], det["n_videos"])
    return results
