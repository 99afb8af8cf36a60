"""`rare serve`'s JSON API through an HTTP client against a live uvicorn server (tests/fixtures/serve.py)."""

from __future__ import annotations

import io
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from rare.data.records import Candidate, iter_queries
from rare.evaluate.runfile import read_run
from rare.serve.app import KEEPALIVE_REQUESTS, KeepAliveCap
from rare.serve.batch import MicroBatcher
from tests.fixtures.serve import LiveServer, ServedIndex, tree_state


@pytest.fixture(scope="module")
def client(live_server: LiveServer):
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        yield c


def png(size: tuple[int, int] = (48, 48), color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def noise_png(size: int = 64) -> bytes:
    """Random pixels: the file is big enough that half of it is a truncated image."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (size, size), random.Random(0).randbytes(size * size * 3)).save(buf, format="PNG")
    return buf.getvalue()


def search(client: httpx.Client, files: dict | None = None, **form: object) -> httpx.Response:
    return client.post("/search", data={k: str(v) for k, v in form.items()}, files=files)


def test_info_lists_variants_tasks_and_pools(client: httpx.Client, served_index: ServedIndex):
    info = client.get("/info").json()
    assert info["variants"] == ["none", "both"]
    assert info["pools"] == ["local", "global"]
    tasks = {t["name"]: t for t in info["tasks"]}
    assert tasks["glyphcaps_task0"]["query_modality"] == "text"
    assert tasks["tweakset_task7"] == {"name": "tweakset_task7", "dataset": "tweakset", "task_id": 7,
                                       "query_modality": "image,text", "candidate_modality": "image"}
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/search", "/candidates/{did}", "/images/{did}",
                                                                   "/queries/random"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static-offline-docs/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200  # served here, not by a CDN


def _run_with_scores(path: Path) -> dict[str, list[tuple[str, float]]]:
    """qid -> (did, score) in rank order; read_run checks the file, the scores come from its fifth column."""
    ranked = read_run(path)
    scores = {(p[0], p[2]): float(p[4]) for p in (line.split() for line in path.read_text().splitlines())}
    return {qid: [(d, scores[qid, d]) for d in dids] for qid, dids in ranked.items()}


@pytest.mark.parametrize("pool", ["local", "global"])
def test_every_benchmark_query_ranks_as_the_evaluation_run_files(client: httpx.Client, served_index: ServedIndex,
                                                                 pool: str):
    """The serving contract: on every test query, each variant's served top-10 is the evaluation's top-10 and
    the scores agree to 1e-3 (serving runs the same model on public torch modules, not the same bits)."""
    tasks = [t["name"] for t in client.get("/info").json()["tasks"]]
    checked = 0
    for task in tasks:
        ds, tid = task.rsplit("_task", 1)
        runs = {v: _run_with_scores(served_index.evals / v / "runs" / pool / f"{task}.trec") for v in ("none", "both")}
        for q in iter_queries(served_index.data / f"query/test/mbeir_{ds}_task{tid}_test.jsonl"):
            out = search(client, qid=q.qid, k=10, pool=pool).json()
            assert out["query"]["task"] == task
            for col in out["results"]:
                want = runs[col["variant"]][q.qid][:10]
                assert [h["did"] for h in col["hits"]] == [d for d, _ in want], (task, q.qid, col["variant"])
                assert [h["score"] for h in col["hits"]] == pytest.approx([s for _, s in want], abs=1e-3)
                assert [h["positive"] for h in col["hits"]] == [d in out["query"]["positives"] for d, _ in want]
                checked += 1
    assert checked >= 2 * len(tasks)  # every task has test queries, each served by both variants


def test_enhancement_runs_live_and_matches_the_enhancement_stage(client: httpx.Client, served_index: ServedIndex):
    """An image question (resolve) on the stand-in: the live text is the stage's text; only 'both' reads it."""
    path = served_index.queries / "query/test/mbeir_emblemkb_task6_test.jsonl"
    q = next(q for q in iter_queries(path) if q.enhanced is not None and q.enhanced.ok)
    out = search(client, qid=q.qid, k=5).json()
    e = out["enhancement"]
    assert (e["status"], e["op"], e["text"], e["backend"]) == ("ok", q.enhanced.op, q.enhanced.txt, "standin")
    columns = {c["variant"]: c for c in out["results"]}
    assert columns["both"]["uses_enhanced_query"] and q.enhanced.txt in columns["both"]["query_text"]
    assert not columns["none"]["uses_enhanced_query"] and q.enhanced.txt not in columns["none"]["query_text"]
    assert columns["none"]["query_text"].endswith(q.txt) and out["instruction"] in columns["none"]["query_text"]


def test_free_query_with_an_upload_falls_back_to_the_original_and_says_so(client: httpx.Client):
    r = search(client, {"image": ("mine.png", png(), "image/png")}, text="make the circle blue please",
               task="tweakset_task7", k=4)
    assert r.status_code == 200, r.text
    out = r.json()
    e = out["enhancement"]
    assert e["status"] == "failed" and "annotation" in e["cause"] and "original text is used" in e["note"]
    assert e["text"] is None
    for col in out["results"]:
        assert col["query_text"].endswith("make the circle blue please")
        assert len(col["hits"]) == 4 and all(h["modality"] == "image" and h["image_url"] for h in col["hits"])
        assert [h["rank"] for h in col["hits"]] == [1, 2, 3, 4]
        assert all(a["score"] >= b["score"] for a, b in zip(col["hits"], col["hits"][1:]))
    assert out["query"]["qid"] is None and out["query"]["positives"] == []


def test_concurrent_queries_are_batched_and_answer_as_alone(client: httpx.Client, live_server: LiveServer):
    qids = [client.get("/queries/random", params={"seed": i}).json()["qid"] for i in range(8)]
    alone = [search(client, qid=q, k=5).json()["results"] for q in qids]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: search(client, qid=q, k=5).json()["results"], qids))
    for a, b in zip(alone, together):
        assert [[h["did"] for h in col["hits"]] for col in a] == [[h["did"] for h in col["hits"]] for col in b]
        assert [h["score"] for col in a for h in col["hits"]] == pytest.approx(
            [h["score"] for col in b for h in col["hits"]], abs=1e-2)


def test_the_batcher_runs_waiting_items_together_and_survives_errors():
    gate, calls = threading.Event(), []

    def fn(items: list[int]) -> list[int]:
        calls.append(list(items))
        gate.wait(5)
        if -1 in items:
            raise ValueError("bad item")
        return [i * 10 for i in items]

    batcher = MicroBatcher(fn)
    first = batcher.submit(0)
    while not calls:  # the worker is inside the first batch: the next three wait together
        time.sleep(0.01)
    rest = [batcher.submit(i) for i in (1, 2, 3)]
    gate.set()
    assert first.result() == 0 and [f.result() for f in rest] == [10, 20, 30]
    assert calls == [[0], [1, 2, 3]]
    with pytest.raises(ValueError, match="bad item"):
        batcher.submit(-1).result()
    assert batcher.submit(4).result() == 40


def test_keep_alive_connections_close_after_the_cap_and_clients_reconnect(live_server: LiveServer):
    """With uvicorn's workers on one socket, a closed connection is how a client moves to a less busy worker."""
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        answers = [c.get("/info") for _ in range(KEEPALIVE_REQUESTS + 3)]
    assert [r.status_code for r in answers] == [200] * (KEEPALIVE_REQUESTS + 3)
    closing = [i + 1 for i, r in enumerate(answers) if r.headers.get("connection") == "close"]
    assert closing == [KEEPALIVE_REQUESTS]  # and the client's next request went over a new connection


def test_the_keep_alive_cap_counts_each_connection_by_itself():
    import asyncio

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    cap = KeepAliveCap(app, max_requests=3)

    async def request(port: int) -> bool:
        sent = []

        async def send(message):
            sent.append(message)

        await cap({"type": "http", "client": ("127.0.0.1", port)}, None, send)
        assert sent[1] == {"type": "http.response.body", "body": b"ok"}
        return (b"connection", b"close") in sent[0]["headers"]

    async def traffic() -> list[bool]:
        return [await request(port) for port in (1, 2, 1, 1, 2, 1, 1, 1, 2)]

    # port 1: its 3rd response closes, then a new connection from the same address counts afresh
    assert asyncio.run(traffic()) == [False, False, False, True, False, False, False, True, True]


def test_text_only_queries_are_not_enhanced(client: httpx.Client):
    out = search(client, text="a red circle", task="glyphcaps_task0", k=3, variants="both").json()
    assert out["enhancement"]["status"] == "skipped" and out["enhancement"]["op"] == "none"
    assert [c["variant"] for c in out["results"]] == ["both"]


def test_candidates_and_their_images(client: httpx.Client, live_server: LiveServer, served_index: ServedIndex):
    out = search(client, text="a red circle", task="glyphcaps_task0", k=1).json()
    did = out["results"][0]["hits"][0]["did"]
    cand = client.get(f"/candidates/{did}").json()
    record: Candidate = live_server.service.catalog.candidates[did]
    assert (cand["did"], cand["text"], cand["modality"]) == (did, record.txt, record.modality)
    assert cand["enhanced_text"] == record.enhanced.txt and cand["enhanced_status"] == "ok"
    image = client.get(cand["image_url"])
    assert image.status_code == 200 and image.content == (served_index.data / record.img_path).read_bytes()
    random = client.get("/queries/random", params={"dataset": "twinpix", "seed": 3}).json()
    assert random["task"] == "twinpix_task4" and random["positives"]
    assert client.get(random["image_url"]).content[:4] == b"\x89PNG"
    assert client.get("/queries/random", params={"dataset": "twinpix", "seed": 3}).json() == random


def test_images_serve_only_the_pools_own_files_inside_the_data_root(client: httpx.Client, live_server: LiveServer,
                                                                    monkeypatch: pytest.MonkeyPatch):
    catalog = live_server.service.catalog
    for did, rel in [("99:1", "../outside.png"), ("99:2", "mbeir_images/link-out.png"), ("99:3", "/etc/hostname")]:
        monkeypatch.setitem(catalog.candidates, did, Candidate(did, "x", rel, "image"))
        r = client.get(f"/images/{did}")
        assert r.status_code == 403 and r.json()["field"] == "did", (rel, r.text)
    assert client.get("/images/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/images/10:not-a-did").json()["detail"] == "did: unknown candidate '10:not-a-did'"


BOMB = (20_000, 1_000)  # 20M pixels, a few kB as PNG: over the 16M decoded-pixel cap


@pytest.mark.parametrize(("form", "files", "status", "field", "words"), [
    ({"text": "x", "task": "glyphcaps_task0", "k": 0}, None, 422, "k", "between 1 and 100"),
    ({"text": "x", "task": "glyphcaps_task0", "k": 101}, None, 422, "k", "got 101"),
    ({"text": "x", "task": "glyphcaps_task0", "k": "ten"}, None, 422, "k", "integer"),
    ({"text": "x", "task": "nosuch_task0"}, None, 422, "task", "unknown task 'nosuch_task0'"),
    ({"text": "x", "task": "glyphcaps_task0", "variants": "none,best"}, None, 422, "variants", "'best'"),
    ({"text": "x", "task": "glyphcaps_task0", "pool": "galaxy"}, None, 422, "pool", "'galaxy'"),
    ({"qid": "10:999999"}, None, 404, "qid", "unknown benchmark query"),
    ({"text": "", "task": "glyphcaps_task0"}, None, 422, "text", "empty"),
    ({"task": "twinpix_task4"}, None, 422, "image", "upload an image"),
    ({"task": "twinpix_task4"}, {"image": ("big.png", b"\0" * (10 * 1024 * 1024 + 1))}, 413, "image", "size cap"),
    ({"task": "twinpix_task4"}, {"image": ("bomb.png", png(BOMB, "white"))}, 422, "image", "exceeds the cap"),
    ({"task": "twinpix_task4"}, {"image": ("notes.txt", b"just some text")}, 422, "image", "unreadable"),
    ({"task": "twinpix_task4"}, {"image": ("cut.png", noise_png()[:6000])}, 422, "image", "unreadable"),
])
def test_bad_input_is_refused_naming_the_field_and_the_server_keeps_serving(
        client: httpx.Client, form: dict, files: dict | None, status: int, field: str, words: str):
    r = search(client, files, **form)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["detail"].startswith(f"{field}: ") and words in r.json()["detail"]
    ok = search(client, text="a red circle", task="glyphcaps_task0", k=2)
    assert ok.status_code == 200 and len(ok.json()["results"][1]["hits"]) == 2


def test_other_bad_requests(client: httpx.Client):
    assert client.get("/queries/random", params={"dataset": "atlantis"}).json()["field"] == "dataset"
    qid = client.get("/queries/random", params={"dataset": "glyphcaps", "seed": 0}).json()["qid"]
    r = search(client, qid=qid, text="also text")
    assert r.status_code == 422 and r.json()["detail"] == "qid: a benchmark query brings its own text and image: " \
                                                          "send qid without them"
    r = search(client, qid=qid, task="twinpix_task4")
    assert r.status_code == 422 and r.json()["field"] == "task" and "belongs to glyphcaps_task" in r.json()["detail"]


def test_a_variant_reading_the_enhanced_corpus_can_be_served_first(served_index: ServedIndex):
    """The catalog comes from the first variant's plan, whose global pool may already be the enhanced mirror."""
    from rare.serve import build_service

    idx = served_index
    service = build_service(["both", "none"], idx.models, idx.data, idx.corpus, idx.queries, idx.params)
    assert service.catalog.candidates and all(c.enhanced is not None for c in service.catalog.candidates.values())
    out = service.search(qid=next(iter(service.catalog.queries)), k=3)
    assert [c.variant for c in out.results] == ["both", "none"] and all(len(c.hits) == 3 for c in out.results)


def test_cli_names_what_is_missing(tmp_path: Path):
    from rare.cli import app

    r = CliRunner().invoke(app, ["serve", "--models", str(tmp_path / "nomodels"), "--data", str(tmp_path),
                                 "--corpus-enhanced", str(tmp_path), "--queries-enhanced", str(tmp_path)])
    assert r.exit_code == 1 and "not a retriever export" in r.output
    r = CliRunner().invoke(app, ["serve", "--data", str(tmp_path), "--corpus-enhanced", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "nothing' does not exist" in r.output


def test_zz_serving_wrote_nothing_into_data_models_or_caches(client: httpx.Client, live_server: LiveServer,
                                                             served_index: ServedIndex):
    """Runs last in this module: every request above has been served by now."""
    assert search(client, {"image": ("a.png", png(), "image/png")}, task="twinpix_task4").status_code == 200
    assert tree_state(served_index.watched()) == live_server.before


def test_worker_processes_answer_as_the_single_process_server(client: httpx.Client, served_index: ServedIndex):
    """`rare serve --workers 2`: each worker builds the same service from the environment."""
    idx = served_index
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "rare", "serve", "--workers", "2", "--port", str(port), "--models", str(idx.models),
           "--data", str(idx.data), "--corpus-enhanced", str(idx.corpus), "--queries-enhanced", str(idx.queries),
           "--params", str(idx.params)]
    proc = subprocess.Popen(cmd, cwd=idx.base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as workers:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if workers.get("/info").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:  # uvicorn restarts crashed workers
                    proc.kill()                                                # forever: read what they said
                    pytest.fail(f"rare serve --workers 2 did not answer: {proc.communicate()[0][-3000:]}")
                time.sleep(0.2)
            ds, tid = workers.get("/info").json()["tasks"][0]["name"].rsplit("_task", 1)
            qid = next(iter_queries(idx.data / f"query/test/mbeir_{ds}_task{tid}_test.jsonl")).qid
            for _ in range(4):  # requests spread over both workers
                got, want = search(workers, qid=qid, k=10).json(), search(client, qid=qid, k=10).json()
                assert [[h["did"] for h in c["hits"]] for c in got["results"]] == \
                       [[h["did"] for h in c["hits"]] for c in want["results"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_service_spec_travels_through_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """What `rare serve --workers N` hands each worker: every field back as it was, None paths included."""
    from rare.serve import SERVICE_ENV, ServiceSpec

    monkeypatch.delenv(SERVICE_ENV, raising=False)
    spec = ServiceSpec(variants=["none", "both"], models=tmp_path / "models", data=tmp_path / "data",
                       corpus_enhanced=None, queries_enhanced=tmp_path / "q", params_file=tmp_path / "params.yaml",
                       torch_threads=3)
    spec.to_env()
    assert ServiceSpec.from_env() == spec


def _hits(r: httpx.Response) -> list[list[tuple[str, float]]]:
    assert r.status_code == 200, r.text
    return [[(h["did"], round(h["score"], 5)) for h in res["hits"]] for res in r.json()["results"]]


def test_json_search_answers_as_the_form_search(client: httpx.Client):
    """The same query as a form (with an upload) and as application/json (with a data URL): the same ranking."""
    import base64

    form = search(client, text="a red circle", task="glyphcaps_task0", k=5, variants="none,both")
    as_json = client.post("/search", json={"text": "a red circle", "task": "glyphcaps_task0", "k": 5,
                                           "variants": ["none", "both"]})
    assert _hits(as_json) == _hits(form) and len(_hits(form)[0]) == 5
    img = png((40, 40), "blue")
    form = search(client, {"image": ("q.png", img, "image/png")}, task="twinpix_task4", k=4)
    url = "data:image/png;base64," + base64.b64encode(img).decode()
    as_json = client.post("/search", json={"task": "twinpix_task4", "k": 4, "image": url})
    assert _hits(as_json) == _hits(form)
    assert (as_json.json()["instruction"], as_json.json()["pool"]) == (form.json()["instruction"], form.json()["pool"])


@pytest.mark.parametrize(("kwargs", "status", "field", "words"), [
    ({"content": b"a red circle", "headers": {"content-type": "text/plain"}}, 415, "content-type",
     "multipart/form-data, application/x-www-form-urlencoded, application/json"),
    ({"json": {"task": "twinpix_task4", "image": "http://example.com/x.png"}}, 422, "image", "base64 data URL"),
    ({"json": {"task": "twinpix_task4", "image": "data:image/png;base64,@@@@"}}, 422, "image", "not valid base64"),
    ({"json": {"task": "twinpix_task4", "image": "data:image/png;base64,"
               + __import__("base64").b64encode(b"just text").decode()}}, 422, "image", "unreadable"),
    ({"json": {"text": "x", "colour": "red"}}, 422, "colour", "Extra inputs"),
    ({"json": {"text": "x", "k": "many"}}, 422, "k", "integer"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "body", "not valid JSON"),
])
def test_json_and_content_type_refusals(client: httpx.Client, kwargs: dict, status: int, field: str, words: str):
    r = client.post("/search", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and words in r.json()["detail"], r.json()
