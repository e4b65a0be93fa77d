"""Hostile review input: import files, tasks, Label Studio answers and store data of every
malformed shape. Each case ends in ``error:`` lines (no traceback, bounded length, exit 2), and
nothing good is lost: the good task of a file is imported, the good clip of a store is exported.

Classes (case counts are the lengths of the tables below):
- FILE_CASES: whole import files that cannot be read;
- TASK_CASES: one malformed task beside a good one;
- ANSWER_CASES / bounded-answer cases: Label Studio answers of unexpected shapes and sizes;
- STORE_CASES: malformed judge outputs and media files on the export side.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prevad import review, review_media
from prevad.records import StageResult
from prevad.review_client import LabelStudio
from toolkit.cli import app

from .conftest import N_FRAMES, make_review_store
from .local_http import Answer, fake_label_studio, json_answer, serve

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ0eXBlIjoicmVmcmVzaCJ9.aG9zdGlsZS1yZWZyZXNoLXNpZ25hdHVyZQ"
ACCESS = "eyJhbGciOiJIUzI1NiJ9.eyJ0eXBlIjoiYWNjZXNzIn0.aG9zdGlsZS1hY2Nlc3Mtc2lnbmF0dXJlMDA"
MAX_LINE = 1000


@pytest.fixture(scope="module")
def base_store(tmp_path_factory):
    """Two whole-video clips: the first gets the good task, the second the bad ones."""
    root = tmp_path_factory.mktemp("hostile") / "store"
    store, vids = make_review_store(root, [{"category": "Riot", "split": "val"},
                                           {"category": "Fire", "split": "train"}])
    return store, [v.video_id for v in vids]


@pytest.fixture
def store_copy(base_store, tmp_path):
    import shutil

    store, vids = base_store
    shutil.copytree(store.root, tmp_path / "store")
    from prevad.store import Store

    return Store(tmp_path / "store"), vids


def _good(clip: str, task_id: int = 1) -> dict:
    return {"id": task_id, "data": {"clip_id": clip, "split": "val", "n_frames": N_FRAMES},
            "annotations": [{"id": 500 + task_id, "completed_by": 1, "result": [
                {"from_name": "category", "to_name": "video", "type": "choices",
                 "value": {"choices": ["Riot"]}},
                {"from_name": "spans", "to_name": "video", "type": "timelinelabels",
                 "value": {"ranges": [{"start": 5, "end": 9}], "timelinelabels": ["Anomaly"]}},
                {"from_name": "description", "to_name": "video", "type": "textarea",
                 "value": {"text": ["people fight"]}}]}]}


def _lines_ok(output: str) -> list[str]:
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert all(len(ln) <= MAX_LINE for ln in lines), max(map(len, lines))
    return lines


# ------------------------------------------------------------------------------ whole files
def _deep(n: int) -> str:
    return "[" * n + "]" * n


FILE_CASES = {
    "missing": (None, "does not exist"),
    "a directory": ("DIR", "is not a regular file"),
    "empty": (b"", "is empty"),
    "only whitespace": (b" \n\t ", "is empty"),
    "not UTF-8": (b'[{"id": 1, "data": {"clip_id": "\xff\xfe"}}]', "is not UTF-8"),
    "UTF-16": ('[{"id": 1}]'.encode("utf-16"), "is not UTF-8"),
    "not JSON": (b"{oops", "is not JSON"),
    "truncated JSON": (b'[{"id": 1, "data": {"clip_id": "a"', "is not JSON"),
    "NaN literal": (b'[{"id": 1, "data": {"n_frames": NaN}}]', "NaN and Infinity"),
    "Infinity literal": (b'[{"id": -Infinity}]', "NaN and Infinity"),
    "top-level object": (b'{"tasks": []}', "must hold a JSON list of tasks"),
    "top-level string": (b'"tasks"', "got str"),
    "top-level number": (b"42", "got int"),
    "top-level null": (b"null", "got NoneType"),
    "deeply nested": (_deep(200_000).encode(), "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_unreadable_import_file_is_one_error_line(case, store_copy, tmp_path):
    store, _ = store_copy
    content, expected = FILE_CASES[case]
    path = tmp_path / "export.json"
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    before = store.read("annotations").num_rows
    res = CliRunner().invoke(app, ["review", "import", str(store.root), str(path)])
    assert res.exit_code == 2
    [line] = _lines_ok(res.output)
    assert line.startswith(f"error: export file {path}") and expected in line, line
    assert store.read("annotations").num_rows == before


def test_huge_file_is_refused_before_reading_and_bom_is_accepted(store_copy, tmp_path):
    store, vids = store_copy
    path = tmp_path / "export.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([_good(vids[0])]).encode())  # UTF-8 BOM
    with pytest.raises(review.ReviewError, match="over the limit of 100"):
        review.import_export_file(store, path, max_bytes=100)
    assert review.import_export_file(store, path).written == 1


# ------------------------------------------------------------------------------ tasks
def _task(edit):
    """A bad task: the good task of the second clip, changed by ``edit(task, clip)``."""
    def make(clip: str) -> object:
        t = _good(clip, 2)
        return edit(t, clip)
    return make


def _set(path: str, value):
    """Edit setting one field, path like 'annotations.0.result.0.value.choices'."""
    def edit(t, clip):
        node = t
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
        return t
    return edit


def _drop(path: str):
    def edit(t, clip):
        node = t
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
        return t
    return edit


def _frames(n):
    """Edit: media whose mapping is gone (an unknown media id), and this frame count."""
    def edit(t, clip):
        t["data"].update(media_id="0" * 20, fps=25, n_frames=n)
        return t
    return edit


def _nest(depth: int):
    v: object = "x"
    for _ in range(depth):
        v = [v]
    return v


RANGE = "annotations.0.result.1.value.ranges.0"
CHOICES = "annotations.0.result.0.value.choices"
TEXT = "annotations.0.result.2.value.text"
ANN = "annotations.0"
TASK_CASES = {
    # the task itself
    "task is a number": (lambda t, c: 5, "a task must be an object"),
    "task is a string": (lambda t, c: "task", "a task must be an object"),
    "task is a list": (lambda t, c: [t], "a task must be an object"),
    "task is null": (lambda t, c: None, "a task must be an object"),
    # data and the clip it names
    "no data": (_drop("data"), "data must be an object"),
    "data is a number": (_set("data", 5), "data must be an object"),
    "data is a list": (_set("data", []), "data must be an object"),
    "no clip id": (_drop("data.clip_id"), "has no data.clip_id"),
    "clip id is a number": (_set("data.clip_id", 5), "data.clip_id must be a non-empty string"),
    "clip id is null": (_set("data.clip_id", None), "data.clip_id must be a non-empty string"),
    "clip id is an object": (_set("data.clip_id", {"a": 1}), "must be a non-empty string"),
    "clip id is empty": (_set("data.clip_id", ""), "must be a non-empty string"),
    "clip id is huge": (_set("data.clip_id", "v" * 100_000), "characters long"),
    "clip id has escapes": (_set("data.clip_id", "\x1b[2Jx"), "control characters"),
    "unknown clip": (_set("data.clip_id", "no-such-clip"), "'no-such-clip' is not in the store"),
    "legacy video id unknown": (lambda t, c: {**t, "data": {"video_id": "gone"}},
                                "'gone' is not in the store"),
    "wrong parent": (_set("data.parent_video_id", "another"), "is not the clip's parent"),
    "bad split": (_set("data.split", "validation"), "data.split must be one of"),
    "split is a list": (_set("data.split", ["val"]), "data.split must be one of"),
    # media frames
    "n_frames zero": (_frames(0), "data.n_frames must be a frame count"),
    "n_frames negative": (_frames(-5), "data.n_frames must be a frame count"),
    "n_frames text": (_frames("50"), "data.n_frames must be a frame count"),
    "n_frames bool": (_frames(True), "data.n_frames must be a frame count"),
    "n_frames huge": (_frames(10**12), "data.n_frames must be a frame count"),
    "n_frames of another clip": (_frames(500), "lasts 20.000 s, but the clip lasts 2.000 s"),
    # annotations
    "annotations a number": (_set("annotations", 5), "annotations must be a list"),
    "annotations a string": (_set("annotations", "abc"), "annotations must be a list"),
    "annotations an object": (_set("annotations", {}), "annotations must be a list"),
    "annotation a number": (_set("annotations", [5]), "annotations[0] must be an object"),
    "annotation a string": (_set("annotations", ["x"]), "annotations[0] must be an object"),
    "too many annotations": (lambda t, c: {**t, "annotations": t["annotations"] * 1001},
                             "at most 1000"),
    "result a number": (_set(f"{ANN}.result", 5), "result must be a list"),
    "result an object": (_set(f"{ANN}.result", {"a": 1}), "result must be a list"),
    "region a number": (_set(f"{ANN}.result.0", 5), "result[0] must be an object"),
    "value missing": (_drop(f"{ANN}.result.0.value"), "result[0].value must be an object"),
    "value a list": (_set(f"{ANN}.result.0.value", []), "result[0].value must be an object"),
    # category
    "choices a string": (_set(CHOICES, "Riot"), "category choices must be a list"),
    "choices empty": (_set(CHOICES, []), "exactly one category"),
    "two choices": (_set(CHOICES, ["Riot", "Fire"]), "exactly one category"),
    "choice a number": (_set(CHOICES, [5]), "the category must be a non-empty string"),
    "choice a list": (_set(CHOICES, [["Riot"]]), "the category must be a non-empty string"),
    "choice huge": (_set(CHOICES, ["R" * 100_000]), "characters long"),
    "unknown category": (_set(CHOICES, ["Spaceship Landing"]), "'Spaceship Landing'"),
    "taxonomy malformed": (_set(f"{ANN}.result.0.value", {"taxonomy": [5]}),
                           "exactly one taxonomy path"),
    "taxonomy two paths": (_set(f"{ANN}.result.0.value", {"taxonomy": [["Riot"], ["Fire"]]}),
                           "exactly one taxonomy path"),
    "no category": (_drop(f"{ANN}.result.0"), "has no category"),
    "two category regions": (lambda t, c: (t["annotations"][0]["result"].append(
        {"from_name": "category", "value": {"choices": ["Fire"]}}), t)[1], "several categories"),
    # spans
    "ranges a string": (_set(f"{ANN}.result.1.value.ranges", "1-5"), "span ranges must be a list"),
    "range a number": (_set(RANGE, 5), "span range 0 must be an object"),
    "range empty": (_set(RANGE, {}), "span range 0 start must be a whole frame number"),
    "start a string": (_set(f"{RANGE}.start", "5"), "must be a whole frame number"),
    "start null": (_set(f"{RANGE}.start", None), "must be a whole frame number"),
    "start bool": (_set(f"{RANGE}.start", True), "must be a whole frame number"),
    "start fractional": (_set(f"{RANGE}.start", 5.5), "must be a whole frame number"),
    "start huge float": (_set(f"{RANGE}.start", 1e300), "outside the video"),
    "start huge negative": (_set(f"{RANGE}.start", -1e300), "outside the video"),
    "end huge int": (_set(f"{RANGE}.end", 10**30), "outside the video"),
    "start zero": (_set(f"{RANGE}.start", 0), "outside the video"),
    "start negative": (_set(f"{RANGE}.start", -3), "outside the video"),
    "end past the media": (_set(f"{RANGE}.end", N_FRAMES + 10), "outside the video (frames 1..50)"),
    "reversed": (_set(RANGE, {"start": 9, "end": 5}), "reversed"),
    "too many spans": (_set(f"{ANN}.result.1.value.ranges", [{"start": 1, "end": 2}] * 1001),
                       "at most 1000"),
    "Normal with spans": (_set(CHOICES, ["Normal"]), "Normal comes with anomaly spans"),
    # description
    "text a string": (_set(TEXT, "people fight"), "text must be a list"),
    "text item a number": (_set(TEXT, [5]), "text must be strings"),
    "text item a list": (_set(TEXT, [["a"]]), "text must be strings"),
    "text huge": (_set(TEXT, ["x" * 20_000]), "at most 10000"),
    # who and which annotation
    "annotation id an object": (_set(f"{ANN}.id", {"a": 1}), "annotation id must be"),
    "annotation id bool": (_set(f"{ANN}.id", True), "annotation id must be"),
    "annotation id huge": (_set(f"{ANN}.id", "i" * 1000), "characters long"),
    "completed_by a list": (_set(f"{ANN}.completed_by", [1]), "completed_by must be"),
    "completed_by a string": (_set(f"{ANN}.completed_by", "me"), "completed_by must be"),
    "email a number list": (_set(f"{ANN}.completed_by", {"email": [5]}), "completed_by.email"),
    "email huge": (_set(f"{ANN}.completed_by", {"email": "e" * 1000}), "characters long"),
    "email with NUL": (_set(f"{ANN}.completed_by", {"email": "a\x00b"}), "control characters"),
    # nesting and repetition
    "deeply nested region value": (_set(f"{ANN}.result.0.value", {"choices": [_nest(900)]}),
                                   "the category must be a non-empty string"),
    "duplicate task id": (lambda t, c: {**t, "id": 1}, "duplicate task"),
    "annotation id of another clip": (_set(f"{ANN}.id", 501), "annotation id is also used by"),
}


@pytest.mark.parametrize("case", sorted(TASK_CASES))
def test_malformed_task_is_named_and_the_good_task_imported(case, store_copy, tmp_path):
    store, vids = store_copy
    edit, expected = TASK_CASES[case]
    good = _good(vids[0], 1)
    bad = _task(edit)(vids[1])
    if case == "annotation id of another clip":  # same LS id + same content as the good one
        bad["annotations"][0]["result"] = copy.deepcopy(good["annotations"][0]["result"])
    path = tmp_path / "export.json"
    path.write_text(json.dumps([good, bad]))
    res = CliRunner().invoke(app, ["review", "import", str(store.root), str(path)])
    assert res.exit_code == 2, res.output
    lines = _lines_ok(res.output)
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, lines
    name = "#2" if not isinstance(bad, dict) else {1: "1 at #2", 2: "2"}.get(bad.get("id"), "#2")
    assert errors[0].startswith(f"error: task {name}"), errors[0]
    assert expected in errors[0], errors[0]
    assert lines[-1].startswith("1 human annotations written") and "1 of 2 tasks with errors" \
        in lines[-1]
    [row] = store.query("SELECT video_id FROM annotations WHERE annotator_kind = 'human'"
                        ).to_pylist()
    assert row["video_id"] == vids[0]


def test_task_values_only_an_api_can_send(store_copy):
    """Server answers are parsed without the file's NaN rule: NaN/inf frames still fail alone."""
    store, vids = store_copy
    tasks = []
    for i, v in enumerate([math.nan, math.inf, -math.inf], start=2):
        t = _good(vids[1], i)
        t["annotations"][0]["id"] = 900 + i
        t["annotations"][0]["result"][1]["value"]["ranges"][0]["end"] = v
        tasks.append(t)
    s = review.import_tasks(store, [_good(vids[0]), *tasks])
    assert s.written == 1
    assert [e.task for e in s.errors] == ["2", "3", "4"]
    assert all("whole frame number" in e.message for e in s.errors)


def test_annotation_id_stored_for_another_clip_and_media_id_paths(store_copy, tmp_path):
    store, vids = store_copy
    # Two Label Studio instances reuse annotation id 501 for the same answer on two clips: the
    # second import would collide with the stored row of the first clip.
    first = _good(vids[0], 1)
    assert review.import_tasks(store, [first]).written == 1
    other = _good(vids[1], 1)
    other["data"]["split"] = "val"
    [err] = review.import_tasks(store, [other]).errors
    assert f"is already used by clip {vids[0]}" in err.message
    # media ids are hex names of cache files: a path is never built from anything else
    for mid in ("../../../../etc/passwd", "0" * 19 + "/", "a" * 20, 5, None):
        assert review_media.load_media(store.root, mid) is None
    t = _good(vids[1], 4)
    t["annotations"][0]["id"] = 804
    t["data"].update(media_id="../../etc/passwd", n_frames=N_FRAMES, fps=25)
    assert review.import_tasks(store, [t]).written == 1  # the checked n_frames is used


# ------------------------------------------------------------------------------ LS answers
def _projects(body):
    return {"/api/projects/": lambda r: body if isinstance(body, Answer) else json_answer(body)}


PROJECT = {"id": 1, "title": review.DEFAULT_PROJECT}
OK_PROJECTS = {"results": [PROJECT], "count": 1}


def _export_of(body):
    return {**_projects(OK_PROJECTS), "/api/users/": lambda r: json_answer([]),
            "/api/projects/1/export": lambda r: json_answer(body)}


ANSWER_CASES = {
    "token answer not JSON": ({"/api/token/refresh/": Answer(200, b"<html>ok</html>")},
                              "refused the token"),
    "access token not a string": ({"/api/token/refresh/": json_answer({"access": ["x"]})},
                                  "refused the token"),
    "access token with CRLF": ({"/api/token/refresh/": json_answer({"access": "a\r\nX: 1"})},
                               "characters a token cannot have"),
    "projects not JSON": (_projects(Answer(200, b"<html>")), "the answer is not JSON"),
    "projects a string": (_projects("projects"), "Label Studio answered str"),
    "projects a number": (_projects(7), "Label Studio answered int"),
    "projects null": (_projects(None), "Label Studio answered NoneType"),
    "projects without results": (_projects({"count": 1}), "the answer has no 'results'"),
    "results not a list": (_projects({"results": {"id": 1}}), "Label Studio answered dict"),
    "project not an object": (_projects({"results": [5]}), "item 0 is int, not an object"),
    "project without id": (_projects({"results": [{"title": review.DEFAULT_PROJECT}]}),
                           "expected a numeric id"),
    "project id a string": (_projects({"results": [{"id": "1; DROP", "title":
                                                    review.DEFAULT_PROJECT}]}),
                            "expected a numeric id"),
    "same page forever": (_projects({"results": [{"id": i} for i in range(100)]}),
                          "page 2 repeats page 1"),
    "server error with huge body": (_projects(Answer(500, b"E" * 5_000_000)), "HTTP 500"),
    "export an object": (_export_of({"tasks": []}), "where a list of tasks was expected"),
    "export a string": (_export_of("nope"), "where a list of tasks was expected"),
    "export items junk": (_export_of([5, "x", None, [], {"id": 9}]), "task #1: a task must"),
    "users junk": ({**_export_of([]), "/api/users/": lambda r: json_answer({"x": 1})},
                   "has no 'results' field"),
}


@pytest.mark.parametrize("case", sorted(ANSWER_CASES))
def test_label_studio_answer_of_unexpected_shape(case, store_copy):
    store, _ = store_copy
    routes, expected = ANSWER_CASES[case]
    routes = {k: (v if callable(v) else (lambda r, v=v: v)) for k, v in routes.items()}
    token_route = routes.pop("/api/token/refresh/", None)
    base = fake_label_studio(TOKEN, ACCESS, routes)

    def route(req):
        if token_route and req.path.startswith("/api/token/refresh/"):
            return token_route(req)
        if token_route:
            return Answer(401, b"")
        return base(req)

    with serve(route) as ls:
        res = CliRunner().invoke(app, ["review", "pull", str(store.root), "--url", ls.url],
                                 env={review.TOKEN_ENV: TOKEN})
    assert res.exit_code == 2, res.output
    lines = _lines_ok(res.output)
    assert expected in res.output, lines
    assert TOKEN not in res.output and ACCESS not in res.output


def _client(routes, **bounds):
    return fake_label_studio(TOKEN, ACCESS, routes), bounds


def test_answers_over_their_bounds_end_with_one_error():
    endless = {"/api/projects/": lambda r: Answer(200, iter(lambda: b"[" * 65536, None))}
    big = {"/api/projects/": lambda r: Answer(200, b"[" + b"1," * 600_000 + b"1]")}

    def trickle_body():
        import time
        while True:
            time.sleep(0.05)
            yield b" "

    trickle = {"/api/projects/": lambda r: Answer(200, trickle_body())}
    n = iter(range(10**9))
    unique_pages = {"/api/tasks/": lambda r: json_answer(
        {"tasks": [{"id": next(n)} for _ in range(100)]})}
    cases = [
        (endless, {"max_answer_bytes": 1_000_000}, "larger than the limit of 1000000 bytes"),
        (big, {"max_answer_bytes": 1_000_000}, r"would be \d+ bytes, over the limit"),
        (trickle, {"max_answer_s": 1.0}, "took longer than 1 s"),
        (unique_pages, {"max_pages": 5}, "more than 5 pages of 100"),
    ]
    for routes, bounds, expected in cases:
        with serve(fake_label_studio(TOKEN, ACCESS, routes)) as ls:
            client = LabelStudio(ls.url, TOKEN, **bounds)
            with pytest.raises(review.ReviewError, match=expected):
                if "/api/tasks/" in routes:
                    client.tasks(1)
                else:
                    client.find_project("x")


def test_pagination_stops_on_total_short_page_or_404():
    items = [{"id": i} for i in range(250)]

    def paged(total_key):
        def route(r):
            page = int(r.path.split("page=")[1].split("&")[0])
            if page > 3:
                return json_answer({"detail": "Invalid page."}, 404)
            body = {"tasks": items[(page - 1) * 100:page * 100]}
            if total_key:
                body[total_key] = "many" if total_key == "bogus" else len(items)
            return json_answer(body)
        return route

    for key in ("total", None, "bogus"):
        with serve(fake_label_studio(TOKEN, ACCESS, {"/api/tasks/": paged(key)})) as ls:
            assert LabelStudio(ls.url, TOKEN).tasks(1) == items
    exact = [{"id": i} for i in range(200)]  # a last full page, no total: the 404 ends it

    def route(r):
        page = int(r.path.split("page=")[1].split("&")[0])
        if page > 2:
            return json_answer({"detail": "Invalid page."}, 404)
        return json_answer({"tasks": exact[(page - 1) * 100:page * 100]})

    with serve(fake_label_studio(TOKEN, ACCESS, {"/api/tasks/": route})) as ls:
        assert LabelStudio(ls.url, TOKEN).tasks(1) == exact


def test_unreachable_server_and_bad_urls_are_one_line(store_copy):
    store, _ = store_copy
    for url, expected in [("http://127.0.0.1:9", "cannot reach Label Studio"),
                          ("ftp://x", "--url must be an http(s) URL"),
                          ("http://user:pw@127.0.0.1:9", "must not hold a user name"),
                          ("http://127.0.0.1:notaport", "--url must be an http(s) URL"),
                          ("http://", "--url must be an http(s) URL")]:
        res = CliRunner().invoke(app, ["review", "pull", str(store.root), "--url", url],
                                 env={review.TOKEN_ENV: TOKEN})
        assert res.exit_code == 2
        [line] = _lines_ok(res.output)
        assert line.startswith("error: ") and expected in line, line


# ------------------------------------------------------------------------------ store side
STORE_CASES = {
    "output a list": ("[1, 2]", "is not a JSON object"),
    "output a string": ('"Fire"', "is not a JSON object"),
    "unknown category": (json.dumps({"category": "Spaceship"}), "'Spaceship'"),
    "category a number": (json.dumps({"category": 5}), "'5'"),
    "category missing": (json.dumps({"anomaly": True}), "'None'"),
    "category huge": (json.dumps({"category": "C" * 100_000}), "CCCC"),
    "spans malformed": (json.dumps({"category": "Fire", "split": "val", "spans": [[0.1]]}),
                        "proposed spans are malformed"),
    "spans not numbers": (json.dumps({"category": "Fire", "split": "val",
                                      "spans": [["a", "b"]]}), "proposed spans are malformed"),
    "spans out of range": (json.dumps({"category": "Fire", "split": "val",
                                       "spans": [[0.5, 7.0]]}), "proposed spans are malformed"),
    "unknown item": (None, "neither a clip"),
}


@pytest.mark.parametrize("case", sorted(STORE_CASES))
def test_malformed_judge_output_is_one_clip_error(case, tmp_path):
    """Judge outputs are store data written by a model: each bad one is its clip's error."""
    store, vids = make_review_store(tmp_path / "s", [{"category": "Riot", "split": "train"},
                                                     {"category": "Fire", "split": "train"}])
    output, expected = STORE_CASES[case]
    item = "not-a-clip" if output is None else vids[1].video_id
    store.append("stage_results", [
        StageResult(vids[0].video_id, "judge", "v9", "ok", output_json=json.dumps(
            {"category": "Riot", "confidence": "high", "reason": 5, "split": ["x"]})),
        StageResult(item, "judge", "v9", "ok",
                    output_json=output or json.dumps({"category": "Fire"})),
    ])
    out = tmp_path / "t.json"
    res = CliRunner().invoke(app, ["review", "export", str(store.root), str(out)])
    assert res.exit_code == 2, res.output
    lines = _lines_ok(res.output)
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], errors
    tasks = json.loads(out.read_text())
    assert [t["data"]["clip_id"] for t in tasks] == [vids[0].video_id]
    assert tasks[0]["predictions"][0]["model_version"] == "v9"
    assert "score" not in tasks[0]["predictions"][0]  # "high" is no confidence


def test_corrupt_parent_file_and_tampered_mapping(tmp_path):
    from .conftest import VFR_TIMES, make_clip_store

    store, _, segs = make_clip_store(tmp_path / "s", VFR_TIMES, [
        {"start": 0.0, "end": 2.0, "category": "Fire", "split": "train"}])
    media = review.Media(store.root, store.root)
    out, _, n, errors = review.export_tasks(store, tmp_path / "t.json", media)
    [task] = json.loads(out.read_text())
    mapping = review_media.cache_dir(store.root) / f"{task['data']['media_id']}.json"
    raw = json.loads(mapping.read_text())
    raw["path"] = "/etc/passwd"  # a tampered mapping never points the task elsewhere
    mapping.write_text(json.dumps(raw))
    _, _, _, errors = review.export_tasks(store, tmp_path / "t2.json", media)
    [again] = json.loads((tmp_path / "t2.json").read_text())
    assert errors == [] and again["data"]["video"] == task["data"]["video"]
    for junk in ("{oops", "[]", json.dumps({**raw, "n_frames": -1})):
        mapping.write_text(junk)
        review.export_tasks(store, tmp_path / "t3.json", media)
        assert json.loads(mapping.read_text())["n_frames"] == task["data"]["n_frames"]
    # the parent file is corrupt: that clip is an error, nothing else breaks
    for p in review_media.cache_dir(store.root).iterdir():
        p.unlink()
    (store.root / "videos" / "parent.mp4").write_bytes(b"\x00" * 5000)
    _, _, n, errors = review.export_tasks(store, tmp_path / "t4.json", media)
    assert n == 0 and len(errors) == 1
    assert "cannot be read for review media" in str(errors[0])
    assert not list(review_media.cache_dir(store.root).glob("*.tmp*"))
    assert Path(tmp_path / "t4.json").read_text().strip() == "[]"
