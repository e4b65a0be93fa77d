"""The PreVAD taxonomy as data: Normal, 7 top-level classes and 28 sub-categories.

Names follow the authors' release (src/datasets/PreVAD.py DEFAULT_CLASSES, see
shared/reference/official-notes.md). A video may carry a top-level class only, so the valid
anomaly labels are 7 + 28 = 35; with Normal 36 names in all.
"""

from __future__ import annotations

import difflib
import re

from prevad.errors import UnknownCategoryError

NORMAL = "Normal"

#: top-level class -> its sub-categories, in the authors' order.
HIERARCHY: dict[str, tuple[str, ...]] = {
    "Vehicle Accident": ("Air Accident", "Train Accident", "Car Accident"),
    "Violence": (
        "Vandalism",
        "Crowd Violence",
        "Riot",
        "Assault",
        "Range Shooting",
        "Shooting Accident",
        "War",
    ),
    "Robbery": ("Carjacking", "Mugging", "Store Robbery"),
    "Production Accident": (
        "Mechanical Accident",
        "Object Impact",
        "Collapse",
        "Fall from Height",
    ),
    "Fire-related Accident": ("Fume", "Fire", "Explosion"),
    "Animal-related Violence": ("Predation", "Animal Attack Animal", "Animal Attack Human"),
    "Daily Accident": (
        "Sport Fail",
        "Stunt Fail",
        "Fall into Water",
        "Fall to the Ground",
        "Drop Something",
    ),
}

#: The class names each zero-shot benchmark's official test file uses (the authors'
#: ``data/other_datasets/*.json``, spelled as there: ``RoadAccidents``, ``Object_falling``;
#: UBnormal and DoTA only say ``Abnormal``). A file being imported is checked against this list,
#: never against the names it happens to contain.
BENCHMARK_CLASSES: dict[str, tuple[str, ...]] = {
    "ucf": ("Normal", "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting",
            "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism"),
    "xd": ("Normal", "Abuse", "Car accident", "Explosion", "Fighting", "Riot", "Shooting"),
    "msad": ("Normal", "Assault", "Explosion", "Fighting", "Fire", "Object_falling",
             "People_falling", "Robbery", "Shooting", "Traffic_accident", "Vandalism",
             "Water_incident"),
    "ubnormal": ("Normal", "Abnormal"),
    "dota": ("Normal", "Abnormal"),
    "tad": ("Normal", "Car Accident"),
    "lad": ("Normal", "Crash", "Crowd", "Destroy", "Drop", "FallIntoWater", "Falling", "Fighting",
            "Fire", "Hurt", "Loitering", "Panic", "Thiefing", "Trampled", "Violence"),
}

TOP_LEVEL: tuple[str, ...] = tuple(HIERARCHY)
SUB_CATEGORIES: tuple[str, ...] = tuple(s for subs in HIERARCHY.values() for s in subs)
_PARENT: dict[str, str] = {s: top for top, subs in HIERARCHY.items() for s in subs}


def _norm(name: str) -> str:
    """Alias key: lower case, spaces/underscores/hyphens collapsed to one space."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


_BY_KEY: dict[str, str] = {_norm(n): n for n in (NORMAL, *TOP_LEVEL, *SUB_CATEGORIES)}


def all_names() -> list[str]:
    """All valid canonical names: Normal, the 7 top-level classes, then the 28 sub-categories."""
    return [NORMAL, *TOP_LEVEL, *SUB_CATEGORIES]


def is_valid(name: str) -> bool:
    """True if ``name`` (or an alias of it) is a taxonomy name."""
    return isinstance(name, str) and _norm(name) in _BY_KEY


def close_matches(name: str, choices: list[str] | None = None, n: int = 3) -> list[str]:
    """Up to ``n`` names of ``choices`` (default: the taxonomy) that look like ``name``."""
    choices = all_names() if choices is None else choices
    keys = {_norm(c): c for c in choices}
    return [keys[k] for k in difflib.get_close_matches(_norm(str(name)), list(keys), n, 0.6)]


def canonical(name: str) -> str:
    """The canonical spelling of a name or alias.

    Aliases are case-insensitive and tolerate spaces, underscores and hyphens
    ("fire_related_accident" -> "Fire-related Accident", "car accident" -> "Car Accident").

    Raises:
        UnknownCategoryError: ``name`` is not in the taxonomy; the message lists close matches.
    """
    if isinstance(name, str) and (hit := _BY_KEY.get(_norm(name))):
        return hit
    hint = close_matches(str(name))
    suggestion = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    raise UnknownCategoryError(
        f"unknown PreVAD category {name!r}: must be Normal, one of the 7 top-level classes or "
        f"one of the 28 sub-categories{suggestion}"
    )


def parent(name: str) -> str | None:
    """The top-level class of a sub-category; None for a top-level class or Normal."""
    return _PARENT.get(canonical(name))


def children(name: str) -> list[str]:
    """Sub-categories of a top-level class; [] for a sub-category or Normal."""
    return list(HIERARCHY.get(canonical(name), ()))


def top_level(name: str) -> str:
    """The top-level class of any anomaly name (itself for a top-level class); Normal for Normal."""
    c = canonical(name)
    return _PARENT.get(c, c)


def level(name: str) -> int:
    """0 for Normal, 1 for a top-level class, 2 for a sub-category."""
    c = canonical(name)
    return 0 if c == NORMAL else (1 if c in HIERARCHY else 2)
