"""A hostile pass over the curation inputs: corpus files (``retrieve``), the files ``add`` reads
and the stage parameters of ``curate run -p``.

Each class of attack is a list of cases; every case must end in ONE ``error: ...`` line and exit
code 2 with nothing written (corpora, bad files and parameters), or, for the rows of ``add``'s
list and table files, in a per-row rejection counted by reason with the good rows registered.
Never a traceback, never a hang, never memory in proportion to a hostile size (huge files are
sparse files over the limit: refused by their size before a byte is read).

Cases per class (for the lead's note): see :data:`CASE_COUNTS`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prevad.store import Store
from toolkit.cli import app

runner = CliRunner()
LONG = "x" * 10_001
DEEP = "[" * 100_000 + "]" * 100_000


def _corpus_line(text: str) -> str:
    return "id,caption\n" + text


# ------------------------------------------------------------------ corpora: (name, content) ->
# the message must name the file; ``where`` is the position it must name (None: a whole-file
# rule such as the size).
CORPUS_CASES: dict[str, list[tuple[str, bytes | str, str, str | None]]] = {
    "over_long_fields": [
        ("c.csv", f"id,caption\nv1,{LONG}\n", "10001 characters", "line 2"),
        ("c.csv", f"id,caption\n{'i' * 600},a fire\n", "600 characters", "line 2"),
        ("c.csv", f"url,caption\nhttps://x/{'u' * 5000},fire\n", "characters", "line 2"),
        ("c.jsonl", json.dumps({"id": "v", "caption": LONG}) + "\n", "10001 characters",
         "line 1"),
        ("c.json", json.dumps({"videos": [{"video_id": "v"}], "sentences": [
            {"video_id": "v", "caption": LONG}]}), "10001 characters", "sentences[0]"),
        ("c.json", json.dumps([{"videoID": "a_000001_000002", "enCap": [LONG]}]),
         "10001 characters", "item 0"),
        ("c.csv", "id,caption\nv," + "y" * (2 << 20) + "\n", "not valid CSV", "line"),
    ],
    "non_string_ids_urls": [
        ("c.jsonl", json.dumps({"id": {"a": 1}, "caption": "fire"}) + "\n", "must be a text",
         "line 1"),
        ("c.jsonl", json.dumps({"id": ["v"], "caption": "fire"}) + "\n", "must be a text",
         "line 1"),
        ("c.jsonl", json.dumps({"id": True, "caption": "fire"}) + "\n", "must be a text",
         "line 1"),
        ("c.jsonl", json.dumps({"id": 1.5, "caption": "fire"}) + "\n", "must be a text",
         "line 1"),
        ("c.jsonl", json.dumps({"url": 7, "caption": "fire"}) + "\n", "must be a text",
         "line 1"),
        ("c.jsonl", json.dumps({"id": "v", "caption": ["fire"]}) + "\n", "must be a text",
         "line 1"),
        ("c.jsonl", json.dumps({"id": "v", "caption": "x", "source": {"s": 1}}) + "\n",
         "must be a text", "line 1"),
        ("c.json", json.dumps({"videos": [{"video_id": ["v"]}], "sentences": []}),
         "must be a text", "videos[0]"),
        ("c.json", json.dumps({"videos": [{"video_id": "v", "url": {"u": 1}}], "sentences": [
            {"video_id": "v", "caption": "c"}]}), "must be a text", "video 'v'"),
        ("c.json", json.dumps([{"videoID": 12345, "enCap": ["x"]}]), "must be a text", "item 0"),
        ("c.json", json.dumps([{"videoID": "a_000001_000002", "enCap": ["ok", 3]}]),
         "must be a text", "item 0"),
        ("c.json", json.dumps({"videos": ["v"], "sentences": []}), "must be an object",
         "videos[0]"),
    ],
    "deep_json": [
        ("c.json", DEEP, "nested too deep", None),
        ("c.jsonl", DEEP + "\n", "nested too deep", "line 1"),
        ("c.jsonl", json.dumps({"id": "a", "caption": "b"}) + "\n" + '{"x": ' + DEEP + "}\n",
         "nested too deep", "line 2"),
        ("c.json", '{"videos": [], "sentences": ' + DEEP + "}", "nested too deep", None),
    ],
    "huge_or_special_files": [
        ("sparse.csv", "SPARSE", "over the limit", None),
        ("dir.csv", "DIR", "not a regular file", None),
        ("fifo.csv", "FIFO", "not a regular file", None),
        ("/dev/zero", "DEVICE", "not a regular file", None),
        ("missing.csv", "MISSING", "not found", None),
        ("small-limit.csv", "LIMIT", "over the limit of 10", None),
    ],
    "binary_junk": [
        ("c.csv", bytes(range(256)) * 4, "NUL byte", "line 1"),
        ("c.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL byte", "line 3"),
        ("c.json", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "NUL byte", "line 1"),
        ("c.jsonl", b'{"id": "a", "caption": "b"}\n\x00\x00\x00\n', "NUL byte", "line 2"),
        ("c.csv", b"id,caption\nv1,\x80\x81\x82\xff\n", "not UTF-8", "line 2"),
    ],
    "wrong_encodings": [
        ("c.csv", "id,caption\nv1,caf\xe9 en feu\n".encode("latin-1"), "not UTF-8", "line 2"),
        ("c.csv", "id,caption\nv1,fire\n".encode("utf-16"), "NUL byte", "line 1"),
        ("c.csv", b"id,caption\nv1,\xed\xa0\x80 surrogate\n", "not UTF-8", "line 2"),
        ("c.csv", b"id,caption\nv1,fire\nv2,trunc\xe2\x82", "not UTF-8", "line 3"),
        ("c.jsonl", '{"id": "v", "caption": "\udc80"}\n'.encode("utf-8", "surrogatepass"),
         "not UTF-8", "line 1"),
    ],
    "missing_columns": [
        ("c.csv", "id,title\n1,x\n", "missing caption column", None),
        ("c.csv", "caption\na fire\n", "needs an 'id'", "line 2"),
        ("c.csv", "id,caption\nv1,fire,extra,fields\n", "the header names 2", "line 2"),
        ("c.jsonl", json.dumps({"id": "v"}) + "\n", "no value for 'caption'", "line 1"),
        ("c.jsonl", json.dumps(["v", "fire"]) + "\n", "expected a JSON object", "line 1"),
        ("c.csv", "key;vid_key;video_id;sentence\r\nret0;msr1;video1;\r\n",
         "no value for 'sentence'", "line 2"),
        ("c.json", json.dumps({"videos": [], "sentences": [{"caption": "c"}]}),
         "no value for 'video_id'", "sentences[0]"),
        ("c.json", json.dumps([{"videoID": "a_000001_000002"}]), "no 'enCap'", "item 0"),
        ("c.json", json.dumps({"videos": [], "captions": []}), "neither MSR-VTT", None),
    ],
    "bad_numbers": [
        ("c.csv", "id,caption,start\nv,fire,nan\n", "finite number", "line 2"),
        ("c.csv", "id,caption,start\nv,fire,inf\n", "finite number", "line 2"),
        ("c.csv", "id,caption,start\nv,fire,1e999\n", "finite number", "line 2"),
        ("c.csv", "id,caption,start\nv,fire,-1\n", "finite number", "line 2"),
        ("c.csv", "id,caption,start,end\nv,fire,5,2\n", "is not after start", "line 2"),
        ("c.jsonl", json.dumps({"id": "v", "caption": "x", "start": True}) + "\n",
         "not a number", "line 1"),
        ("c.jsonl", json.dumps({"id": "v", "caption": "x", "end": [1]}) + "\n", "not a number",
         "line 1"),
        ("c.json", json.dumps([{"videoID": "a_000009_000002", "enCap": ["x"]}]),
         "is not after start", "item 0"),
    ],
}


def _write_corpus(tmp_path: Path, name: str, content: bytes | str) -> tuple[Path, list[str]]:
    extra: list[str] = []
    if content == "DEVICE":
        return Path(name), extra
    path = tmp_path / name
    if content == "SPARSE":
        with open(path, "wb") as fh:
            fh.truncate(3 * 1024**3)  # 3 GiB of holes: refused by its size, never read
    elif content == "DIR":
        path.mkdir()
    elif content == "FIFO":
        os.mkfifo(path)  # reading it would block for ever
    elif content == "MISSING":
        pass
    elif content == "LIMIT":
        path.write_text("id,caption\nv,a house is on fire\n")
        extra = ["--max-corpus-bytes", "10"]
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path, extra


def _corpus_params():
    for cls, cases in CORPUS_CASES.items():
        for i, case in enumerate(cases):
            yield pytest.param(cls, *case, id=f"{cls}-{i}")


@pytest.mark.parametrize("cls, name, content, message, where", list(_corpus_params()))
def test_hostile_corpus_is_one_error_line(tmp_path, cls, name, content, message, where):
    store = Store.init(tmp_path / "store")
    path, extra = _write_corpus(tmp_path, name, content)
    res = runner.invoke(app, ["curate", "retrieve", str(store.root), "--corpus", str(path),
                              "--method", "bm25", *extra])
    assert res.exit_code == 2, (cls, res.output[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (cls, res.stderr[-2000:])
    assert message in lines[0], (cls, lines[0])
    assert str(path) in lines[0] or path.name in lines[0], lines[0]
    if where is not None:
        assert where in lines[0], (cls, lines[0])
    assert len(lines[0]) < 1000  # a hostile value is never echoed whole
    assert "Traceback" not in res.output
    assert store.read("candidates").num_rows == 0 and store.read("stage_results").num_rows == 0


# ------------------------------------------------------------------ add: rows of lists/tables
ROW_CASES: dict[str, list[tuple[str, bytes | str, dict[str, int]]]] = {
    "over_long_fields": [
        ("l.txt", "https://x.org/a.mp4\n" + "https://x.org/" + "a" * 70_000 + "\n",
         {"line_too_long": 1}),
        ("l.txt", "https://x.org/a.mp4\nhttps://x.org/" + "b" * 5000 + "\n", {"bad_url": 1}),
        ("t.csv", f"url,caption\nhttps://x.org/a.mp4,ok\nhttps://x.org/b.mp4,{LONG}\n",
         {"field_too_long": 1}),
        ("t.jsonl", json.dumps({"url": "https://x.org/a.mp4"}) + "\n"
         + json.dumps({"url": "https://x.org/b.mp4", "title": LONG}) + "\n",
         {"field_too_long": 1}),
    ],
    "non_string_ids_urls": [
        ("t.jsonl", json.dumps({"url": "https://x.org/a.mp4"}) + "\n"
         + "\n".join(json.dumps({"url": u}) for u in (5, ["u"], {"u": 1}, True, None)) + "\n",
         {"bad_url": 5}),
        ("t.jsonl", json.dumps({"url": "https://x.org/a.mp4"}) + "\n"
         + json.dumps({"url": "https://x.org/b.mp4", "caption": {"c": 1}}) + "\n",
         {"bad_field": 1}),
        ("l.txt", "https://x.org/a.mp4\njavascript:alert(1)\nfile:///etc/passwd\n"
         "http://[::1\nhttps://x.org:99999/a\n", {"bad_url": 4}),
    ],
    "deep_json": [
        ("t.jsonl", json.dumps({"url": "https://x.org/a.mp4"}) + "\n" + '{"url": ' + "[" * 50
         + "]" * 50 + "}\n" + DEEP[:60_000] + "\n", {"bad_json": 2}),
    ],
    "wrong_encodings": [
        ("l.txt", b"https://x.org/a.mp4\nhttps://x.org/caf\xe9.mp4\n", {"bad_encoding": 1}),
        ("t.csv", b"url,caption\nhttps://x.org/a.mp4,ok\nhttps://x.org/b.mp4,\xff\xfe\n",
         {"bad_encoding": 1}),
    ],
    "bad_numbers": [
        ("t.csv", "url,start,end\nhttps://x.org/a.mp4,,\n" + "".join(
            f"https://x.org/{i}.mp4,{s},{e}\n" for i, (s, e) in enumerate(
                [("nan", "3"), ("1", "inf"), ("-1", "3"), ("5", "2"), ("1e999", ""),
                 ("soon", "")])), {"bad_span": 6}),
    ],
    "missing_columns": [
        ("t.csv", "url,caption\nhttps://x.org/a.mp4,ok\nhttps://x.org/b.mp4\n",
         {"bad_csv": 1}),
        ("t.jsonl", json.dumps({"url": "https://x.org/a.mp4"}) + "\n"
         + json.dumps({"caption": "no url"}) + "\n" + json.dumps(["https://x.org/c.mp4"]) + "\n",
         {"bad_url": 1, "bad_json": 1}),
    ],
}


def _row_params():
    for cls, cases in ROW_CASES.items():
        for i, case in enumerate(cases):
            yield pytest.param(cls, *case, id=f"{cls}-{i}")


@pytest.mark.parametrize("cls, name, content, rejected", list(_row_params()))
def test_hostile_rows_of_add_are_rejected_and_counted(tmp_path, cls, name, content, rejected):
    from curation.add import add

    store = Store.init(tmp_path / "store")
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    [rep] = add(store, [str(path)]).sources
    assert dict(rep.rejected) == rejected, (cls, rep.rejections)
    assert rep.new == 1 and store.read("candidates").num_rows == 1  # the good row is kept
    assert all(r.where.startswith("line ") for r in rep.rejections)
    assert all(len(r.detail) < 400 for r in rep.rejections)


ADD_FILE_CASES = [
    ("sparse.txt", "SPARSE", "over the limit"),
    ("dir.txt", "DIR", "not a regular file"),
    ("fifo.txt", "FIFO", "not a regular file"),
    ("junk.txt", bytes(range(256)), "is binary"),
    ("t.csv", "caption\nx\n", "missing column 'url'"),
    ("t.csv", b"\xff\xfeu\x00r\x00l\x00\n", "is binary"),
    ("k.json", DEEP, "nested deeper than"),
    ("k.json", json.dumps({"Fire": "house fire"}), "non-empty list of keywords"),
    ("k.json", json.dumps({"Fire": ["ok", "line\nbreak"]}), "one-line text"),
]


@pytest.mark.parametrize("name, content, message", ADD_FILE_CASES,
                         ids=[f"add_file-{i}" for i in range(len(ADD_FILE_CASES))])
def test_hostile_files_given_to_add_are_one_error_line(tmp_path, name, content, message):
    store = Store.init(tmp_path / "store")
    path, _ = _write_corpus(tmp_path, name, content)
    args = ["curate", "add", str(store.root), str(path)]
    if content == "SPARSE":
        args += ["--max-file-bytes", str(1 << 30)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in res.output
    assert store.read("candidates").num_rows == 0 and store.read("stage_results").num_rows == 0


# ------------------------------------------------------------------ curate run -p
PARAM_CASES = [
    ["max_height=" + "9" * 5000],  # a huge integer: finite, but > 0 ... and not a timeout
    ["socket_timeout_s=" + "[" * 100_000 + "]" * 100_000],
    ["format=" + "{" * 50 + "}" * 50],
    ["=1"],
    ["max height=1"],
    ["schemes=[" + ",".join(['"http"'] * 3) + ", null]"],
    ["extra=" + json.dumps({"a": float("nan")})],  # any object is yt-dlp options (D: owner)
    ["retries=1e400"],
    ["precise_cuts=\x00"],
    ["url_template=http://h/\x07{source}"],
]
#: Values accepted here (the stage's own rules apply to them: a huge max_height, any object of
#: yt-dlp options, a format selector that is not JSON are text or numbers of the right type).
PARAM_OK = {2, 6}


@pytest.mark.parametrize("i", range(len(PARAM_CASES)), ids=[f"param-{i}" for i in
                                                            range(len(PARAM_CASES))])
def test_hostile_stage_parameters(tmp_path, i):
    store = Store.init(tmp_path / "store")
    args = ["curate", "run", str(store.root), "acquire", "--engine", "local"]
    for item in PARAM_CASES[i]:
        args += ["-p", item]
    res = runner.invoke(app, args)
    assert "Traceback" not in res.output
    if i in PARAM_OK:
        assert res.exit_code in (0, 2), res.output[-2000:]
        return
    assert res.exit_code == 2, res.output[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert len(lines[0]) < 300  # a hostile value is never echoed whole
    assert store.read("stage_results").num_rows == 0


CASE_COUNTS = {
    **{f"corpus/{k}": len(v) for k, v in CORPUS_CASES.items()},
    **{f"add_rows/{k}": len(v) for k, v in ROW_CASES.items()},
    "add_files": len(ADD_FILE_CASES),
    "run_params": len(PARAM_CASES),
}
