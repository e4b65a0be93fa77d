"""``prevad curate add``: URL lists, tables, keyword files, searches and playlists -> candidates.

Everything runs against real servers on 127.0.0.1: yt-dlp's generic extractor reads the HTML
pages, RSS feeds and XSPF playlists served by ``media_server``, and searches go through a real
yt-dlp ``SearchInfoExtractor`` loaded by yt-dlp's own plugin mechanism from a folder written by
the test (``yt_dlp_plugins/extractor/``), which queries JSON result pages on the same server.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from curation.acquire import AcquireSettings, acquire
from curation.add import AddSettings, add, candidate_id
from curation.common import CurationError
from curation.sources import normalize_url
from prevad.records import video_id_for
from tests.curation.webservers import Route, WebServer
from toolkit.cli import app

runner = CliRunner()
PRIVATE = dict(allow_private_network=True)


def _meta(c):
    return json.loads(c.metadata_json)


def _run(*args):
    return runner.invoke(app, ["curate", "add", *map(str, args)])


def _add_results(store):
    return [r for r in store.records("stage_results") if r.stage == "add"]


# ------------------------------------------------------------------ URL lists and tables
def test_url_list_registers_each_url_once_and_counts_what_it_rejects(store, tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text(
        "# my videos\n"                                        # 1
        "https://example.org/a.mp4\n"                          # 2
        "\n"                                                   # 3
        "https://example.org/b.mp4 1.5 4\n"                    # 4 a span
        "ftp://example.org/c.mp4\n"                            # 5 bad scheme
        "just words\n"                                         # 6 bad
        "https://example.org/d.mp4 5 2\n"                      # 7 end before start
        "https://EXAMPLE.org:443/a.mp4#t=3\n"                  # 8 same as line 2
        "https://example.org/b.mp4 0:01.5 0:04\n"              # 9 same span as line 4
        "https://example.org/b.mp4 nan 3\n"                    # 10
        "https://example.org/e.mp4\n")                         # 11
    summary = add(store, [str(urls)])
    [rep] = summary.sources
    assert (rep.entries, rep.new, rep.already) == (3, 3, 0)
    assert dict(rep.rejected) == {"bad_url": 2, "bad_span": 2, "duplicate_in_source": 2}
    where = {(r.reason, r.where) for r in rep.rejections}
    assert where == {("bad_url", "line 5"), ("bad_url", "line 6"), ("bad_span", "line 7"),
                     ("bad_span", "line 10"), ("duplicate_in_source", "line 8"),
                     ("duplicate_in_source", "line 9")}
    cands = {c.url: c for c in store.records("candidates")}
    assert set(cands) == {"https://example.org/a.mp4", "https://example.org/b.mp4",
                          "https://example.org/e.mp4"}
    b = cands["https://example.org/b.mp4"]
    meta = _meta(b)
    assert (meta["start_s"], meta["end_s"], b.duration_s) == (1.5, 4.0, 2.5)
    assert meta["origin"] == {"kind": "url_list", "file": str(urls), "line": 4}
    assert meta["kind"] == "video" and b.source == "web"
    assert b.candidate_id == candidate_id("https://example.org/b.mp4", 1.5, 4.0)
    # the add is one work item of the stage contract, committed with its candidates
    [res] = _add_results(store)
    assert res.status == "ok" and res.id.startswith("add:") and res.output["new"] == 3
    assert (store.root / "stage_runs" / "add" / f"{summary.run_id}.json").is_file()

    again = add(store, [str(urls)])
    assert (again.sources[0].new, again.sources[0].already) == (0, 3)
    assert store.read("candidates").num_rows == 3
    assert sorted(r.attempt for r in _add_results(store)) == [1, 2]


def test_csv_and_jsonl_tables_keep_caption_category_span_and_title(store, tmp_path):
    table = tmp_path / "mine.csv"
    long_caption = "x" * 10_001
    table.write_text(
        "URL,caption,category,start,end,title,extra\n"
        "https://example.org/fire.mp4,a house burns,fire,00:10,00:20.5,Fire!,1\n"
        "https://example.org/walk.mp4,people walk,Normal,,,,\n"
        "https://example.org/x.mp4,x,Teleportation,,,,\n"
        f"https://example.org/y.mp4,{long_caption},,,,,\n"
        "https://example.org/z.mp4,too,many,fields,,,,,\n"
        ",no url,,,,,\n")
    rows = tmp_path / "mine.jsonl"
    rows.write_text("\n".join([
        json.dumps({"url": "https://example.org/j1.mp4", "caption": "a car crash",
                    "category": "Car Accident", "start": 3, "end": 9}),
        json.dumps({"url": 42, "caption": "not a url"}),
        "{not json",
        "[" * 5000 + "]" * 5000,
        json.dumps({"url": "https://example.org/j2.mp4", "start": "soon"}),
        json.dumps(["https://example.org/j3.mp4"]),
        json.dumps({"url": "https://example.org/j4.mp4", "caption": {"nested": 1}}),
    ]) + "\n")
    summary = add(store, [str(table), str(rows)])
    csv_rep, jsonl_rep = summary.sources
    assert csv_rep.new == 2 and dict(csv_rep.rejected) == {
        "unknown_category": 1, "field_too_long": 1, "bad_csv": 1, "bad_url": 1}
    assert jsonl_rep.new == 1 and dict(jsonl_rep.rejected) == {
        "bad_url": 1, "bad_json": 3, "bad_span": 1, "bad_field": 1}
    assert {r.where for r in jsonl_rep.rejections} == {f"line {i}" for i in range(2, 8)}
    cands = {c.url.rsplit("/", 1)[-1]: c for c in store.records("candidates")}
    fire = cands["fire.mp4"]
    assert (fire.title, fire.query, fire.duration_s) == ("Fire!", "Fire", 10.5)
    assert _meta(fire)["caption"] == "a house burns"
    assert (_meta(fire)["start_s"], _meta(fire)["end_s"]) == (10.0, 20.5)
    assert cands["walk.mp4"].query == "Normal" and cands["walk.mp4"].title == "people walk"
    j1 = cands["j1.mp4"]
    assert (j1.query, j1.duration_s, _meta(j1)["origin"]["line"]) == ("Car Accident", 6.0, 1)


def test_the_same_url_and_span_from_two_inputs_is_one_candidate(store, tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("https://www.youtube.com/watch?v=abc123&utm_source=x\n"
                 "http://Example.org:80/v.mp4?b=2&a=1\n")
    b = tmp_path / "b.csv"
    b.write_text("url,start,end\nhttps://youtu.be/abc123,,\nhttp://example.org/v.mp4?a=1&b=2,,\n"
                 "http://example.org/v.mp4?a=1&b=2,0,5\n")
    first, second = add(store, [str(a), str(b)]).sources
    assert (first.new, second.new, second.already) == (2, 1, 2)
    assert store.read("candidates").num_rows == 3
    assert normalize_url("https://youtu.be/abc123") == "https://www.youtube.com/watch?v=abc123"
    # the id does not depend on which input came first
    assert {c.candidate_id for c in store.records("candidates")} == {
        candidate_id("https://www.youtube.com/watch?v=abc123", None, None),
        candidate_id("http://example.org/v.mp4?a=1&b=2", None, None),
        candidate_id("http://example.org/v.mp4?a=1&b=2", 0.0, 5.0)}


# ------------------------------------------------------------------ pages, feeds, playlists
def _serve_videos(media_server, small_mp4, names=("a", "b", "c")) -> None:
    for n in names:
        shutil.copy(small_mp4, media_server.root / f"{n}.mp4")


def test_page_with_several_videos_is_expanded_with_positions(store, media_server, small_mp4):
    _serve_videos(media_server, small_mp4)
    (media_server.root / "page.html").write_text(
        "<html><head><title>three clips</title></head><body>"
        "<video src='a.mp4'></video><video><source src='b.mp4' type='video/mp4'></video>"
        "<video src='c.mp4'></video></body></html>")
    page = media_server.url("page.html")
    summary = add(store, [page], AddSettings(**PRIVATE))
    assert summary.sources[0].new == 3 and summary.sources[0].kind == "url"
    cands = sorted(store.records("candidates"), key=lambda c: _meta(c)["origin"]["position"])
    assert [c.url for c in cands] == [media_server.url(f"{n}.mp4") for n in "abc"]
    origin = _meta(cands[1])["origin"]
    assert (origin["kind"], origin["playlist"], origin["position"]) == ("url", page, 2)
    assert origin["playlist_title"] == "three clips" and origin["extractor"] == "Generic"


def test_rss_feed_and_xspf_playlist_are_expanded(store, media_server, small_mp4):
    _serve_videos(media_server, small_mp4)
    base = media_server.base
    (media_server.root / "feed.xml").write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>city cams</title>'
        f'<item><title>one</title><enclosure url="{base}/a.mp4" type="video/mp4" length="1"/>'
        f'</item><item><title>two</title><link>{base}/b.mp4</link></item></channel></rss>')
    (media_server.root / "list.xspf").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><playlist version="1" '
        'xmlns="http://xspf.org/ns/0/"><trackList>'
        f'<track><location>{base}/a.mp4</location><title>A</title></track>'
        f'<track><location>{base}/c.mp4</location><title>C</title></track>'
        '</trackList></playlist>')
    summary = add(store, [media_server.url("feed.xml"), media_server.url("list.xspf")],
                  AddSettings(**PRIVATE))
    feed, xspf = summary.sources
    assert (feed.new, xspf.new, xspf.already) == (2, 1, 1)  # a.mp4 is in both
    titles = {c.url.rsplit("/", 1)[-1]: c.title for c in store.records("candidates")}
    assert titles == {"a.mp4": "one", "b.mp4": "two", "c.mp4": "C"}


def test_playlist_urls_inside_a_list_are_expanded_with_expand(store, media_server, small_mp4,
                                                              tmp_path):
    _serve_videos(media_server, small_mp4)
    (media_server.root / "page.html").write_text(
        "<html><body><video src='a.mp4'></video><video src='b.mp4'></video></body></html>")
    lst = tmp_path / "pages.csv"
    lst.write_text(f"url,category\n{media_server.url('page.html')},Fire\n")
    plain = add(store, [str(lst)], AddSettings(**PRIVATE))
    assert plain.sources[0].new == 1  # without --expand the page itself is the candidate
    expanded = add(store, [str(lst)], AddSettings(expand=True, **PRIVATE))
    assert expanded.sources[0].new == 2
    rows = [c for c in store.records("candidates") if c.url.endswith(".mp4")]
    assert {c.query for c in rows} == {"Fire"}
    assert {_meta(c)["origin"]["line"] for c in rows} == {2}


def test_private_addresses_are_refused_without_the_option(store, media_server, small_mp4):
    _serve_videos(media_server, small_mp4)
    (media_server.root / "page.html").write_text("<video src='a.mp4'></video>")
    summary = add(store, [media_server.url("page.html")])
    [rep] = summary.sources
    assert rep.error_reason == "private_address" and "--allow-private-network" in rep.error
    assert media_server.hits["page.html"] == 0  # refused before any request
    assert store.read("candidates").num_rows == 0
    [res] = _add_results(store)
    assert res.status == "failed" and "private_address" in res.error


def _redirect_chain(small_mp4) -> tuple[WebServer, WebServer, str]:
    """``first/start`` -> 302 to ``middle/hop`` (another port) -> 302 back to
    ``first/page.html``, a page with two videos: the chain starts and ends on ``first``."""
    first, middle = WebServer(), WebServer()
    for n in "ab":
        first.add(f"{n}.mp4", Route(file=small_mp4))
    first.add("page.html", Route(body=b"<html><body><video src='a.mp4'></video>"
                                      b"<video src='b.mp4'></video></body></html>",
                                 content_type="text/html"))
    middle.add("hop", Route(redirect=first.url("page.html")))
    return first, middle, first.add("start", Route(redirect=middle.url("hop")))


def test_every_hop_of_an_expansion_follows_the_policy(store, small_mp4, tmp_path):
    """A redirect chain whose first and last hops are allowed (``--allow-address`` names that
    server only) but whose middle hop is another non-public address: the middle hop is refused
    before it is fetched, the source fails with the reason, nothing is registered. Allowing the
    middle hop too expands the page."""
    first, middle, start = _redirect_chain(small_mp4)
    try:
        res = _run(store.root, start, "--allow-address", first.address, "--json")
        assert res.exit_code == 0, res.output
        [src] = json.loads(res.stdout.strip().splitlines()[-1])["per_source"]
        assert src["error_reason"] == "private_address", src
        assert middle.address in src["error"] and "--allow-private-network" in src["error"]
        assert middle.hits() == 0 and first.hits("start") == 1 and first.hits("page.html") == 0
        assert store.read("candidates").num_rows == 0
        both = add(store, [start], AddSettings(allow_addresses=(first.address,
                                                                middle.address)))
        assert both.sources[0].new == 2 and middle.hits("hop") == 1
        assert sorted(c.url for c in store.records("candidates")) == [
            first.url("a.mp4"), first.url("b.mp4")]
    finally:
        first.close()
        middle.close()


def test_allow_address_is_checked_with_the_other_options(store):
    res = _run(store.root, "https://example.org/a.mp4", "--allow-address", "not-a-network")
    assert res.exit_code == 2 and res.stderr.startswith("error: --allow-address"), res.output
    assert store.read("stage_results").num_rows == 0


# ------------------------------------------------------------------ searches (yt-dlp plugin)
PLUGIN = '''
"""A yt-dlp search extractor for the tests: results are JSON pages on a local server."""
import os
import urllib.parse

from yt_dlp.extractor.common import SearchInfoExtractor


class PrevadLocalSearchIE(SearchInfoExtractor):
    IE_NAME = "prevadlocal:search"
    _SEARCH_KEY = "prevadlocalsearch"

    def _search_results(self, query):
        base = os.environ["PREVAD_TEST_SEARCH_BASE"]
        slug = urllib.parse.quote(query.replace(" ", "_"), safe="")
        page = 1
        while True:
            data = self._download_json(f"{base}/search/{slug}-{page}.json", query,
                                       note=f"page {page}")
            for hit in data["results"]:
                yield self.url_result(hit["url"], video_title=hit.get("title"),
                                      video_id=hit.get("id"))
            if not data.get("next"):
                return
            page += 1
'''


@pytest.fixture
def search_plugin(tmp_path, monkeypatch, media_server) -> Iterator[str]:
    """Install the test search extractor through yt-dlp's plugin folders; results are served
    by ``media_server`` under ``/search/<query>-<page>.json``."""
    from yt_dlp.plugins import load_all_plugins

    folder = tmp_path / "plugins" / "yt_dlp_plugins" / "extractor"
    folder.mkdir(parents=True)
    (folder / "prevad_local_search.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    for name in [m for m in sys.modules if m.startswith("yt_dlp_plugins")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    load_all_plugins()
    monkeypatch.setenv("PREVAD_TEST_SEARCH_BASE", media_server.base)
    (media_server.root / "search").mkdir()
    yield "prevadlocalsearch"


def _results(media_server, query: str, urls: list[str], per_page: int = 2) -> None:
    slug = query.replace(" ", "_")
    pages = [urls[i : i + per_page] for i in range(0, len(urls), per_page)] or [[]]
    for p, chunk in enumerate(pages, start=1):
        (media_server.root / "search" / f"{slug}-{p}.json").write_text(json.dumps({
            "results": [{"url": u, "title": f"hit {u.rsplit('/', 1)[-1]}"} for u in chunk],
            "next": p < len(pages)}))


def test_search_query_registers_the_first_n_results(store, media_server, small_mp4,
                                                    search_plugin):
    _serve_videos(media_server, small_mp4, "abcde")
    _results(media_server, "house fire", [media_server.url(f"{n}.mp4") for n in "abcde"])
    summary = add(store, [f"{search_plugin}3:house fire"], AddSettings(**PRIVATE))
    [rep] = summary.sources
    assert (rep.kind, rep.new) == ("search", 3)
    cands = sorted(store.records("candidates"), key=lambda c: _meta(c)["origin"]["position"])
    assert [c.url for c in cands] == [media_server.url(f"{n}.mp4") for n in "abc"]
    origin = _meta(cands[2])["origin"]
    assert origin["query"] == f"{search_plugin}3:house fire" and origin["position"] == 3
    assert origin["extractor"] == "PrevadLocalSearch"
    assert media_server.hits["search/house_fire-3.json"] == 0  # 3 results: pages 1 and 2 only
    # the search's requests follow the network policy too
    refused = add(store, [f"{search_plugin}3:house fire"])
    assert refused.sources[0].error_reason == "private_address"


def test_keyword_file_searches_each_keyword_per_category(store, media_server, small_mp4,
                                                         search_plugin, tmp_path):
    _serve_videos(media_server, small_mp4, "abcdef")
    u = {n: media_server.url(f"{n}.mp4") for n in "abcdef"}
    _results(media_server, "house fire", [u["a"], u["b"], u["c"]])
    _results(media_server, "burning car", [u["c"], u["d"]])
    _results(media_server, "street at night", [u["e"], u["f"]])
    keywords = tmp_path / "keywords.json"
    keywords.write_text(json.dumps({"queries": [
        {"category": "fire", "keywords": ["house fire", "burning car"]},
        {"category": "Normal", "keywords": ["street at night"]}]}))
    summary = add(store, [str(keywords)], AddSettings(search_prefix=search_plugin,
                                                      max_per_query=2, **PRIVATE))
    [rep] = summary.sources
    assert (rep.kind, rep.queries, rep.new) == ("keywords", 3, 6)
    by_url = {c.url: c for c in store.records("candidates")}
    assert set(by_url) == {u["a"], u["b"], u["c"], u["d"], u["e"], u["f"]}
    assert by_url[u["d"]].query == "Fire" and by_url[u["e"]].query == "Normal"
    origin = _meta(by_url[u["d"]])["origin"]
    assert (origin["kind"], origin["keyword"], origin["category"]) == (
        "keywords", "burning car", "Fire")
    assert origin["query"] == f"{search_plugin}2:burning car" and origin["position"] == 2
    # a plain {category: [keywords]} object works too; re-adding finds them all stored
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"Fire": ["house fire"]}))
    again = add(store, [str(plain)], AddSettings(search_prefix=search_plugin, max_per_query=2,
                                                 **PRIVATE))
    assert (again.sources[0].new, again.sources[0].already) == (0, 2)


# ------------------------------------------------------------------ bounds of an expansion
@pytest.fixture
def hostile_server() -> Iterator[str]:
    """A server whose ``/endless.html`` never ends and whose ``/drip.html`` sends a byte a
    second (neither trips a socket timeout)."""
    import time

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            try:
                self.wfile.write(b"<html><body>")
                while True:
                    if self.path.startswith("/drip"):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.5)
                    else:
                        self.wfile.write(b"<p>" + b"x" * 65536 + b"</p>")
            except (BrokenPipeError, ConnectionResetError):
                return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_endless_and_dripping_pages_end_within_their_bounds(store, hostile_server):
    endless = add(store, [f"{hostile_server}/endless.html"],
                  AddSettings(max_page_bytes=1_000_000, **PRIVATE))
    assert endless.sources[0].error_reason == "page_too_large"
    drip = add(store, [f"{hostile_server}/drip.html"],
               AddSettings(timeout_s=2.0, socket_timeout_s=5.0, **PRIVATE))
    assert drip.sources[0].error_reason == "timeout"
    assert store.read("candidates").num_rows == 0


# ------------------------------------------------------------------ add -> acquire
def test_added_urls_are_downloaded_by_acquire(store, media_server, small_mp4, tmp_path):
    """End to end on 127.0.0.1: a list with a whole video and a span, then ``acquire``."""
    _serve_videos(media_server, small_mp4, "ab")
    lst = tmp_path / "urls.txt"
    lst.write_text(f"{media_server.url('a.mp4')}\n{media_server.url('b.mp4')} 1 3\n")
    assert add(store, [str(lst)]).sources[0].new == 2
    # the server is on 127.0.0.1: acquire fetches it only when told to (D4)
    summary = acquire(store, AcquireSettings(retries=0, backoff_s=0.0, socket_timeout_s=5.0,
                                             allow_private_network=True))
    assert (summary.ok, summary.failed, summary.rejected) == (2, 0, {})
    videos = {v.video_id: v for v in store.records("videos")}
    whole = videos[video_id_for("web", normalize_url(media_server.url("a.mp4")))]
    span = videos[video_id_for("web", normalize_url(media_server.url("b.mp4")), 1.0, 3.0)]
    assert whole.duration_s == pytest.approx(4.0) and (whole.start_s, whole.end_s) == (None, None)
    assert span.duration_s == pytest.approx(2.0, abs=0.1) and (span.start_s, span.end_s) == (1, 3)


# ------------------------------------------------------------------ the command line
def test_command_prints_counts_and_rejected_lines(store, tmp_path):
    lst = tmp_path / "urls.txt"
    lst.write_text("https://example.org/a.mp4\nnot-a-url\nhttps://example.org/a.mp4\n")
    res = _run(store.root, lst)
    assert res.exit_code == 0, res.output
    assert "1 entries: 1 new, 0 already there" in res.output
    assert "rejected bad_url x1: line 2" in res.output
    assert "rejected duplicate_in_source x1: line 3" in res.output
    again = _run(store.root, lst)
    assert "0 new, 1 already there" in again.output


def test_bad_sources_and_options_are_one_error_line_and_write_nothing(store, tmp_path):
    binary = tmp_path / "junk.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    nourl = tmp_path / "nourl.csv"
    nourl.write_text("caption,start\na fire,1\n")
    odd = tmp_path / "urls.xlsx"
    odd.write_text("x")
    good = tmp_path / "good.txt"
    good.write_text("https://example.org/a.mp4\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    badkw = tmp_path / "kw.json"
    badkw.write_text(json.dumps({"Teleportation": ["x"]}))
    cases = [
        ([tmp_path / "missing.txt"], "not a file, a URL"),
        ([binary], "is binary"),
        ([nourl], "missing column 'url'"),
        ([odd], "cannot tell its format"),
        ([tmp_path], "is not a regular file"),
        (["nosuchsearch5:house fire"], "'nosuchsearch' is not a search prefix"),
        (["ftp://example.org/list"], "scheme 'ftp' is not allowed"),
        ([deep], "nested deeper than"),
        ([badkw], "unknown PreVAD category"),
        ([good, "--max-per-query", "0"], "--max-per-query 0: expected an integer >= 1"),
        ([good, "--timeout", "nan"], "--timeout nan: expected a finite number"),
        ([good, "--source", "../etc"], "--source '../etc'"),
        ([good, "--category", "Teleportation"], "--category"),
        ([good, "--search-prefix", "nosuch"], "--search-prefix 'nosuch'"),
        ([good, "--max-file-bytes", "5"], "over the limit of 5"),
        ([good, tmp_path / "missing.txt"], "not a file, a URL"),  # nothing of the good one
    ]
    for extra, message in cases:
        res = _run(store.root, *extra)
        assert res.exit_code == 2, (extra, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (extra, res.stderr)
        assert message in lines[0], (extra, lines[0])
        assert "Traceback" not in res.output
    assert store.read("candidates").num_rows == 0 and not _add_results(store)
    with pytest.raises(CurationError, match="at least one SOURCE"):
        add(store, [])
