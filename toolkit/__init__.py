"""The toolkit's composition layer: what assembles the packages into the ``prevad`` command.

It sits above ``prevad``, ``curation`` and ``lagovad`` (docs/DECISIONS.md, D2) and holds no
logic of its own: :mod:`toolkit.cli` mounts each package's commands and passes the data layer
what it needs from above (LaGoVAD's span proposals for review).
"""
