"""Anomaly definitions: the list of classes a user asks the model to look for.

A definition is an ordered list of classes. Class 0 is always Normal. Each class is encoded either
as a *name* (through the learnable soft prompts of the text branch) or as a *description* (through
the plain CLIP text model, no prompts), following the two branches of the authors' training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from lagovad.errors import LagovadError

NORMAL = "Normal"
#: The shared normal prompt of the authors' evaluation (used as the Normal *description*).
NORMAL_PROMPT = (
    "Normal behavior, views or surveillance content captured by camera that not involve any "
    "unexpected or unusual events."
)

Kind = Literal["name", "description"]
_KINDS = ("name", "description")
# A name is short; anything longer (or a sentence) is treated as a description by kind="auto".
_AUTO_MAX_NAME_WORDS = 4


class DefinitionError(LagovadError, ValueError):
    """An anomaly definition is empty, has blank or duplicate entries, or an unknown kind."""


@dataclass(frozen=True)
class AnomalyClass:
    """One class of a definition.

    Attributes:
        label: Display label (the name, or the description itself).
        text: The text that is encoded.
        kind: "name" (encoded with soft prompts) or "description" (plain CLIP text model).
    """

    label: str
    text: str
    kind: Kind

    @property
    def is_normal(self) -> bool:
        """Whether this class is the Normal class."""
        return _is_normal_text(self.text)


def _is_normal_text(text: str) -> bool:
    folded = text.strip().casefold()
    return folded == NORMAL.casefold() or folded == NORMAL_PROMPT.casefold()


def _guess_kind(text: str) -> Kind:
    words = text.split()
    if len(words) > _AUTO_MAX_NAME_WORDS or text.rstrip().endswith("."):
        return "description"
    return "name"


class AnomalyDefinition(Sequence[AnomalyClass]):
    """An ordered list of classes, Normal first.

    Build one with :meth:`from_strings` (or :meth:`from_classes`). Equality and :attr:`id`
    depend on the texts, kinds and order.
    """

    def __init__(self, classes: Iterable[AnomalyClass]):
        items = list(classes)
        _validate(items)
        normals = [c for c in items if c.is_normal]
        rest = [c for c in items if not c.is_normal]
        if not normals:
            kind = rest[0].kind if rest else "name"
            text = NORMAL if kind == "name" else NORMAL_PROMPT
            normals = [AnomalyClass(label=NORMAL, text=text, kind=kind)]
        if len(normals) > 1:
            raise DefinitionError(
                f"a definition holds one Normal class, got {len(normals)}: "
                f"{[c.text for c in normals]}"
            )
        self._classes: tuple[AnomalyClass, ...] = (normals[0], *rest)

    @classmethod
    def from_strings(
        cls,
        items: Iterable[str],
        kind: Literal["auto", "names", "descriptions"] = "auto",
        normal: Literal["auto", "name", "prompt"] = "auto",
    ) -> AnomalyDefinition:
        """Build a definition from class names or descriptions.

        How Normal is written (the one rewrite this method makes):

        * The word "Normal" (any case) is the class *name* ``"Normal"`` in a names definition and
          the authors' normal sentence :data:`NORMAL_PROMPT` (a *description*) when the entry is
          a description (``kind="descriptions"``).
        * The authors' sentence itself, if given as an entry, is kept verbatim as a description,
          whatever ``kind`` says.
        * When no entry is Normal, one is added: ``normal="name"`` adds the name ``"Normal"``,
          ``normal="prompt"`` adds the authors' sentence (their evaluation's shared normal
          prompt), ``"auto"`` follows the kind of the first anomaly class.

        Args:
            items: Class names (e.g. "Fighting") or descriptions (sentences). "Normal" (or the
                shared normal prompt) may be given anywhere; it is moved first, or added if absent.
            kind: "names", "descriptions", or "auto" (per item: more than four words or a final
                period means description).
            normal: Which Normal class to add when ``items`` holds none (see above).

        Returns:
            The definition.

        Raises:
            DefinitionError: If there are no anomaly classes, an entry is blank or duplicated, or
                ``kind``/``normal`` is unknown.
        """
        if isinstance(items, str):
            items = [items]
        if kind not in ("auto", "names", "descriptions"):
            raise DefinitionError(f"kind must be 'auto', 'names' or 'descriptions', got {kind!r}")
        if normal not in ("auto", "name", "prompt"):
            raise DefinitionError(f"normal must be 'auto', 'name' or 'prompt', got {normal!r}")
        classes = []
        for i, raw in enumerate(items):
            if not isinstance(raw, str) or not raw.strip():
                raise DefinitionError(
                    f"definition entry {i} must be a non-blank string, got {raw!r}"
                )
            text = " ".join(raw.split())
            k: Kind = {"names": "name", "descriptions": "description"}.get(kind) or _guess_kind(
                text
            )
            if text.casefold() == NORMAL_PROMPT.casefold():
                text, k = NORMAL_PROMPT, "description"  # the authors' sentence: kept as given
            elif _is_normal_text(text):
                text = NORMAL if k == "name" else NORMAL_PROMPT
            label = NORMAL if _is_normal_text(text) else text
            classes.append(AnomalyClass(label=label, text=text, kind=k))
        if normal != "auto" and not any(c.is_normal for c in classes):
            classes.insert(0, AnomalyClass(NORMAL, NORMAL, "name") if normal == "name"
                           else AnomalyClass(NORMAL, NORMAL_PROMPT, "description"))
        return cls(classes)

    @classmethod
    def from_classes(cls, classes: Iterable[AnomalyClass]) -> AnomalyDefinition:
        """Build a definition from :class:`AnomalyClass` items."""
        return cls(classes)

    # -- sequence protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._classes)

    def __getitem__(self, index):  # type: ignore[override]
        return self._classes[index]

    def __iter__(self) -> Iterator[AnomalyClass]:
        return iter(self._classes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnomalyDefinition) and self._classes == other._classes

    def __hash__(self) -> int:
        return hash(self._classes)

    def __repr__(self) -> str:
        return f"AnomalyDefinition({[c.text for c in self._classes]!r})"

    # -- views -------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """Display labels, Normal first."""
        return [c.label for c in self._classes]

    @property
    def texts(self) -> list[str]:
        """Encoded texts, Normal first."""
        return [c.text for c in self._classes]

    @property
    def kinds(self) -> list[Kind]:
        """Per-class kinds ("name" | "description")."""
        return [c.kind for c in self._classes]

    @property
    def anomalies(self) -> list[AnomalyClass]:
        """The classes after Normal."""
        return list(self._classes[1:])

    def to_dict(self) -> dict:
        """JSON-ready form (stored with scores as ``definition_json``)."""
        return {"classes": [{"label": c.label, "text": c.text, "kind": c.kind} for c in self]}

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, no spaces)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> AnomalyDefinition:
        """Inverse of :meth:`to_dict`."""
        try:
            entries = data["classes"]
            return cls(
                AnomalyClass(label=e["label"], text=e["text"], kind=e["kind"]) for e in entries
            )
        except (KeyError, TypeError) as exc:
            raise DefinitionError(
                f"definition dict must hold classes[label,text,kind]: {exc}"
            ) from exc

    @classmethod
    def from_json(cls, text: str) -> AnomalyDefinition:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    @property
    def id(self) -> str:
        """A stable 16-hex-digit id of the canonical JSON (for ``Score.definition_id``)."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]


def _validate(items: list[AnomalyClass]) -> None:
    anomalies = [c for c in items if not c.is_normal]
    if not anomalies:
        raise DefinitionError(
            "a definition needs at least one anomaly class besides Normal, got "
            f"{[c.text for c in items]}"
        )
    seen: dict[tuple[str, str], int] = {}
    for i, c in enumerate(items):
        if c.kind not in _KINDS:
            raise DefinitionError(f"class kind must be one of {_KINDS}, got {c.kind!r}")
        if not c.text.strip():
            raise DefinitionError(f"class {i} has a blank text")
        key = (c.text.casefold(), c.kind)
        if key in seen:
            raise DefinitionError(
                f"duplicate class {c.text!r} at positions {seen[key]} and {i}; "
                "classes must be unique"
            )
        seen[key] = i
