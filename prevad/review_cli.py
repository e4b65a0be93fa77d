"""``prevad review``: the Label Studio round trip (push, pull, export, import).

The token comes from $LABEL_STUDIO_API_KEY (never an option, never printed). Bad input prints
``error: ...`` lines — one per bad task or clip, then the summary — and exits with code 2; the
good tasks are still imported (or exported).

``--checkpoint`` needs a span proposer, which the data layer does not import (D2): the ``prevad``
command (:mod:`toolkit.cli`) mounts this app with :class:`ReviewHooks` as its context object.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import typer

from prevad import review
from prevad.cli_errors import EXIT_BAD_INPUT, exit_on, number_option
from prevad.errors import PrevadError
from prevad.store import Store

app = typer.Typer(
    help="Human review of AI pre-labels in Label Studio (push, pull, export, import).",
    no_args_is_help=True, pretty_exceptions_enable=False,
)
clean_errors = exit_on(PrevadError, OSError)

URL = typer.Option(..., "--url", help="Label Studio server, e.g. http://127.0.0.1:8080")
PROJECT = typer.Option(review.DEFAULT_PROJECT, "--project", help="Label Studio project title")
CHECKPOINT = typer.Option(
    None, "--checkpoint",
    help="LaGoVAD checkpoint dir: propose spans of validation clips from stored features",
)
SPLIT = typer.Option("train", "--split", help="split of clips whose split is not known")
DOC_ROOT = typer.Option(
    None, "--document-root",
    help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (default: $LOCAL_FILES_DOCUMENT_ROOT or /)",
)
MEDIA_URL = typer.Option(
    None, "--media-url", help="serve media from this URL prefix (+ path in the store) instead",
)
JUDGE_VERSION = typer.Option(
    None, "--judge-version",
    help="judge stage version to review (default: the newest version with ok results)",
)
CFR = typer.Option(
    True, "--cfr/--no-cfr",
    help="review media at a constant frame rate (cut and transcoded under "
    "<store>/cache/review_media; spans stay frame-exact on variable-frame-rate video); "
    "--no-cfr serves whole videos as they are and cuts clips keeping their timestamps",
)
MEDIA_FPS = number_option(
    None, "--media-fps", integer=False, above=0,
    help="frame rate of CFR review media (default: the source's rate)",
)


@dataclass(frozen=True, slots=True)
class ReviewHooks:
    """What the layer above gives the review commands (the context object of this app).

    Attributes:
        span_proposer: ``--checkpoint`` directory -> the span proposer of that checkpoint.
    """

    span_proposer: Callable[[Path], review.SpanProposer]


def _proposer(checkpoint: Path | None) -> review.SpanProposer | None:
    """The span proposer of ``--checkpoint`` (None without one), from :class:`ReviewHooks`."""
    if checkpoint is None:
        return None
    hooks = click.get_current_context().find_object(ReviewHooks)
    if hooks is None:
        raise review.ReviewError("--checkpoint needs LaGoVAD's span proposals: run it as "
                                 "`prevad review ...` (the toolkit's command)")
    return hooks.span_proposer(checkpoint)


def _media(store: Store, document_root: Path | None, media_url: str | None, cfr: bool,
           media_fps: float | None) -> review.Media:
    if media_fps is not None and not (math.isfinite(media_fps) and media_fps > 0):
        raise review.ReviewError(f"--media-fps must be a positive number, got {media_fps}")
    env_root = os.environ.get("LOCAL_FILES_DOCUMENT_ROOT") or os.environ.get(
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
    )
    root = document_root or (Path(env_root) if env_root else None)
    return review.Media(store.root, document_root=root, url_prefix=media_url, cfr=cfr,
                        fps=media_fps)


def _report(errors: list[review.TaskError], summary: str) -> None:
    """Each error line (stderr), then the summary (stdout); exit 2 when there was an error."""
    for e in errors:
        typer.echo(f"error: {e}", err=True)
    typer.echo(summary)
    if errors:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
@clean_errors
def push(
    root: Path, url: str = URL, project: str = PROJECT, checkpoint: Path | None = CHECKPOINT,
    split: str = SPLIT, document_root: Path | None = DOC_ROOT, media_url: str | None = MEDIA_URL,
    judge_version: str | None = JUDGE_VERSION, cfr: bool = CFR,
    media_fps: float | None = MEDIA_FPS,
) -> None:
    """Create/update the Label Studio project; import clips awaiting review with pre-labels."""
    store = Store(root)
    media = _media(store, document_root, media_url, cfr, media_fps)
    client = review.LabelStudio(url, review.token_from_env())
    s = review.push(store, client, media, project=project, proposer=_proposer(checkpoint),
                    default_split=split, judge_version=judge_version)
    verb = "created" if s.project_created else "updated"
    _report(s.errors, f"project {project!r} (id {s.project_id}) {verb}: {s.created} tasks "
            f"created, {s.predictions_added} predictions added, {s.unchanged} tasks already "
            f"there, {len(s.errors)} clips with errors")


def _print_import(s: review.ImportSummary) -> None:
    _report(s.errors, f"{s.written} human annotations written, {s.unchanged} unchanged, "
            f"{s.pending} tasks not annotated yet, {len(s.errors)} of {s.tasks} tasks with "
            "errors (not imported)")


@app.command()
@clean_errors
def pull(root: Path, url: str = URL, project: str = PROJECT) -> None:
    """Import completed Label Studio annotations as human `annotations` rows."""
    store = Store(root)
    client = review.LabelStudio(url, review.token_from_env())
    _print_import(review.pull(store, client, project=project))


@app.command("export")
@clean_errors
def export_(
    root: Path, out: Path, checkpoint: Path | None = CHECKPOINT, split: str = SPLIT,
    document_root: Path | None = DOC_ROOT, media_url: str | None = MEDIA_URL,
    judge_version: str | None = JUDGE_VERSION, cfr: bool = CFR,
    media_fps: float | None = MEDIA_FPS,
) -> None:
    """Write a Label Studio import file (one task per clip + pre-labels) and its config."""
    store = Store(root)
    tasks, config, n, errors = review.export_tasks(
        store, out, _media(store, document_root, media_url, cfr, media_fps),
        proposer=_proposer(checkpoint), default_split=split, judge_version=judge_version,
    )
    _report(errors, f"{tasks}: {n} tasks; labeling config: {config}")


@app.command("import")
@clean_errors
def import_(root: Path, file: Path) -> None:
    """Import human annotations from a Label Studio JSON export FILE (task by task)."""
    _print_import(review.import_export_file(Store(root), file))
