"""The review round trip against a real Label Studio server (see conftest.py).

Slow by nature (one server start, ~1-2 min, shared by the three tests) but never skipped: the
round trip is only proven against the real thing.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from prevad import queries, review
from prevad.store import Store
from toolkit.cli import app

from .conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    JUDGE_VERSION,
    N_FRAMES,
    VFR_TIMES,
    make_clip_store,
    make_review_store,
)

pytestmark = pytest.mark.slow


def _cli(args: list[str], token: str | None) -> CliRunner:
    env = {review.TOKEN_ENV: token} if token else {}
    return CliRunner().invoke(app, args, env=env)


def _tasks_by_video(client: review.LabelStudio, pid: int) -> dict[str, dict]:
    return {t["data"]["clip_id"]: t for t in client.tasks(pid)}


def _annotate(client: review.LabelStudio, task_id: int, category: str,
              ranges: list[tuple[int, int]] = (), text: str | None = None) -> dict:
    """Complete a task through the API, as an annotator's submit does."""
    result = [{"from_name": "category", "to_name": "video", "type": "choices",
               "value": {"choices": [category]}}]
    if ranges:
        result.append({"from_name": "spans", "to_name": "video", "type": "timelinelabels",
                       "value": {"ranges": [{"start": a, "end": b} for a, b in ranges],
                                 "timelinelabels": ["Anomaly"]}})
    if text:
        result.append({"from_name": "description", "to_name": "video", "type": "textarea",
                       "value": {"text": [text]}})
    return client.request("POST", f"/api/tasks/{task_id}/annotations/", json={"result": result})


def test_person_reviews_in_browser_and_pull_writes_human_row(label_studio, tmp_path):
    from playwright.sync_api import sync_playwright

    ls = label_studio
    root = ls.document_root / "browser-store"
    store, vids = make_review_store(root, [
        {"category": "Fire", "split": "val", "spans": [[0.2, 0.6]]},
        {"category": "Normal", "split": "train"},
        {"category": "Mugging", "split": "train"},
    ])
    project = "browser review"
    res = _cli(["review", "push", str(root), "--url", ls.url, "--project", project,
                "--document-root", str(ls.document_root)], ls.token)
    assert res.exit_code == 0, res.output
    assert "3 tasks created" in res.output
    assert ls.token not in res.output
    client = review.LabelStudio(ls.url, ls.token)
    pid = client.find_project(project)["id"]
    task = _tasks_by_video(client, pid)[vids[0].video_id]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(f"{ls.url}/user/login/")
        page.fill("input[name=email]", ls.email)
        page.fill("input[name=password]", ls.password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/user/login" not in u)
        page.goto(f"{ls.url}/projects/{pid}/data?task={task['id']}")
        page.wait_for_selector("text=AI proposal: Fire")
        # The video really is served from the store and plays.
        page.wait_for_function("document.querySelector('video')?.readyState >= 2", timeout=60_000)
        page.click('[data-testid="playback-button:play"]')
        page.wait_for_function("document.querySelector('video').currentTime > 0", timeout=30_000)
        # The person disagrees with the AI (Fire) and picks Explosion.
        page.locator("label", has=page.locator('input[name="Explosion"]')).click()
        assert page.is_checked('input[name="Explosion"]')
        if shot := os.environ.get("REVIEW_SCREENSHOT"):  # docs/img/ screenshot for the README
            page.screenshot(path=shot)
        with page.expect_response(lambda r: "/annotations" in r.url
                                  and r.request.method == "POST") as resp:
            page.click('button[aria-label="Submit current annotation"]')
        assert resp.value.ok
        browser.close()

    res = _cli(["review", "pull", str(root), "--url", ls.url, "--project", project], ls.token)
    assert res.exit_code == 0, res.output
    assert "1 human annotations written" in res.output
    rows = Store(root).query(
        "SELECT annotator_kind, annotator, category, is_anomaly, split FROM annotations "
        "WHERE video_id = $v ORDER BY annotator_kind", {"v": vids[0].video_id},
    ).to_pylist()
    assert rows == [
        {"annotator_kind": "human", "annotator": ls.email, "category": "Explosion",
         "is_anomaly": True, "split": "val"},
        {"annotator_kind": "model", "annotator": f"judge@{JUDGE_VERSION}", "category": "Fire",
         "is_anomaly": True, "split": "val"},
    ]


def test_api_round_trip_field_by_field(label_studio):
    ls = label_studio
    root = ls.document_root / "api-store"
    store, vids = make_review_store(root, [
        {"category": "Assault", "split": "val", "spans": [[0.2, 0.6]], "confidence": 0.9},
        {"category": "Normal", "split": "train"},
        {"category": "War", "split": "val", "spans": [[0.0, 1.0]]},
    ])
    media = review.Media(store.root, document_root=ls.document_root)
    client = review.LabelStudio(ls.url, ls.token)
    project = "api review"

    first = review.push(store, client, media, project=project)
    assert (first.project_created, first.created, first.unchanged) == (True, 3, 0)
    again = review.push(store, client, media, project=project)
    assert (again.project_created, again.created, again.unchanged) == (False, 0, 3)
    tasks = _tasks_by_video(client, first.project_id)
    assert len(client.tasks(first.project_id)) == 3  # pushing twice made no duplicates
    pred = tasks[vids[0].video_id]["predictions"][0]
    assert pred["model_version"] == JUDGE_VERSION and pred["score"] == pytest.approx(0.9)
    by_name = {r["from_name"]: r["value"] for r in pred["result"]}
    assert by_name["category"] == {"choices": ["Assault"]}
    # [0.2, 0.6] of 50 frames = frames 11..30 (1-based, inclusive).
    assert by_name["spans"]["ranges"] == [{"start": 11, "end": 30}]
    assert tasks[vids[0].video_id]["data"]["video"].endswith("api-store/videos/clip0.mp4")

    ann = _annotate(client, tasks[vids[0].video_id]["id"], "Crowd Violence",
                    [(33, 50), (7, 19)], "two groups fight in the street")
    _annotate(client, tasks[vids[1].video_id]["id"], "Normal")

    s = review.pull(store, client, project=project)
    assert (s.written, s.unchanged, s.pending, s.errors) == (2, 0, 1, [])
    human = store.query(
        "SELECT * FROM annotations WHERE video_id = $v AND annotator_kind = 'human'",
        {"v": vids[0].video_id},
    ).to_pylist()
    assert len(human) == 1
    h = human[0]
    assert h["category"] == "Crowd Violence" and h["is_anomaly"] is True
    assert h["spans"] == [[6 / N_FRAMES, 19 / N_FRAMES], [32 / N_FRAMES, 50 / N_FRAMES]]
    assert [review.relative_to_frames(sp, N_FRAMES) for sp in h["spans"]] == [(7, 19), (33, 50)]
    assert h["description"] == "two groups fight in the street"
    assert h["description_source"] == "reviewer"
    assert h["annotator"] == ls.email
    assert h["split"] == "val" and h["dataset"] == "prevad"
    assert h["created_at"].isoformat().startswith(ann["updated_at"][:19])

    final = {r["video_id"]: r for r in queries.final_labels(store).to_pylist()}
    assert (final[vids[0].video_id]["category"], final[vids[0].video_id]["n_model"]) == (
        "Crowd Violence", 1)
    assert final[vids[1].video_id]["annotator_kind"] == "human"
    assert final[vids[2].video_id]["annotator_kind"] == "model"  # not reviewed yet
    assert final[vids[2].video_id]["category"] == "War"

    n_rows = store.read("annotations").num_rows
    s = review.pull(store, client, project=project)
    assert (s.written, s.unchanged) == (0, 2)
    assert store.read("annotations").num_rows == n_rows  # re-pull changes nothing

    client.request("PATCH", f"/api/annotations/{ann['id']}/", json={"result": [
        {"from_name": "category", "to_name": "video", "type": "choices",
         "value": {"choices": ["Riot"]}},
    ]})
    s = review.pull(store, client, project=project)
    assert (s.written, s.unchanged) == (1, 1)
    versions = store.query(
        "SELECT category, spans FROM annotations WHERE video_id = $v AND annotator_kind = 'human' "
        "ORDER BY created_at", {"v": vids[0].video_id},
    ).to_pylist()
    assert [v["category"] for v in versions] == ["Crowd Violence", "Riot"]
    final = {r["video_id"]: r for r in queries.final_labels(store).to_pylist()}
    assert final[vids[0].video_id]["category"] == "Riot"
    assert final[vids[0].video_id]["n_human"] == 2

    after = review.push(store, client, media, project=project)  # reviewed videos stay put
    assert (after.created, after.unchanged) == (0, 1)
    assert len(client.tasks(first.project_id)) == 3

    with pytest.raises(review.ReviewError) as err:
        review.LabelStudio(ls.url, "not-" + ls.token[:20])
    assert ls.token[:20] not in str(err.value)


def test_json_file_round_trip(label_studio, tmp_path):
    ls = label_studio
    root = ls.document_root / "file-store"
    store, vids = make_review_store(root, [
        {"category": "Car Accident", "split": "val", "spans": [[0.5, 1.0]]},
        {"category": "Predation", "split": "train"},
    ])
    out = tmp_path / "review_tasks.json"
    res = _cli(["review", "export", str(root), str(out), "--document-root",
                str(ls.document_root)], None)
    assert res.exit_code == 0, res.output
    tasks = json.loads(out.read_text())
    config = out.with_name("review_tasks.label_config.xml").read_text()
    assert [t["data"]["clip_id"] for t in tasks] == sorted(v.video_id for v in vids)

    # What a team without API access does in the UI: create a project with the config, import
    # the file, annotate, export JSON.
    client = review.LabelStudio(ls.url, ls.token)
    proj = client.request("POST", "/api/projects/", json={"title": "file review",
                                                         "label_config": config})
    client.import_tasks(proj["id"], tasks)
    ls_tasks = _tasks_by_video(client, proj["id"])
    _annotate(client, ls_tasks[vids[0].video_id]["id"], "Car Accident", [(26, 50)], "cars crash")
    export = tmp_path / "export.json"
    export.write_text(json.dumps(client.export(proj["id"])))

    res = _cli(["review", "import", str(root), str(export)], None)
    assert res.exit_code == 0, res.output
    assert "1 human annotations written, 0 unchanged, 1 tasks not annotated yet" in res.output
    row = Store(root).query(
        "SELECT category, spans, description, description_source, annotator FROM annotations "
        "WHERE annotator_kind = 'human'").to_pylist()
    assert row == [{"category": "Car Accident", "spans": [[0.5, 1.0]],
                    "description": "cars crash", "description_source": "reviewer",
                    "annotator": "label-studio-user-1"}]
    res = _cli(["review", "import", str(root), str(export)], None)
    assert "0 human annotations written, 1 unchanged" in res.output


def test_clip_of_a_vfr_video_round_trip(label_studio, tmp_path):
    """A clip cut from a variable-frame-rate parent: Label Studio serves the cut CFR media from
    the store's cache, keeps the clip and parent ids, and frames drawn there come back as the
    exact clip-relative span."""
    ls = label_studio
    root = ls.document_root / "clip-store"
    store, parent, [seg] = make_clip_store(root, VFR_TIMES, [
        {"start": 3.0, "end": 6.0, "category": "Riot", "split": "val"}], red=(4.31, 5.11))
    client = review.LabelStudio(ls.url, ls.token)
    s = review.push(store, client, review.Media(store.root, document_root=ls.document_root),
                    project="clip review")
    assert (s.created, s.errors) == (1, [])
    [task] = client.tasks(s.project_id)
    data = task["data"]
    assert (data["clip_id"], data["parent_video_id"]) == (seg.segment_id, parent.video_id)
    assert data["video"].startswith("/data/local-files/?d=clip-store/cache/review_media/")
    status, body, _ = client._send("GET", data["video"], auth=client._auth)
    assert status == 200 and body[4:8] == b"ftyp"  # Label Studio serves the cut media
    assert data["n_frames"] == 75 and data["fps"] == pytest.approx(25.0)
    # frames 34..53 of 75 show the anomaly (4.32 s .. 5.12 s of the parent)
    _annotate(client, task["id"], "Riot", [(34, 53)])
    assert review.pull(store, client, project="clip review").written == 1
    [row] = store.query("SELECT video_id, spans FROM annotations WHERE annotator_kind = 'human'"
                        ).to_pylist()
    assert row["video_id"] == seg.segment_id
    assert [x * 3.0 for x in row["spans"][0]] == pytest.approx([1.32, 2.12])
