"""The ``openai`` backend against a real HTTP server on 127.0.0.1 (tests/fixtures/openai_server.py).

Faults are injected per request: 429, 500, a hang past the timeout, a malformed body, and a
server that dies mid-shard. Each time the stage either finishes with the output of a clean run or
fails naming the cause, keeps every answer it got, and a rerun asks the server for none of them again.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from rare.config.enhance import EnhanceParams
from rare.enhance.backends import generation_settings, make_backend
from rare.enhance.backends.base import BackendUnavailable, EnhanceRequest
from rare.enhance.prompts import PromptSet
from rare.enhance.run import enhance_side
from tests.fixtures import openai_server as script
from tests.fixtures.openai_server import ANSWER_PREFIX, ScriptedServer

MODEL = "Qwen/Qwen3-VL-8B-Instruct"


@pytest.fixture
def server():
    srv = ScriptedServer(hang_s=3.0).start()
    yield srv
    srv.stop()


def params(cache: Path, *urls: str, **openai: object) -> EnhanceParams:
    options = {"base_urls": list(urls), "timeout_s": 2.0, "max_retries": 3, "backoff_s": 0.01,
               "max_concurrency": 4, **openai}
    return EnhanceParams(backend="openai", model=MODEL, cache_dir=str(cache), shard_size=4, batch_size=4,
                         seed=3, max_pixels=4096, openai=options)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(p: EnhanceParams, root: Path, out: Path, side: str = "corpus"):  # noqa: ANN201
    return enhance_side(p, root, out, side, progress=False)


def test_requests_are_chat_messages_with_resized_inline_images(server, tmp_path, monkeypatch) -> None:
    img = tmp_path / "photo.png"
    Image.new("RGB", (300, 200), "blue").save(img)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    prompts = PromptSet.load("v1")

    def req(op: str, side: str, text: str = "", image: Path | None = None) -> EnhanceRequest:
        t = prompts.template(op, side)
        return EnhanceRequest(key=op, op=op, side=side, text=text, image=image, system=t.system,
                              instruction=t.render(text), max_new_tokens=512 if side == "corpus" else 128)

    monkeypatch.setenv("RARE_TEST_KEY", "sk-local")
    backend = make_backend(params(tmp_path, server.url, api_key_env="RARE_TEST_KEY"))
    reqs = [req("caption", "corpus", image=img), req("rewrite", "query", "now with a red hat"),
            req("caption", "query", image=bad)]
    results = backend.generate(reqs)
    backend.close()
    assert len(server.log) == 2  # the unreadable image never reaches the server
    assert {row["authorization"] for row in server.log} == {"Bearer sk-local"}  # the key comes from the env
    sent = sorted((row["payload"] for row in server.log), key=lambda p: p["max_tokens"], reverse=True)
    for payload, r in zip(sent, reqs):
        assert (payload["model"], payload["temperature"], payload["top_p"], payload["seed"], payload["n"]) == (
            MODEL, 0.0, 1.0, 3, 1)
        assert payload["max_tokens"] == r.max_new_tokens
        system, user = payload["messages"]
        assert system == {"role": "system", "content": r.system}  # rendered by the server's chat template
        assert user["role"] == "user" and user["content"][-1] == {"type": "text", "text": r.instruction}
    image_part = sent[0]["messages"][1]["content"][0]
    assert image_part["type"] == "image_url" and image_part["image_url"]["url"].startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])))
    assert decoded.width * decoded.height <= 4096 and abs(decoded.width / decoded.height - 1.5) < 0.05
    assert len(sent[1]["messages"][1]["content"]) == 1  # rewrite: text only
    assert results[0].text.startswith(f"{ANSWER_PREFIX} {decoded.width}x{decoded.height} ")
    assert (results[0].tokens_in, results[0].finish_reason) == (7, "stop")
    assert results[1].text.startswith(f"{ANSWER_PREFIX} no-image ")
    assert results[2].text is None and results[2].error.startswith("image_unreadable: ")


def test_429_500_timeouts_and_malformed_bodies_are_retried_to_a_clean_runs_output(server, tiny_root, tmp_path) -> None:
    clean = run(params(tmp_path / "c1", server.url), tiny_root, tmp_path / "clean")
    assert clean.summary["failed"] == 0 and clean.summary["ok"] > 10
    calls = len(server.log)
    server.faults.extend([script.TOO_MANY, script.ERROR, script.HANG, script.MALFORMED, script.TOO_MANY, script.ERROR, script.HANG, script.MALFORMED])
    # Retries may land on one request back to back: 8 of them always see it through.
    faulty = run(params(tmp_path / "c2", server.url, max_retries=8), tiny_root, tmp_path / "faulty")
    assert tree(tmp_path / "faulty") == tree(tmp_path / "clean")
    assert faulty.summary == clean.summary
    assert len(server.log) - calls == calls + 8  # every fault cost exactly one retry
    assert faulty.runtime["generated"] == clean.runtime["generated"]


def test_an_item_that_always_gets_a_malformed_body_is_a_failure_record(server, tiny_root, tmp_path) -> None:
    rows = [json.loads(line) for f in sorted((tiny_root / "cand_pool/local").glob("*.jsonl"))
            for line in f.read_text().splitlines()]
    server.fail_text = next(r["txt"] for r in rows if r["txt"] and r["img_path"])  # one refine input
    p = params(tmp_path / "cache", server.url)
    outcome = enhance_side(p.model_copy(update={"max_failure_rate": 1.0}), tiny_root, tmp_path / "out", "corpus",
                           progress=False)
    failures = [json.loads(line) for line in (tmp_path / "out/enhance_failures.jsonl").read_text().splitlines()]
    assert failures and all("malformed chat completion" in f["cause"] for f in failures)
    assert outcome.summary["failures_by_cause"] == {"backend_error": len(failures)}
    assert outcome.summary["ok"] > 0


def test_a_4xx_answer_is_that_items_failure_and_is_not_retried(server, tmp_path) -> None:
    t = PromptSet.load("v1").template("rewrite", "query")
    req = EnhanceRequest(key="k", op="rewrite", side="query", text="with a red hat", image=None, system=t.system,
                         instruction=t.render("with a red hat"), max_new_tokens=128)
    server.faults.append(script.BAD_REQUEST)
    backend = make_backend(params(tmp_path, server.url))
    (result,) = backend.generate([req])
    backend.close()
    assert result.text is None and result.error == f"backend_error: HTTP 400: {script.CONTEXT_LENGTH}"
    assert len(server.log) == 1 and result.requests == 1


def test_a_server_that_dies_mid_shard_fails_the_stage_and_the_rerun_redoes_nothing(server, tiny_root, tmp_path):
    p = params(tmp_path / "cache", server.url, max_retries=2)
    server.die_after = 5
    cause = r"openai server unavailable for \d+ of \d+ requests \(no answer after 3 attempts; last: http://127.0.0.1"
    with pytest.raises(BackendUnavailable, match=cause):
        run(p, tiny_root, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # a failed run writes no output
    first = [row["payload"] for row in server.answers()]
    assert len(first) == 5
    server.start()  # back on the same port
    again = run(p, tiny_root, tmp_path / "out")
    assert again.summary["failed"] == 0
    second = [row["payload"] for row in server.answers()][5:]
    assert not {json.dumps(x, sort_keys=True) for x in first} & {json.dumps(x, sort_keys=True) for x in second}
    assert again.runtime["generated"] == len(second) and again.runtime["cache_hits"] >= 5
    clean = run(params(tmp_path / "clean_cache", server.url), tiny_root, tmp_path / "clean")
    assert tree(tmp_path / "out") == tree(tmp_path / "clean")
    assert clean.runtime["generated"] == len(first) + len(second)


def test_a_server_back_within_the_retry_window_costs_nothing_but_time(server, tiny_root, tmp_path) -> None:
    server.die_after, server.revive_after = 3, 0.5
    p = params(tmp_path / "cache", server.url, max_retries=8, backoff_s=0.05)  # waits up to ~13 s in all
    outcome = run(p, tiny_root, tmp_path / "out")
    assert outcome.summary["failed"] == 0
    assert script.DIE in {row["did"] for row in server.log}


def test_several_base_urls_share_the_work_and_a_dead_one_fails_over(server, tiny_root, tmp_path) -> None:
    other = ScriptedServer().start()
    dead = ScriptedServer().start()
    dead.stop()
    try:
        p = params(tmp_path / "cache", server.url, other.url, dead.url, max_retries=8)
        outcome = run(p, tiny_root, tmp_path / "out")
    finally:
        other.stop()
    assert outcome.summary["failed"] == 0
    assert server.answers() and other.answers()
    assert len(server.answers()) + len(other.answers()) == outcome.runtime["generated"]


def test_transport_settings_stay_out_of_the_cache_key(tmp_path) -> None:
    a = params(tmp_path, "http://a:1/v1")
    b = params(tmp_path, "http://b:2/v1", "http://c:3/v1", max_concurrency=99, timeout_s=5.0)
    assert generation_settings(a) == generation_settings(b) == {"seed": 3, "max_pixels": 4096, "image_format": "png"}
