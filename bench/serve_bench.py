"""`rare serve` under load on the default index: request latency against the bare search (issue 13).

The server is `python -m rare serve --workers 2` (variants none and both, side by side as the page asks) on
127.0.0.1, started here in its own process on the index `make run` leaves in the project folder
(data/, models/, .cache/rare/embeddings). 8 client threads in this process, each with its own keep-alive
connection (plain http.client), send 2,000 requests of each kind (quick: 200) and time each one:
- text queries: the test queries of the text-only tasks, sent as free text with their task;
- image queries: the test queries of the image-only tasks, their image uploaded as a file.
Every request is `POST /search` with k=10 on the task's local pool, both variants answering.

In this process the same queries go through the same service without HTTP, one at a time: the bare
exact search (both variants' `Pool.search` on ready query vectors) and the whole query (enhance, embed,
search, build the response), so the serving overhead shows as a ratio.

Rows (name, value, reference, ratio, verdict):
- text p50 against 30 ms and p99 against 100 ms, image p50 against 60 ms: target <= 1.0;
- failed requests against the requests sent: target 0;
- request p50 against the bare search p50 and against the in-process query p50 (info);
- CPU time per request of the client threads against the server process's (info): both share the 2 cores;
- the serving overhead ratio: the server's CPU per request against the CPU per request of the bare
  in-process forward pass plus exact search of the same batches (both variants, batches of the mean size
  the server reported): target <= 1.3;
- the busiest worker's share of the workers' CPU against an even split (info): a keep-alive connection
  stays with the worker that accepted it until the server closes it (``rare.serve.app.KeepAliveCap``).

Run: `python bench/serve_bench.py [--quick]` after `make run` (not in `python -m bench`: it needs the
trained index, which a fresh clone does not have). `--index DIR` serves another folder laid out the same way
(models/, data/raw, data/enhanced/{corpus,queries}, params.yaml), e.g. tests/fixtures/serve.py's tiny index
(`--tiny DIR` builds that one there first).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/serve_bench.py` from anywhere

from rare import runtime  # noqa: E402

runtime.configure()

from bench.common import print_rows, row  # noqa: E402

CLIENTS, K, VARIANTS = 8, 10, ("none", "both")
WORKERS = 2  # server processes, one per core, as `make serve` runs it
Request = dict[str, Any]  # form fields, plus "image" -> (filename, bytes) and "path" (its file) for uploads


def _requests(service: Any, modality: str, n: int) -> list[Request]:
    """n requests cycling over the test queries whose task takes ``modality`` queries."""
    from rare.mbeir import TASKS

    out = []
    for qid, task in service.catalog.task_of.items():
        dt = service.tasks[task]
        if TASKS[dt.task_id][0] != modality:
            continue
        q = service.catalog.queries[qid]
        req: Request = {"task": task, "k": str(K), "pool": "local"}
        if modality == "text":
            req["text"] = q.txt
        else:
            req["path"] = service.catalog.root.path / q.img_path
            req["image"] = (req["path"].name, req["path"].read_bytes())
        out.append(req)
    if not out:
        raise SystemExit(f"no {modality} test queries in the served index")
    return [out[i % len(out)] for i in range(n)]


def _percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _multipart(req: Request) -> tuple[bytes, str]:
    """The request's form fields and upload as one multipart/form-data body, and its content type."""
    boundary = "rare-bench-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in req.items() if k not in ("image", "path")]
    if "image" in req:
        name, data = req["image"]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def load(url: str, requests: list[Request]) -> tuple[list[float], int, list[int]]:
    """Latencies (ms) of every request sent by CLIENTS threads, how many did not answer 200, and the batch
    size the server embedded each answered one in.

    Each thread holds one keep-alive connection and speaks plain ``http.client``: the clients run on the
    same 2 cores as the server, and httpx cost about three times its CPU per request (0.9 ms against 0.3). Each
    request's body is encoded and its JSON answer parsed inside the timed span, as a real client would.
    """
    latencies: list[float] = []
    batches: list[int] = []
    errors = [0]
    lock = threading.Lock()
    shares = [requests[i::CLIENTS] for i in range(CLIENTS)]
    host, port = url.removeprefix("http://").split(":")

    def client(share: list[Request]) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            for req in share:
                t0 = time.perf_counter()
                body, content_type = _multipart(req)
                conn.request("POST", "/search", body, {"Content-Type": content_type})
                r = conn.getresponse()
                body = json.loads(r.read())
                ok = r.status == 200 and bool(body["results"])
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(dt)
                    errors[0] += not ok
                    if ok:
                        batches.append(body["results"][0]["batch"])
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], batches


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live children (the server's workers), from Linux
    /proc, to split the 2 cores between server and clients."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + sum(map(cpu_seconds, _children(pid)))


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def worker_cpu(pid: int) -> list[float]:
    """CPU seconds so far of each worker process of the server (its direct children)."""
    return [cpu_seconds(c) for c in _children(pid)]


def bare(service: Any, requests: list[Request]) -> tuple[list[float], list[float]]:
    """Per request, in this process: both variants' exact search alone, and the whole query without HTTP."""
    from rare.data.images import open_image
    from rare.model import EncodeInput
    from rare.serve.service import QueryImage

    search_ms, query_ms = [], []
    variants = list(service.variants.values())
    for req in requests:
        image = QueryImage(open_image(req["path"]), req["path"]) if "path" in req else None
        vecs = [v.embed([EncodeInput(req.get("text", ""), image.image if image else None)]) for v in variants]
        t0 = time.perf_counter()
        for v, vec in zip(variants, vecs):
            v.pool("local", req["task"]).search(vec, K)
        search_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        service.search(text=req.get("text", ""), image=image, task=req["task"], k=K, pool="local")
        query_ms.append((time.perf_counter() - t0) * 1000)
    return search_ms, query_ms


def bare_batched_cpu(service: Any, requests: list[Request], batch: int) -> float:
    """CPU ms per request of the bare work in this process: both variants' forward pass and exact search on
    batches of ``batch`` requests (images decoded beforehand), as one batcher thread would run them."""
    from collections import defaultdict

    from rare.data.images import open_image
    from rare.model import EncodeInput

    items = [EncodeInput(r.get("text", ""), open_image(r["path"]) if "path" in r else None) for r in requests]
    c0 = time.process_time()
    for a in range(0, len(items), batch):
        rows: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(requests[a:a + batch]):
            rows[r["task"]].append(i)
        for v in service.variants.values():
            vecs = v.embed(items[a:a + batch])
            for task, js in rows.items():
                v.pool("local", task).search(vecs[js], K)
    return (time.process_time() - c0) * 1000 / len(items)


def start_server(port: int, index: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rare", "serve", "--port", str(port), "--workers", str(WORKERS)]
    if index != ROOT:
        cmd += ["--models", str(index / "models"), "--data", str(index / "data/raw"),
                "--corpus-enhanced", str(index / "data/enhanced/corpus"),
                "--queries-enhanced", str(index / "data/enhanced/queries"), "--params", str(index / "params.yaml")]
    return subprocess.Popen(cmd, cwd=ROOT)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"`rare serve` exited with {proc.returncode} (run `make run` first?)")
        try:
            if httpx.get(url + "/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("`rare serve` did not answer in time")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(quick: bool = False, index: Path = ROOT) -> list[dict[str, Any]]:
    import torch
    from threadpoolctl import threadpool_limits

    from rare.serve import build_service

    torch.set_num_threads(1)  # as `rare serve` runs its forward pass (--torch-threads)
    threadpool_limits(1)      # and its search's BLAS
    n = 200 if quick else 2000
    service = build_service(list(VARIANTS), index / "models", index / "data/raw", index / "data/enhanced/corpus",
                            index / "data/enhanced/queries", index / "params.yaml")
    work = {m: _requests(service, m, n) for m in ("text", "image")}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, index)
    try:
        wait_ready(url, proc)
        load(url, work["text"][:100] + work["image"][:100])  # warm-up: kernels, allocator, connections
        measured: dict[str, tuple[list[float], int, list[int]]] = {}
        cpu: dict[str, tuple[float, float]] = {}  # CPU ms per request: (client threads, server process)
        busiest: dict[str, float] = {}  # the busiest worker's share of the workers' CPU
        for m, reqs in work.items():
            c0, s0, w0 = time.process_time(), cpu_seconds(proc.pid), worker_cpu(proc.pid)
            measured[m] = load(url, reqs)
            cpu[m] = ((time.process_time() - c0) * 1000 / n, (cpu_seconds(proc.pid) - s0) * 1000 / n)
            spent = [b - a for a, b in zip(w0, worker_cpu(proc.pid))]
            busiest[m] = max(spent) / sum(spent) if sum(spent) else float("nan")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rows = []
    targets: dict[str, list[tuple[str, Callable[[tuple[float, float]], float], float]]] = {
        "text": [("p50", lambda p: p[0], 30.0), ("p99", lambda p: p[1], 100.0)],
        "image": [("p50", lambda p: p[0], 60.0), ("p99", lambda p: p[1], float("nan"))],
    }
    sample = max(50, n // 10)
    for modality, (latencies, errors, batches) in measured.items():
        pct = _percentiles(latencies)
        mean_batch = max(1, round(float(np.mean(batches)))) if batches else 1
        search_ms, query_ms = bare(service, work[modality][:sample])
        label = f"{modality} queries, {CLIENTS} clients, {n} requests, {' vs '.join(VARIANTS)}, k={K}, local pool"
        for stat, pick, target in targets[modality]:
            if target == target:  # not NaN
                rows.append(row(f"{label}: request {stat} (ms) vs {target:g} ms", pick(pct), target, "ms", 1.0))
            else:
                rows.append(row(f"  {modality} request {stat} (ms) vs its p50", pick(pct), pct[0], "ms", None))
        rows.append(row(f"  {modality} failed requests, of {n}", errors, n, "req", 0.0))
        rows.append(row(f"  {modality} request p50 vs the bare exact search p50 ({np.median(search_ms):.2f} ms, "
                        "both variants, in process)", pct[0], float(np.median(search_ms)), "ms", None))
        rows.append(row(f"  {modality} request p50 vs the whole query in process, no HTTP, one at a time",
                        pct[0], float(np.median(query_ms)), "ms", None))
        rows.append(row(f"  {modality} CPU per request (ms): the {CLIENTS} client threads vs the server process",
                        cpu[modality][0], cpu[modality][1], "ms", None))
        bare_cpu = bare_batched_cpu(service, work[modality][:max(sample, 8 * mean_batch)], mean_batch)
        rows.append(row(f"  {modality} serving overhead: server CPU per request vs the bare in-process forward + "
                        f"search (batches of {mean_batch}, the server's mean)", cpu[modality][1], bare_cpu, "ms", 1.3))
        rows.append(row(f"  {modality} the busiest of the {WORKERS} workers' share of their CPU vs an even split",
                        busiest[modality], 1 / WORKERS, "", None))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 requests of each kind instead of 2,000")
    ap.add_argument("--index", type=Path, default=ROOT, help="the folder holding the served index")
    ap.add_argument("--tiny", action="store_true", help="build tests/fixtures/serve.py's tiny index in --index first")
    args = ap.parse_args()
    if args.tiny:
        from tests.fixtures.serve import make_served_index

        make_served_index(args.index)
    print_rows(run(quick=args.quick, index=args.index))


if __name__ == "__main__":
    main()
