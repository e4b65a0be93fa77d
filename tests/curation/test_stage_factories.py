"""Registered stage factories: plain keywords in, the module's own Stage out."""

from __future__ import annotations

import pytest

from curation import acquire, clean
from curation.registry import STAGES, build_stage, with_store
from prevad.errors import ValidationError


def test_every_registered_stage_builds_the_modules_stage(store):
    assert {"acquire", "record", "clean", "describe", "verify", "judge",
            "describe-anomaly"} <= set(STAGES)
    params = with_store("clean", {"threshold": 30.0}, str(store.root))
    assert params == {"threshold": 30.0, "store": str(store.root)}
    st = build_stage("clean", params)
    assert st.version == clean.make_stage(store, clean.CleanPolicy(threshold=30.0)).version
    assert st.version != build_stage("clean", with_store("clean", {}, str(store.root))).version
    assert build_stage("acquire", {"store": str(store.root), "schemes": ["http"]}).name == \
        "acquire"


def test_bad_keywords_name_the_parameter(store):
    with pytest.raises(ValidationError, match="unknown parameter.*'treshold'"):
        build_stage("clean", {"store": str(store.root), "treshold": 30.0})
    with pytest.raises(ValidationError, match="needs|model"):
        build_stage("describe", {"store": str(store.root)})


def test_url_template_fills_candidates_without_url():
    settings = acquire.AcquireSettings(url_template="http://127.0.0.1:1/{source}/{source_video_id}.mp4")
    row = {"source": "msrvtt", "source_video_id": "video7020", "url": None}
    assert settings.url_for(row) == "http://127.0.0.1:1/msrvtt/video7020.mp4"
    assert settings.url_for({**row, "url": "http://x/y.mp4"}) == "http://x/y.mp4"
    assert settings.version() != acquire.AcquireSettings().version()
