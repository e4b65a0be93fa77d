"""The ``prevad`` command: the data layer's commands, ``prevad curate`` and ``prevad review``.

The one place where the packages' command lines are put together (docs/DECISIONS.md, D2):

- the data layer's commands (:mod:`prevad.cli`: init, query, stats, verify, ...);
- ``prevad curate`` (:mod:`curation.cli`), whose stage commands load their module only when
  they run or are listed by ``--help``;
- ``prevad review`` (:mod:`prevad.review_cli`), given LaGoVAD's span proposals for
  ``--checkpoint`` (:class:`lagovad.proposals.DetectorSpans`, imported only then).

Nothing here imports torch: ``prevad --help``, ``prevad query`` and ``prevad curate status``
start without the model stack.
"""

from __future__ import annotations

from pathlib import Path

import typer

from curation.cli import app as curate_app
from prevad.cli import app as data_app
from prevad.review import ReviewError, SpanProposer
from prevad.review_cli import ReviewHooks
from prevad.review_cli import app as review_app


def detector_spans(checkpoint: Path) -> SpanProposer:
    """LaGoVAD's span proposer of a checkpoint directory (loads torch and the model).

    Raises:
        ReviewError: the checkpoint cannot be loaded (one ``error:`` line on the command line).
    """
    from lagovad.errors import LagovadError
    from lagovad.proposals import DetectorSpans

    try:
        return DetectorSpans(checkpoint)
    except LagovadError as exc:
        raise ReviewError(f"--checkpoint {checkpoint}: {exc}") from exc


app = typer.Typer(help="PreVAD: the dataset (Parquet + DuckDB store), its curation stages and "
                  "human review.", no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(data_app)
app.add_typer(curate_app, name="curate")
app.add_typer(review_app, name="review",
              context_settings={"obj": ReviewHooks(span_proposer=detector_spans)})

if __name__ == "__main__":  # pragma: no cover
    app()
