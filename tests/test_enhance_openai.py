"""The ``openai`` backend against a real HTTP server on 127.0.0.1 that validates like ``vllm serve``
(tests/fixtures/openai_server.py).

Faults are injected per request: 429 (with and without Retry-After), 500, a hang past the timeout, a
body trickled past the deadline, a malformed body, abort, length, null content, and a server that dies
mid-shard. Each time the stage either finishes with the output of a clean run or fails naming the
cause, keeps every answer it got, and a rerun asks the server for none of them again. A configuration
error (a key not exported, a base URL without /v1, a model not served, a gateway's error page) fails
the stage at once, stores nothing, and the rerun after the fix generates every item.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from rare import stageflow
from rare.config.enhance import EnhanceParams
from rare.enhance.backends import generation_settings, make_backend
from rare.enhance.backends.interface import BackendConfigError, BackendUnavailable, EnhanceRequest, EnhanceResult
from rare.enhance.backends.openai import UNIFORM_MIN_REQUESTS, BaseUrls, _Stopped, retry_after
from rare.enhance.checks import judge
from rare.enhance.prompts import PromptSet
from rare.enhance.side import EnhanceFailure, check_failures, enhance_side, samples
from tests.fixtures import openai_server as script
from tests.fixtures.openai_server import ANSWER_PREFIX, ScriptedServer

MODEL = script.DEFAULT_MODEL


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


# -- what a server that behaves like vllm serve adds ----------------------------------------------------
def rewrite_request(text: str) -> EnhanceRequest:
    t = PromptSet.load("v1").template("rewrite", "query")
    return EnhanceRequest(key=text, op="rewrite", side="query", text=text, image=None, system=t.system,
                          instruction=t.render(text), max_new_tokens=128)


def finished_statuses(cache: Path) -> set[str]:
    """The status of every item in a finished shard (a shard that needs no generation finishes regardless)."""
    return {json.loads(line)["enhanced"]["status"] for f in (cache / "shards").glob("*.jsonl")
            for line in f.read_text().splitlines()}


def test_preflight_names_each_base_url_and_its_cause(server, tmp_path) -> None:
    locked = ScriptedServer(api_key="sk-right").start()
    other_model = ScriptedServer(model="llava-hf/llava-1.5-7b-hf").start()
    no_v1 = server.url.removesuffix("/v1")
    try:
        with pytest.raises(BackendConfigError) as caught:
            make_backend(params(tmp_path, locked.url, no_v1, other_model.url, server.url))
    finally:
        locked.stop()
        other_model.stop()
    message = str(caught.value)
    assert f"{locked.url}/models: HTTP 401: Unauthorized (the server wants an API key: set enhance.openai.api_key_env" in message
    assert f"{no_v1}/models: HTTP 404: Not Found (wrong route: each enhance.openai.base_urls entry must end in /v1)" in message
    assert (f"{other_model.url}/models: the server does not serve model '{MODEL}' "
            f"(it serves ['llava-hf/llava-1.5-7b-hf'])") in message
    assert server.url + "/models" not in message  # the good one is not blamed
    assert not server.log and not locked.log and not other_model.log  # not one chat request
    assert sorted(row["path"] for row in server.models_log) == ["/models", "/v1/models"]  # one GET per base URL


# Each case: (break the setup, the cause the error must name, fix it, chat requests the failure may cost).
CONFIG_CASES = {
    "key not exported": (lambda srv, p, mp: (setattr(srv, "api_key", "sk-right"), p)[1],
                         "HTTP 401: Unauthorized ($RARE_TEST_KEY (enhance.openai.api_key_env) is not set in this "
                         "environment: export it)",
                         lambda srv, p, mp: (mp.setenv("RARE_TEST_KEY", "sk-right"), p)[1], 0),
    "wrong key": (lambda srv, p, mp: (setattr(srv, "api_key", "sk-right"), mp.setenv("RARE_TEST_KEY", "sk-old"), p)[2],
                  "HTTP 401: Unauthorized (the API key in $RARE_TEST_KEY is refused: is it the server's --api-key?)",
                  lambda srv, p, mp: (mp.setenv("RARE_TEST_KEY", "sk-right"), p)[1], 0),
    "base URL without /v1": (lambda srv, p, mp: with_urls(p, srv.url.removesuffix("/v1")),
                             "/models: HTTP 404: Not Found (wrong route",
                             lambda srv, p, mp: with_urls(p, srv.url), 0),
    "model not served": (lambda srv, p, mp: (setattr(srv, "model", "other/model"), p)[1],
                         f"does not serve model '{MODEL}' (it serves ['other/model'])",
                         lambda srv, p, mp: (setattr(srv, "model", MODEL), p)[1], 0),
    "401 on requests": (lambda srv, p, mp: (srv.faults.extend([script.UNAUTHORIZED] * 500), p)[1],
                        "/chat/completions: HTTP 401: Unauthorized",
                        lambda srv, p, mp: (srv.faults.clear(), p)[1], 4),
    "404 model on requests": (lambda srv, p, mp: (srv.faults.extend([script.NOT_FOUND] * 500), p)[1],
                              f"HTTP 404: The model `{MODEL}` does not exist. (enhance.model",
                              lambda srv, p, mp: (srv.faults.clear(), p)[1], 4),
    "gateway error page": (lambda srv, p, mp: (setattr(srv, "gateway_error", True), p)[1],
                           "got the same error (backend_error: HTTP 200 with an error body: upstream connect error",
                           lambda srv, p, mp: (setattr(srv, "gateway_error", False), p)[1], 64 * 4),
}


def with_urls(p: EnhanceParams, *urls: str) -> EnhanceParams:
    return p.model_copy(update={"openai": p.openai.model_copy(update={"base_urls": list(urls)})})


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_configuration_error_stores_nothing_and_the_fixed_rerun_generates_every_item(
        case, server, tiny_root, tmp_path, monkeypatch) -> None:
    brk, cause, fix, max_requests = CONFIG_CASES[case]
    monkeypatch.delenv("RARE_TEST_KEY", raising=False)
    base = params(tmp_path / "cache", server.url, api_key_env="RARE_TEST_KEY").model_copy(
        update={"shard_size": 64, "batch_size": 64})
    clean = run(base.model_copy(update={"cache_dir": str(tmp_path / "clean_cache")}), tiny_root, tmp_path / "clean")
    calls = len(server.log)
    broken = brk(server, base, monkeypatch)
    for _ in range(2):  # the same at once on a second try: nothing from the first was frozen
        with pytest.raises(BackendConfigError, match="nothing was marked failed|configuration: ") as caught:
            run(broken, tiny_root, tmp_path / "out")
        assert cause in str(caught.value)
        assert finished_statuses(tmp_path / "cache") <= {"skipped"}  # no item stored as failed, nor ok
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.failed").exists()
    assert len(server.log) - calls <= 2 * max_requests  # no request per item: the stage stops at once
    assert not server.answers()[calls:]
    fixed = run(fix(server, broken, monkeypatch), tiny_root, tmp_path / "out")
    assert fixed.summary["failed"] == 0
    assert fixed.runtime["generated"] == clean.runtime["generated"]  # every item generated by the rerun
    assert tree(tmp_path / "out") == tree(tmp_path / "clean")


def test_a_retry_goes_to_the_next_url_and_a_failing_one_rests() -> None:
    urls = BaseUrls(["http://a/v1/", "http://b/v1", "http://c/v1"])
    stop = threading.Event()
    assert urls.urls == ["http://a/v1", "http://b/v1", "http://c/v1"]
    assert [urls.pick(i, stop) for i in range(4)] == [0, 1, 2, 0]
    urls.rest(1, 0.3)
    assert urls.pick(1, stop) == 2  # the one after the URL that failed, skipping the resting one
    urls.rest(0, 0.3)
    urls.rest(2, 0.6)
    began = time.monotonic()
    assert urls.pick(2, stop) in (0, 1)  # all resting: wait for the first back
    assert 0.25 < time.monotonic() - began < 0.55
    urls.rest(0, 30)
    urls.rest(1, 30)
    urls.rest(2, 30)
    threading.Timer(0.1, stop.set).start()
    began = time.monotonic()
    with pytest.raises(_Stopped):  # a batch stopped by a configuration error does not wait out the back-off
        urls.pick(0, stop)
    assert time.monotonic() - began < 2


def test_one_live_and_one_dead_url_with_one_retry_succeed_every_time(server, tiny_root, tmp_path) -> None:
    dead = ScriptedServer().start()
    dead.stop()
    reference = None
    for trial in range(5):
        urls = (dead.url, server.url) if trial % 2 else (server.url, dead.url)
        p = params(tmp_path / f"cache{trial}", *urls, max_retries=1, max_concurrency=16).model_copy(
            update={"shard_size": 64, "batch_size": 64})
        outcome = run(p, tiny_root, tmp_path / f"out{trial}")
        assert outcome.summary["failed"] == 0
        reference = reference or tree(tmp_path / "out0")
        assert tree(tmp_path / f"out{trial}") == reference


def test_a_body_trickled_past_the_deadline_fails_and_is_retried(tmp_path) -> None:
    srv = ScriptedServer(trickle_s=4.0).start()
    try:
        srv.faults.append(script.TRICKLE)
        backend = make_backend(params(tmp_path, srv.url, timeout_s=1.0, max_retries=1))
        (result,) = backend.generate([rewrite_request("with a red hat")])
        first, second = srv.log
        assert first["did"] == script.TRICKLE and second["did"] == script.OK
        assert second["time"] - first["time"] < 2.0  # given up at the deadline, not after the 4 s trickle
        assert result.text.startswith(ANSWER_PREFIX) and result.requests == 2
        srv.faults.append(script.TRICKLE)
        strict = make_backend(params(tmp_path, srv.url, timeout_s=1.0, max_retries=0))
        with pytest.raises(BackendUnavailable, match=r"no whole answer within timeout_s 1 s \(\d+ bytes so far\)"):
            strict.generate([rewrite_request("with a blue hat")])
        srv.trickle_s = 0.4  # a slow body within the deadline is a good answer
        srv.faults.append(script.TRICKLE)
        (slow,) = backend.generate([rewrite_request("with a green hat")])
        assert slow.text.startswith(ANSWER_PREFIX) and slow.requests == 1
        backend.close()
        strict.close()
    finally:
        srv.stop()


def test_abort_length_and_null_content_are_item_failures_with_their_reason_and_usage(server, tmp_path) -> None:
    server.faults.extend([script.ABORT, script.NULL, script.LENGTH, script.OK])
    backend = make_backend(params(tmp_path, server.url, max_concurrency=1))  # in order: one fault per request
    texts = ["with a red hat", "with a blue hat", "with a green hat", "with a grey hat"]
    abort, null, length, ok = backend.generate([rewrite_request(t) for t in texts])
    backend.close()
    assert [row["did"] for row in server.log] == [script.ABORT, script.NULL, script.LENGTH, script.OK]  # no retry
    whole = script.answer_for(server.log[3]["payload"]).split()
    assert abort.text is None and abort.error == "finish_reason: abort after 1 tokens" and abort.finish_reason == "abort"
    assert null.text is None and null.error == "empty_output: the server answered content null (finish_reason stop)"
    assert (length.text, length.finish_reason, length.tokens_out) == ("scripted no-image", "length", 128)
    assert (ok.text, ok.finish_reason, ok.tokens_in, ok.tokens_out) == (" ".join(whole), "stop", 7, len(whole))
    assert (abort.tokens_in, abort.tokens_out, null.tokens_out) == (7, 1, 0)  # what a failed answer cost
    assert all(r.requests == 1 for r in (abort, null, length, ok))
    assert [judge(r, 128)[1] for r in (abort, null, length, ok)] == [
        "finish_reason: abort after 1 tokens", "empty_output: the server answered content null (finish_reason stop)",
        "over_length_cap: cut at 128 new tokens", None]
    # a cached text that ended any other way than stop or length is rejected too
    assert judge(EnhanceResult(text="half an answer", finish_reason="abort"), 128) == (None, "finish_reason: abort")


def test_an_abort_in_a_stage_is_one_failure_record_and_every_token_is_counted(server, tiny_root, tmp_path) -> None:
    server.faults.append(script.ABORT)
    outcome = run(params(tmp_path / "cache", server.url).model_copy(update={"max_failure_rate": 1.0}), tiny_root,
                  tmp_path / "out")
    failures = [json.loads(line) for line in (tmp_path / "out/enhance_failures.jsonl").read_text().splitlines()]
    assert [f["cause"].split(" after ")[0] for f in failures] == ["finish_reason: abort"]
    assert outcome.summary["failures_by_cause"] == {"finish_reason": 1}
    assert len(server.log) == outcome.runtime["generated"]  # not retried
    answered = [row for row in server.log if row["did"] in (script.OK, script.ABORT)]
    assert outcome.runtime["gen_tokens_in"] == 7 * len(answered)


def test_retry_after_is_honoured_up_to_the_cap(server, tmp_path) -> None:
    server.faults.append(script.RETRY_AFTER)
    server.retry_after = "1"
    backend = make_backend(params(tmp_path, server.url, max_retries=1, backoff_s=0.0))
    (result,) = backend.generate([rewrite_request("with a red hat")])
    first, second = server.log
    assert result.text.startswith(ANSWER_PREFIX) and 1.0 <= second["time"] - first["time"] < 1.8
    server.faults.append(script.RETRY_AFTER)
    server.retry_after = "3600"
    capped = make_backend(params(tmp_path, server.url, max_retries=1, backoff_s=0.0, max_retry_after_s=0.3))
    (result,) = capped.generate([rewrite_request("with a blue hat")])
    first, second = server.log[2:]
    assert result.text.startswith(ANSWER_PREFIX) and 0.3 <= second["time"] - first["time"] < 1.0
    backend.close()
    capped.close()


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("2", 60) == 2.0 and retry_after("120", 60) == 60 and retry_after("-5", 60) == 0
    assert 8 < retry_after(email.utils.formatdate(time.time() + 10, usegmt=True), 60) <= 10
    assert retry_after(email.utils.formatdate(time.time() - 10, usegmt=True), 60) == 0
    assert retry_after(None, 60) is None and retry_after("soon", 60) is None and retry_after("nan", 60) is None


def test_the_failure_line_names_the_http_status_and_the_servers_message(server, tiny_root, tmp_path) -> None:
    # every other request is a context-length 400: per item (a batch is never all errors), and over the cap
    server.faults.extend([script.BAD_REQUEST, script.OK] * 100)
    p = params(tmp_path / "cache", server.url, max_concurrency=1).model_copy(update={"max_failure_rate": 0.1})
    outcome = run(p, tiny_root, tmp_path / "out")
    failed = outcome.summary["failed"]
    assert failed > 5 and outcome.summary["failures_by_cause"] == {"backend_error": failed}
    with pytest.raises(EnhanceFailure) as caught:
        check_failures(outcome)
    assert f"most often ({failed} of {failed}): backend_error: HTTP 400: {script.CONTEXT_LENGTH}" in str(caught.value)
    assert samples(outcome) == []  # the failed run's folder holds only its reports: MLflow's samples table is empty


def test_a_configuration_error_is_never_retried_by_prefect_but_an_unavailable_server_is() -> None:
    class State:
        def __init__(self, exc: Exception):
            self.exc = exc

        def result(self) -> None:
            raise self.exc

    assert stageflow.transient(None, None, State(BackendConfigError("openai configuration: HTTP 401", {}))) is False
    assert stageflow.transient(None, None, State(BackendUnavailable("openai server unavailable", {}))) is True


def test_one_error_for_a_whole_batch_is_a_configuration_error_but_not_for_a_few_or_a_mixed_batch(server, tmp_path) -> None:
    backend = make_backend(params(tmp_path, server.url, max_retries=0))
    hats = [f"with a {color} hat" for color in ("red", "blue", "green", "grey", "pink")]
    server.gateway_error = True
    few = backend.generate([rewrite_request(t) for t in hats[:UNIFORM_MIN_REQUESTS - 1]])  # could be the items
    assert {r.error for r in few} == {"backend_error: HTTP 200 with an error body: upstream connect error or "
                                      "disconnect/reset before headers"}
    with pytest.raises(BackendConfigError, match=f"every one of the {UNIFORM_MIN_REQUESTS} requests of a batch got "
                                                 r"the same error \(backend_error: HTTP 200 with an error body"):
        backend.generate([rewrite_request(t) for t in hats[:UNIFORM_MIN_REQUESTS]])
    server.gateway_error = False
    server.faults.extend([script.BAD_REQUEST] * 4)
    mixed = backend.generate([rewrite_request(t) for t in hats])  # four 400s and one answer: per item
    backend.close()
    assert sorted(r.text is None for r in mixed) == [False, True, True, True, True]
