"""The real-M-BEIR profile (``profile: mbeir``) wired end to end, and the pipeline's Prefect deployment.

The params are the repo's params.yaml with ``profile: mbeir``, changed only where a user with
weights on a small CPU machine would change them: the M-BEIR root, the two model paths, GPU-only
settings and sizes. Everything else (the openai backend on Ray CPU workers, CLIP family, UniIR's
recipe, union training file, DDP, bf16) is the profile's own. The stages run as users run them: ``rare``
commands with ``--params``; training in a subprocess, because Lightning's DDP re-runs the command for rank 1.

The VLM server is the scripted OpenAI-protocol server of tests/fixtures/openai_server.py on
127.0.0.1, standing where ``vllm serve`` stands on a real run: the Ray actors reach it over HTTP.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from rare.config import load_all, load_section, raw_params
from rare.data.layout import POINTER_FILE, MBEIRRoot
from rare.enhance.prompts import PromptSet
from rare.model import load_retriever
from rare.repro import dvc_command
from tests.fixtures.openai_server import ANSWER_PREFIX, ScriptedServer
from tests.fixtures.profile import make_tiny_clip
from tests.fixtures.tiny_root import make_tiny_root

REPO = Path(__file__).resolve().parents[1]
TINY_TASKS = {"mscoco_task0", "mscoco_task3", "webqa_task1", "webqa_task2", "nights_task4", "oven_task6",
              "infoseek_task6", "cirr_task7", "oven_task8"}
CROSS = "6:999001"  # an InfoSeek doc that an OVEN test query lists as a positive


def tiny_machine(root: str, server: str, clip: str, cache: str) -> dict[str, Any]:
    """What changes in ``profiles.mbeir`` for tiny local weights on 2 CPU cores, and nothing more."""
    return {
        "data": {"mbeir_root": root},
        "enhance": {"shard_size": 16, "batch_size": 8, "openai": {"base_urls": [server]}, "item_cache_dir": cache,
                    "ray": {"num_workers": 2, "num_cpus_per_worker": 1}},
        "train": {"model": {"clip": {"pretrained": clip}}, "batch_size": 4, "epochs": 2, "val_every_n_steps": 4,
                  "checkpoint_every_n_steps": 4, "num_workers": 0, "accelerator": "cpu", "devices": 2},
        # top_k covers the whole tiny global pool (55 candidates): every reachable candidate is in the run files.
        "evaluate": {"num_workers": 0, "top_k": 64},
    }


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_profile_params(path: Path, root: str, server: str, clip: str, cache: str) -> Path:
    doc = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    doc["profile"] = "mbeir"
    doc["profiles"]["mbeir"] = _merge(doc["profiles"]["mbeir"], tiny_machine(root, server, clip, cache))
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: obj}


def test_the_tiny_params_are_the_mbeir_profile_with_paths_gpu_settings_and_sizes_changed(tmp_path: Path) -> None:
    real = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    (tmp_path / "real.yaml").write_text(yaml.safe_dump({**real, "profile": "mbeir"}), encoding="utf-8")
    tiny = write_profile_params(tmp_path / "tiny.yaml", "/tiny/M-BEIR", "http://127.0.0.1:9/v1", "/w/clip",
                                "/local/items")
    before, after = _flat(raw_params(tmp_path / "real.yaml")), _flat(raw_params(tiny))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {
        "data.mbeir_root", "enhance.shard_size", "enhance.batch_size", "enhance.openai.base_urls",
        "enhance.item_cache_dir", "enhance.ray.num_workers", "enhance.ray.num_cpus_per_worker",
        "train.model.clip.pretrained", "train.batch_size", "train.epochs", "train.val_every_n_steps",
        "train.checkpoint_every_n_steps", "train.num_workers", "train.accelerator", "train.devices",
        "evaluate.num_workers", "evaluate.top_k",
    }
    sections = load_all(tiny)  # every section validates
    data, enhance, train = sections["data"], sections["enhance"], sections["train"]
    assert (data.source, enhance.backend, enhance.ray.enabled) == ("mbeir", "openai", True)
    assert (enhance.model, enhance.ray.num_gpus_per_worker, enhance.max_new_tokens.corpus) == (
        "Qwen/Qwen3-VL-8B-Instruct", 0, 512)
    assert (train.model.family, train.model.max_text_len, train.train_file) == ("clip", 77, "union")
    assert (train.strategy, train.precision, train.optim.lr, train.optim.schedule) == ("ddp", "bf16-mixed", 1e-5,
                                                                                        "cosine")


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """One temporary Prefect server for this module; its URL is handed to subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _check_mirror(root: Path, out: Path, dirs: tuple[str, ...]) -> list[dict]:
    """Every input file mirrored at the same relative path, each record verbatim plus its 'enhanced' block."""
    blocks = []
    inputs = sorted(p for d in dirs for p in (root / d).glob("*.jsonl"))
    assert inputs
    for src in inputs:
        mirrored = _records(out / src.relative_to(root))
        originals = _records(src)
        assert [{k: v for k, v in r.items() if k != "enhanced"} for r in mirrored] == originals, src
        blocks += [{**r["enhanced"], "modality": r.get("modality") or r.get("query_modality")} for r in mirrored]
    return blocks


def _add_decoy(root: Path) -> None:
    """MSCOCO's val pools get a candidate its ``_test_`` pools lack (the test split must search the latter)."""
    for task in (0, 3):
        pool = root / f"cand_pool/local/mbeir_mscoco_task{task}_cand_pool.jsonl"
        rows = _records(pool)
        pool.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {**rows[0], "did": f"9:88800{task + 1}"}]),
                        encoding="utf-8")


def _run_file(path: Path) -> dict[str, list[str]]:
    ranked: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        qid, _, did, *_ = line.split()
        ranked.setdefault(qid, []).append(did)
    return ranked


@pytest.mark.slow
def test_mbeir_profile_runs_end_to_end_on_a_tiny_root(prefect_api: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from rare.cli import app

    root = make_tiny_root(tmp_path / "M-BEIR")
    _add_decoy(root)
    clip = make_tiny_clip(tmp_path / "weights/tiny-clip")
    server = ScriptedServer().start()
    monkeypatch.delenv("RARE_PARENT_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # the project: data/, models/, eval/, report/, .cache/ and mlruns/ land here
    params = write_profile_params(tmp_path / "params.yaml", str(root), server.url, str(clip), str(tmp_path / "items"))

    def rare(*args: str) -> None:
        result = CliRunner().invoke(app, [*args, "--params", str(params)])
        assert result.exit_code == 0, result.output

    # data: a pointer to the external root, never a copy
    rare("data", "data/raw")
    assert [p.name for p in Path("data/raw").iterdir()] == [POINTER_FILE]
    assert MBEIRRoot.open("data/raw").path == root.resolve()

    # enhancement: the openai backend on 2 local Ray workers, against the server
    enhanced = {"corpus": Path("data/enhanced/corpus"), "queries": Path("data/enhanced/queries")}
    try:
        for side in enhanced:
            rare("enhance", side, "--data", "data/raw", "--out", str(enhanced[side]), "--metrics",
                 f"metrics/enhance_{side}.json")
    finally:
        server.stop()
    templates = PromptSet.load("v1").templates
    for row in server.answers():  # chat messages for the server's template, with the op's instruction and image
        payload = row["payload"]
        system, user = payload["messages"]
        (op,) = [name for name, t in templates.items()
                 if system["content"] == t.system and user["content"][-1]["text"].startswith(t.user.split("{text}")[0])]
        has_image = [part["type"] for part in user["content"]].count("image_url")
        assert has_image == (op != "rewrite")
        side = "corpus" if op in ("caption_corpus", "refine") else "query"
        assert (payload["model"], payload["temperature"], payload["seed"], payload["max_tokens"]) == (
            "Qwen/Qwen3-VL-8B-Instruct", 0.0, 0, 512 if side == "corpus" else 128)
    assert (tmp_path / "items/cache.sqlite").is_file()  # the item cache where the node-local setting puts it
    ops = {}
    for side, dirs in (("corpus", ("cand_pool/local", "cand_pool/global")),
                       ("queries", ("query/train", "query/val", "query/test", "query/union_train"))):
        blocks = _check_mirror(root, enhanced[side], dirs)
        assert {(b["backend"], b["model"], b["prompt_version"]) for b in blocks} == {
            ("openai", "Qwen/Qwen3-VL-8B-Instruct", "v1")}
        for b in blocks:
            if b["op"] == "none":
                assert b["status"] == "skipped" and b["modality"] == "text"
            else:
                assert b["status"] == "ok" and b["txt"].startswith(ANSWER_PREFIX)
        ops[side] = {b["op"] for b in blocks}
        assert json.loads(Path(f"metrics/enhance_{side}.json").read_text()) == {"failure_rate": 0.0}
        summary = json.loads(Path(f"metrics/runtime/enhance_{side}.json").read_text())
        assert summary["failed"] == 0 and summary["ok"] == sum(b["status"] == "ok" for b in blocks)
    assert ops == {"corpus": {"caption", "refine", "none"}, "queries": {"caption", "resolve", "rewrite", "none"}}

    # training: CLIP family, DDP over 2 CPU processes, bf16, union training file, both sides enhanced
    done = subprocess.run(
        [sys.executable, "-m", "rare", "train", "both", "--data", "data/raw", "--corpus-enhanced",
         str(enhanced["corpus"]), "--queries-enhanced", str(enhanced["queries"]), "--out", "models/both",
         "--metrics", "metrics/train_both.json", "--params", str(params)],
        env={**os.environ, "PREFECT_API_URL": prefect_api}, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    spec = json.loads(Path("models/both/retriever.json").read_text())
    assert spec["family"] == "clip" and json.loads(Path("models/both/towers/clip/config.json").read_text())[
        "model_type"] == "clip"
    retriever = load_retriever("models/both")
    meta = retriever.meta
    assert (meta.variant, meta.train_file, meta.global_batch) == ("both", "union", 8)  # 4 per rank x 2
    assert meta.global_steps == 8 and [step for step, _ in meta.val_loss] == [0, 4, 8]  # 36 queries, 2 epochs
    assert meta.inputs.corpus_enhanced == str(enhanced["corpus"])

    # evaluation: the 9 dataset-tasks in their local pools (MSCOCO's _test_ ones) and in the global pool
    rare("evaluate", "both", "--model", "models/both", "--inputs", "both", "--data", "data/raw", "--out", "eval/both",
         "--corpus-enhanced", str(enhanced["corpus"]), "--queries-enhanced", str(enhanced["queries"]))
    metrics = json.loads(Path("eval/both/metrics.json").read_text())
    assert set(metrics["score"]) == {"local", "global"}
    assert set(metrics["local"]) == set(metrics["global"]) == TINY_TASKS
    for task in ("mscoco_task0", "mscoco_task3"):
        test_pool = {r["did"] for r in _records(root / f"cand_pool/local/mbeir_{task}_test_cand_pool.jsonl")}
        for ranked in _run_file(Path(f"eval/both/runs/local/{task}.trec")).values():
            assert set(ranked) == test_pool  # the whole _test_ pool, never the val pool's extra candidate
    oven_local = _run_file(Path("eval/both/runs/local/oven_task6.trec"))
    oven_global = _run_file(Path("eval/both/runs/global/oven_task6.trec"))
    qrels = (root / "qrels/test/mbeir_oven_task6_test_qrels.txt").read_text().splitlines()
    (cross_qid,) = [line.split()[0] for line in qrels if line.split()[2] == CROSS]
    assert CROSS not in oven_local[cross_qid] and CROSS in oven_global[cross_qid]
    assert len(oven_global[cross_qid]) == len(_records(root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"))

    # report, and one MLflow parent run holding every stage
    rare("report", "--evals", "eval", "--out", "report", "--data", "data/raw", "--corpus-enhanced",
         str(enhanced["corpus"]), "--queries-enhanced", str(enhanced["queries"]))
    assert "both (trained)" in Path("report/report.md").read_text()
    client = MlflowClient(load_section("tracking", params).tracking_uri)
    stages = {}
    for run in client.search_runs([client.get_experiment_by_name("rare").experiment_id]):
        if run.data.tags.get("rare.role") == "stage":
            stages[(run.data.tags["rare.stage"], run.info.run_name)] = run
    assert set(stages) == {("enhance", "enhance-corpus"), ("enhance", "enhance-queries"), ("train", "train-both"),
                           ("evaluate", "eval-both"), ("report", "report"), ("data", "data")}
    assert {run.info.status for run in stages.values()} == {"FINISHED"}
    trained = stages[("train", "train-both")].data.params
    assert (trained["train.model.family"], trained["train.strategy"], trained["train.precision"]) == (
        "clip", "ddp", "bf16-mixed")
    assert len({run.data.tags["mlflow.parentRunId"] for run in stages.values()}) == 1


def test_the_pipeline_deployment_is_built_from_a_loadable_entrypoint() -> None:
    from prefect.flows import load_flow_from_entrypoint

    from flows.pipeline import deployment

    built = deployment(cron="0 3 * * *")
    assert (built.name, built.entrypoint, built.parameters) == ("rare-pipeline", "flows.pipeline.pipeline",
                                                                {"force": False})
    assert [s.schedule.cron for s in built.schedules] == ["0 3 * * *"]
    flow = load_flow_from_entrypoint(built.entrypoint)  # what the process running a flow run does
    assert flow.name == "rare-pipeline" and set(flow.parameters.properties) == {"force", "stages"}


@pytest.mark.slow
def test_served_deployment_reruns_the_dvc_stages_when_triggered(prefect_api: str, tmp_path: Path) -> None:
    """`python -m flows.pipeline --serve` registers the deployment with its schedule; a triggered run loads
    the flow from the entrypoint in a fresh process and runs `dvc repro` stage by stage in the project."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(dvc_command("init", "--no-scm", "-q"), cwd=project, check=True)
    (project / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo rerun > out.txt\n    outs: [out.txt]\n")
    (project / "params.yaml").write_text("tracking: {enabled: false}\n")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        served = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--serve", "--cron", "0 3 * * *"],
                                  cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 90
            while True:
                assert served.poll() is None, log.read_text()[-3000:]
                try:
                    registered = client.read_deployment_by_name("rare-pipeline/rare-pipeline")
                    break
                except ObjectNotFound:
                    assert time.monotonic() < deadline, "the deployment was never registered\n" + log.read_text()
                    time.sleep(1)
            assert (registered.entrypoint, registered.parameters) == ("flows.pipeline.pipeline", {"force": False})
            assert [s.schedule.cron for s in registered.schedules] == ["0 3 * * *"]

            run = run_deployment("rare-pipeline/rare-pipeline", parameters={"stages": ["hello"]}, timeout=0)
            deadline = time.monotonic() + 150
            while not (state := client.read_flow_run(run.id).state).is_final():
                assert served.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(1)
        assert state.is_completed(), f"{state.message}\n{log.read_text()[-3000:]}"
        assert (project / "out.txt").read_text() == "rerun\n"
    finally:
        served.terminate()
        try:
            served.wait(timeout=30)
        except subprocess.TimeoutExpired:
            served.kill()
            served.wait()
