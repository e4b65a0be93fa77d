"""``prevad curate retrieve|acquire|record|clean`` on the command line."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from toolkit.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_retrieve_acquire_clean_from_the_command_line(store, tmp_path, media_server, small_mp4):
    shutil.copy(small_mp4, media_server.root / "a.mp4")
    corpus = tmp_path / "c.csv"
    corpus.write_text("url,caption\n" + f"{media_server.url('a.mp4')},a house is on fire\n"
                      "https://example.org/b.mp4,a cat sleeps on a sofa\n")
    res = _run("curate", "retrieve", store.root, "--corpus", corpus, "--method", "bm25",
               "--top-k", "1", "--min-score", "0.1")
    assert res.exit_code == 0, res.output
    assert "retrieve v1-" in res.output and "ok 1" in res.output
    [cand] = store.records("candidates")
    assert cand.query == "Fire" and cand.url == media_server.url("a.mp4")
    again = _run("curate", "retrieve", store.root, "--corpus", corpus, "--method", "bm25",
                 "--top-k", "1", "--min-score", "0.1")
    assert "nothing to do" in again.output and store.read("candidates").num_rows == 1

    res = _run("curate", "acquire", store.root, "--retries", "0", "--allow-private-network")
    assert res.exit_code == 0, res.output
    assert "acquire v2-" in res.output and "ok 1" in res.output and "items/s" in res.output
    res = _run("curate", "clean", store.root, "--show")
    # the 4 s video has two shots (red, then green): two single-shot clips
    assert res.exit_code == 0 and "ok 1" in res.output
    assert '"clips_s": [[0.0, 2.0], [2.0, 4.0]]' in res.output
    status = _run("curate", "status", store.root)
    assert status.exit_code == 0
    for stage in ("retrieve", "acquire", "clean"):
        assert stage in status.output


def test_bad_inputs_print_one_error_line_and_exit_2(store, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    res = _run("curate", "retrieve", store.root, "--corpus", empty)
    assert res.exit_code == 2 and res.output.strip().startswith("error:")
    assert "empty" in res.output and "Traceback" not in res.output
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("id,title\n1,x\n")
    res = _run("curate", "retrieve", store.root, "--corpus", nocol, "--method", "bm25")
    assert res.exit_code == 2 and "missing caption column" in res.output
    res = _run("curate", "retrieve", store.root, "--corpus", nocol, "--method", "sparse")
    assert res.exit_code == 2 and "method must be one of" in res.output
    res = _run("curate", "record", store.root, "--url", "http://127.0.0.1:9/x.m3u8",
               "--duration", "0")
    assert res.exit_code == 2 and "duration must be > 0" in res.output
    res = _run("curate", "clean", tmp_path / "nostore")
    assert res.exit_code == 2 and "not a PreVAD store" in res.output
    assert store.read("candidates").num_rows == 0
