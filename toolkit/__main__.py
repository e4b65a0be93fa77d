"""``python -m toolkit``: the ``prevad`` command."""

from toolkit.cli import app

app()
