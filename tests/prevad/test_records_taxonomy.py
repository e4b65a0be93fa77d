"""Records (validation, schema round trip) and the taxonomy."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from prevad import Store, taxonomy
from prevad.errors import SchemaMismatchError, UnknownCategoryError, ValidationError
from prevad.records import (
    Annotation,
    Feature,
    Score,
    Segment,
    SourceCandidate,
    StageResult,
    Video,
    from_table,
    make_id,
    to_table,
    video_id_for,
)

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
VID = video_id_for("youtube", "abc", 1.5, 9.0)

SAMPLES = {
    "candidates": SourceCandidate(make_id("yt", "abc"), "youtube", "abc", url="https://x",
                                  title="t", query="car crash", duration_s=12.5,
                                  metadata_json='{"a": 1}', created_at=T0),
    "videos": Video(VID, "youtube", "abc", 1.5, 9.0, "v.mp4", 7.5, 30.0, 225, 640, 360, T0,
                    feature_uri="f.npy"),
    "segments": Segment(make_id(VID, 2.0, 3.0), VID, "youtube", 2.0, 3.0, "s.mp4", "scene", T0),
    "stage_results": StageResult(VID, "probe", "1", "rejected", "too short", None,
                                 '{"d": 1.0}', 2, "run-1", T0),
    "annotations": Annotation("a1", VID, "prevad", "model", "qwen", "fire_related_accident",
                              True, "smoke", [[0.1, 0.5], [0.6, 0.7]], "val", T0,
                              ["smoke", "fire"], 3),
    "features": Feature(VID, "ViT-B-16/openai", 8, 4, 224, 10, 512, "features/x.npy", T0,
                        "float16"),
    "scores": Score(VID, "def1", '{"classes": ["Normal"]}', "ck", "Normal", 0, 0.13, 0.4, 0.9,
                    T0),
}


@pytest.mark.parametrize("table", sorted(SAMPLES))
def test_schema_round_trip_through_store(store: Store, table: str) -> None:
    record = SAMPLES[table]
    assert from_table(to_table([record]), type(record)) == [record]
    assert store.append(table, [record]).written == 1
    back = store.records(table)
    assert back == [record]
    assert store.read(table).schema.equals(to_table([record]).schema)


def test_video_id_is_deterministic_and_span_sensitive() -> None:
    a = Video.create("youtube", "abc", 1.5, 9.0)
    assert a.video_id == VID == video_id_for("youtube", "abc", 1.5, 9.0)
    assert video_id_for("youtube", "abc", 1.5, 9.5) != VID
    assert video_id_for("youtube", "abc") != video_id_for("vimeo", "abc")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"split": "dev"}, "'dev'"),
        ({"annotator_kind": "robot"}, "'robot'"),
        ({"spans": [[0.5, 0.2]]}, "start <= end"),
        ({"spans": [[0.1, 1.5]]}, "1.5"),
        ({"spans": [[0.1]]}, "pair"),
        ({"category": "Normal"}, "contradicts"),
    ],
)
def test_annotation_validation(kwargs: dict, needle: str) -> None:
    base = dict(annotation_id="a", video_id="v", dataset="prevad", annotator_kind="human",
                annotator="me", category="Riot", is_anomaly=True)
    with pytest.raises(ValidationError, match=needle.replace("[", r"\[")):
        Annotation(**{**base, **kwargs})


def test_unknown_category_names_value_and_close_matches() -> None:
    with pytest.raises(UnknownCategoryError, match="'Car Acident'.*'Car Accident'"):
        Annotation("a", "v", "prevad", "human", "me", "Car Acident", True)


def test_stage_status_enum() -> None:
    with pytest.raises(ValidationError, match="'done'"):
        StageResult("x", "probe", "1", "done")


def test_taxonomy_counts_and_lookups() -> None:
    assert len(taxonomy.TOP_LEVEL) == 7
    assert len(taxonomy.SUB_CATEGORIES) == 28
    assert len(set(taxonomy.all_names())) == 36
    assert taxonomy.canonical("fire_related_accident") == "Fire-related Accident"
    assert taxonomy.canonical("car accident") == "Car Accident"
    assert taxonomy.canonical("ANIMAL-ATTACK-human") == "Animal Attack Human"
    assert taxonomy.parent("Mugging") == "Robbery"
    assert taxonomy.parent("Robbery") is None
    assert taxonomy.children("Fire-related Accident") == ["Fume", "Fire", "Explosion"]
    assert taxonomy.is_valid("fall from height") and not taxonomy.is_valid("Abuse")
    for sub in taxonomy.SUB_CATEGORIES:
        assert sub in taxonomy.children(taxonomy.parent(sub))


def test_schema_mismatch_names_column_and_type(store: Store) -> None:
    good = to_table([SAMPLES["videos"]])
    bad_type = good.set_column(good.schema.get_field_index("n_frames"), "n_frames",
                               pa.array(["225"]))
    with pytest.raises(SchemaMismatchError, match="'n_frames'.*expected int64"):
        store.append("videos", bad_type)
    with pytest.raises(SchemaMismatchError, match="'uri' is missing.*string"):
        store.append("videos", good.drop_columns(["uri"]))
    with pytest.raises(SchemaMismatchError, match="'extra'"):
        store.append("videos", good.append_column("extra", pa.array([1])))
    assert store.read("videos").num_rows == 0
