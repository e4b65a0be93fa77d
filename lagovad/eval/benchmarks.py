"""Adapters for the seven zero-shot benchmarks' test splits.

Every benchmark is read from the authors' official JSON (a list of
``{path, video_path, class_name, descriptions, anomaly_span}`` with spans relative to the video
length, ``[]`` for normal videos). UCF-Crime and XD-Violence can also be read from their native
frame-number files. The files are packaged in ``lagovad/eval/data/<name>/``;
``annotations`` overrides them.

Any other test split in the same JSON format (for example a generated world's,
``curation.world``) is a *custom* benchmark: a lower-case name that is not one of the seven, read
from its annotation file and scored with its own definition file (AUC, no per-video min-max).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lagovad.errors import EvalError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"

BENCHMARKS: tuple[str, ...] = ("ucf", "xd", "msad", "ubnormal", "dota", "tad", "lad")
DISPLAY_NAMES = {
    "ucf": "UCF-Crime", "xd": "XD-Violence", "msad": "MSAD", "ubnormal": "UBnormal",
    "dota": "DoTA", "tad": "TAD", "lad": "LAD",
}
# Classification is reported on these two only (paper Table 3).
CLASSIFICATION_BENCHMARKS: tuple[str, ...] = ("ucf", "xd")
# XD-Violence native multiclass codes -> class names used in the official JSON.
XD_CODES = {"B1": "Fighting", "B2": "Shooting", "B4": "Riot", "B5": "Abuse", "B6": "Car accident",
            "G": "Explosion"}


class UnknownBenchmarkError(EvalError):
    """A benchmark name that is not one of the seven."""


class AnnotationFormatError(EvalError):
    """An annotation file that does not follow its documented format."""


@dataclass(frozen=True)
class BenchmarkVideo:
    """One test video.

    Attributes:
        name: Video key: the basename of the official ``path`` without ``.npy``
            (e.g. ``Abuse028_x264``); feature files and score files are keyed by it.
        class_name: Ground-truth class (``Normal`` for normal videos).
        spans: Abnormal spans as ``(start, end)`` fractions of the video length in [0, 1].
        frame_spans: Native frame-number spans ``(start, end)`` when read from a native file,
            else None. Native files list frame numbers; we treat them as ``[start, end)``.
    """

    name: str
    class_name: str
    spans: tuple[tuple[float, float], ...]
    frame_spans: tuple[tuple[int, int], ...] | None = None

    @property
    def is_anomaly(self) -> bool:
        """True for abnormal videos (a non-Normal class)."""
        return self.class_name != "Normal"


@dataclass(frozen=True)
class Benchmark:
    """A benchmark test split plus its protocol.

    Attributes:
        name: Short name (one of ``BENCHMARKS``).
        videos: Test videos in file order.
        metric: ``"ap"`` for XD-Violence, ``"auc"`` for the others.
        minmax_per_video: Min-max normalise scores per video before pooling (DoTA).
        source: The annotation file(s) read.
    """

    name: str
    videos: tuple[BenchmarkVideo, ...]
    metric: str
    minmax_per_video: bool
    source: tuple[str, ...] = field(default_factory=tuple)

    @property
    def display_name(self) -> str:
        """Human name used in tables (e.g. ``UCF-Crime``; a custom benchmark's own name)."""
        return DISPLAY_NAMES.get(self.name, self.name)

    @property
    def n_abnormal(self) -> int:
        """Number of abnormal videos."""
        return sum(v.is_anomaly for v in self.videos)

    def video(self, name: str) -> BenchmarkVideo:
        """Return the video called ``name``; EvalError if absent."""
        for v in self.videos:
            if v.name == name:
                return v
        raise EvalError(f"video {name!r} is not in benchmark {self.name!r}")


_CUSTOM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}$")


def check_name(name: str, custom: bool = False) -> str:
    """Normalise and validate a benchmark name.

    Args:
        name: A benchmark name (case-insensitive).
        custom: Also accept a custom benchmark's name (lower-case letters, digits, ``_``, ``-``),
            for a split whose annotation and definition files are given.

    Raises:
        UnknownBenchmarkError: if the name is not one of the seven (nor a custom name).
    """
    key = name.strip().lower()
    if key in BENCHMARKS or (custom and _CUSTOM_NAME.match(key)):
        return key
    more = (" or a custom name (letters, digits, _ and -) with --annotations and --definition"
            if not custom else " or a custom name of letters, digits, _ and -")
    raise UnknownBenchmarkError(
        f"benchmark must be one of {', '.join(BENCHMARKS)}{more}, got {name!r}")


def is_custom(name: str) -> bool:
    """True for a name that is not one of the seven benchmarks."""
    return name not in BENCHMARKS


VIDEO_EXTENSIONS = (".npy", ".npz", ".mp4", ".avi", ".mkv", ".webm", ".mov")


def video_key(path: str) -> str:
    """Video key from an official ``path``: basename without a known extension.

    Only known extensions are stripped because XD-Violence names contain dots
    (``Brick.Mansions.2014__#00-41-25_...``).
    """
    base = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    for ext in VIDEO_EXTENSIONS:
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def read_annotation_text(path: str | Path) -> str:
    """An annotation file's text (UTF-8, whatever the locale).

    Raises:
        AnnotationFormatError: The file is not UTF-8 (e.g. saved as Latin-1): names the file
            and the offset of the first bad byte.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AnnotationFormatError(
            f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}); re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _read_json_split(path: Path) -> list[BenchmarkVideo]:
    try:
        rows = json.loads(read_annotation_text(path))
    except json.JSONDecodeError as exc:
        raise AnnotationFormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise AnnotationFormatError(f"{path} must hold a JSON list of videos, got {type(rows)}")
    videos = []
    for i, row in enumerate(rows):
        try:
            spans = tuple((float(s), float(e)) for s, e in (row.get("anomaly_span") or []))
            videos.append(BenchmarkVideo(video_key(row["path"]), str(row["class_name"]), spans))
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationFormatError(
                f"{path} entry {i} must have path, class_name and anomaly_span [[s, e], ...]: "
                f"{exc!r}") from exc
    return videos


def annotation_file(name: str) -> Path:
    """The packaged official test annotation JSON of a benchmark."""
    return DATA_DIR / name / "test_annotations.json"


def load_benchmark(name: str, annotations: str | Path | None = None) -> Benchmark:
    """Load a benchmark's test split from the official JSON.

    Args:
        name: One of ``BENCHMARKS`` (case-insensitive), or a custom name with ``annotations``.
        annotations: Override for the JSON file (default: the packaged copy).

    Returns:
        The benchmark with its protocol (metric, DoTA per-video min-max; AUC for a custom one).
    """
    key = check_name(name, custom=annotations is not None)
    path = Path(annotations) if annotations else annotation_file(key)
    if not path.is_file():
        raise EvalError(f"annotation file for {key!r} not found: {path}")
    videos = _read_json_split(path)
    return Benchmark(key, tuple(videos), "ap" if key == "xd" else "auc", key == "dota",
                     (str(path),))


def read_ucf_native(path: str | Path) -> dict[str, tuple[str, tuple[tuple[int, int], ...]]]:
    """Read UCF-Crime's ``Temporal_Anomaly_Annotation.txt``.

    Lines are ``name  class  s1  e1  s2  e2`` with ``-1`` for an absent span.

    Returns:
        ``{name: (class_name, ((s1, e1), ...))}`` with frame numbers.
    """
    out: dict[str, tuple[str, tuple[tuple[int, int], ...]]] = {}
    for lineno, line in enumerate(read_annotation_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise AnnotationFormatError(
                f"{path}:{lineno}: expected 6 fields 'name class s1 e1 s2 e2', got {len(parts)}")
        nums = [int(x) for x in parts[2:]]
        spans = tuple((s, e) for s, e in (nums[0:2], nums[2:4]) if s >= 0 and e >= 0)
        out[video_key(parts[0])] = (parts[1], spans)
    return out


def read_xd_native(path: str | Path) -> dict[str, tuple[tuple[int, int], ...]]:
    """Read XD-Violence's ``annotations.txt`` or ``annotations_multiclasses.txt``.

    Lines are ``name s1 e1 [s2 e2 ...]`` (plain) or ``name c1 s1 e1 [c2 s2 e2 ...]`` (multiclass).

    Returns:
        ``{name: ((s1, e1), ...)}`` with frame numbers (abnormal videos only).
    """
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for lineno, line in enumerate(read_annotation_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        rest = parts[1:]
        if rest and not rest[0].lstrip("-").isdigit():  # multiclass: drop the class codes
            if len(rest) % 3:
                raise AnnotationFormatError(
                    f"{path}:{lineno}: multiclass lines are 'name (code s e)+', got {line!r}")
            rest = [x for i, x in enumerate(rest) if i % 3]
        if len(rest) % 2 or not rest:
            raise AnnotationFormatError(
                f"{path}:{lineno}: expected 'name s1 e1 [s2 e2 ...]', got {line!r}")
        nums = [int(x) for x in rest]
        # Some names carry ".mp4"; keys follow the official JSON (no extension).
        out[video_key(parts[0])] = tuple(zip(nums[0::2], nums[1::2], strict=True))
    return out


def load_native(name: str, path: str | Path | None = None) -> Benchmark:
    """Load UCF-Crime or XD-Violence from the native frame-number annotation.

    Classes come from the official JSON (XD's native plain file has none); spans come from
    the native file as ``frame_spans``; ``spans`` stay the JSON's relative spans.
    """
    key = check_name(name)
    base = load_benchmark(key)
    if key == "ucf":
        native_path = Path(path) if path else DATA_DIR / "ucf" / "Temporal_Anomaly_Annotation.txt"
        native = {k: v[1] for k, v in read_ucf_native(native_path).items()}
    elif key == "xd":
        native_path = Path(path) if path else DATA_DIR / "xd" / "annotations.txt"
        native = read_xd_native(native_path)
    else:
        raise EvalError(f"native annotations exist for ucf and xd only, got {name!r}")
    videos = []
    for v in base.videos:
        spans = native.get(v.name, ())
        if v.is_anomaly and not spans:
            raise AnnotationFormatError(f"{native_path} has no span for abnormal video {v.name}")
        videos.append(BenchmarkVideo(v.name, v.class_name, v.spans, tuple(spans)))
    return Benchmark(key, tuple(videos), base.metric, base.minmax_per_video,
                     base.source + (str(native_path),))


@dataclass(frozen=True)
class Definition:
    """A benchmark's anomaly definition (data file ``definitions/<name>.json``).

    Attributes:
        normal: The shared Normal prompt.
        classes: Anomaly classes used as the definition, in order (Normal excluded).
        descriptions: ``{class: [1-6 descriptions]}``.
        label_map: Ground-truth class name -> definition class (e.g. XD ``Car accident``).
        classification_classes: Ground-truth classes scored by classification (Normal first);
            empty when the benchmark has only Normal/Abnormal labels.
    """

    normal: str
    classes: tuple[str, ...]
    descriptions: dict[str, tuple[str, ...]]
    label_map: dict[str, str]
    classification_classes: tuple[str, ...]


def load_definition(name: str, path: str | Path | None = None) -> Definition:
    """Load the per-benchmark definition (class names and hand-written descriptions).

    Args:
        name: A benchmark name (a custom one needs ``path``).
        path: A definition JSON (``normal``, ``classes``, ``descriptions`` per class, optional
            ``label_map`` and ``classification_classes``); default: the packaged one.

    Raises:
        AnnotationFormatError: the file is missing, not JSON, or lacks those keys.
    """
    key = check_name(name, custom=path is not None)
    p = Path(path) if path else DEFINITIONS_DIR / f"{key}.json"
    if not p.is_file():
        raise EvalError(f"definition file for {key!r} not found: {p}")
    try:
        data = json.loads(read_annotation_text(p))
        classes = tuple(data["classes"])
        desc = {c: tuple(d) for c, d in data["descriptions"].items()}
        normal = str(data["normal"])
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise AnnotationFormatError(
            f"{p} must be a JSON object with normal, classes and descriptions "
            f"{{class: [1-6 sentences]}}: {exc!r}") from None
    for c in classes:
        n = len(desc.get(c, ()))
        if not 1 <= n <= 6:
            raise AnnotationFormatError(
                f"{p}: class {c!r} must have 1-6 descriptions, got {n}")
    return Definition(normal, classes, desc, dict(data.get("label_map", {})),
                      tuple(data.get("classification_classes", ())))
