"""``prevad review``: the Label Studio round trip (push, pull, export, import).

The token comes from $LABEL_STUDIO_API_KEY (never an option, never printed). Errors print
``error: ...`` lines (one per bad task) and exit with code 2; good tasks are still imported.

``--checkpoint`` needs a span proposer, which the data layer does not import (D2): the ``prevad``
command (:mod:`toolkit.cli`) mounts this app with :class:`ReviewHooks` as its context object.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import typer

from prevad import review
from prevad.errors import PrevadError
from prevad.store import Store

app = typer.Typer(
    help="Human review of AI pre-labels in Label Studio (push, pull, export, import).",
    no_args_is_help=True, pretty_exceptions_enable=False,
)
F = TypeVar("F", bound=Callable[..., Any])

URL = typer.Option(..., "--url", help="Label Studio server, e.g. http://127.0.0.1:8080")
PROJECT = typer.Option(review.DEFAULT_PROJECT, "--project", help="Label Studio project title")
CHECKPOINT = typer.Option(
    None, "--checkpoint",
    help="LaGoVAD checkpoint dir: propose spans of validation videos from stored features",
)
SPLIT = typer.Option("train", "--split", help="split of videos whose split is not known")
DOC_ROOT = typer.Option(
    None, "--document-root",
    help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (default: $LOCAL_FILES_DOCUMENT_ROOT or /)",
)
MEDIA_URL = typer.Option(
    None, "--media-url", help="serve videos from this URL prefix (+ path in the store) instead",
)


def _clean_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (PrevadError, OSError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


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


def _media(store: Store, document_root: Path | None, media_url: str | None) -> review.Media:
    env_root = os.environ.get("LOCAL_FILES_DOCUMENT_ROOT") or os.environ.get(
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
    )
    root = document_root or (Path(env_root) if env_root else None)
    return review.Media(store.root, document_root=root, url_prefix=media_url)


def _report_errors(errors: list[review.TaskError]) -> None:
    for e in errors:
        typer.echo(f"error: {e}", err=True)
    if errors:
        raise typer.Exit(2)


@app.command()
@_clean_errors
def push(
    root: Path, url: str = URL, project: str = PROJECT, checkpoint: Path | None = CHECKPOINT,
    split: str = SPLIT, document_root: Path | None = DOC_ROOT, media_url: str | None = MEDIA_URL,
) -> None:
    """Create/update the Label Studio project; import videos awaiting review with pre-labels."""
    store = Store(root)
    client = review.LabelStudio(url, review.token_from_env())
    s = review.push(store, client, _media(store, document_root, media_url), project=project,
                    proposer=_proposer(checkpoint), default_split=split)
    verb = "created" if s.project_created else "updated"
    typer.echo(f"project {project!r} (id {s.project_id}) {verb}: {s.created} tasks created, "
               f"{s.predictions_added} predictions added, {s.unchanged} tasks already there")
    _report_errors(s.errors)


def _print_import(s: review.ImportSummary) -> None:
    typer.echo(f"{s.written} human annotations written, {s.unchanged} unchanged, "
               f"{s.pending} tasks not annotated yet")
    _report_errors(s.errors)


@app.command()
@_clean_errors
def pull(root: Path, url: str = URL, project: str = PROJECT) -> None:
    """Import completed Label Studio annotations as human `annotations` rows."""
    store = Store(root)
    client = review.LabelStudio(url, review.token_from_env())
    _print_import(review.pull(store, client, project=project))


@app.command("export")
@_clean_errors
def export_(
    root: Path, out: Path, checkpoint: Path | None = CHECKPOINT, split: str = SPLIT,
    document_root: Path | None = DOC_ROOT, media_url: str | None = MEDIA_URL,
) -> None:
    """Write a Label Studio import file (tasks + pre-labels) and its labeling config."""
    store = Store(root)
    tasks, config, n, errors = review.export_tasks(
        store, out, _media(store, document_root, media_url), proposer=_proposer(checkpoint),
        default_split=split,
    )
    typer.echo(f"{tasks}: {n} tasks; labeling config: {config}")
    _report_errors(errors)


@app.command("import")
@_clean_errors
def import_(root: Path, file: Path) -> None:
    """Import human annotations from a Label Studio JSON export FILE."""
    _print_import(review.import_export_file(Store(root), file))
