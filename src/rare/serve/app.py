"""The HTTP layer: the JSON API (documented at /docs and /redoc, offline), the search page and its static files.

Handlers are plain ``def`` (FastAPI runs them in its thread pool, so a slow one never blocks the event
loop), except ``/search``: its blocking part (the upload, decoding it, the enhancement backend) runs in the
thread pool, and the wait for its batch is awaited, so no thread is held while the models run and the
response is checked and encoded on the loop without another trip through the pool. Every refusal answers
``{"detail": "<field>: <cause>", "field": "<field>"}`` with a 4xx.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rare.data.images import ImageLoadError, open_image
from rare.serve.service import BadInput, CandidateOut, InfoOut, Pending, QueryImage, QueryOut, SearchOut, Service

STATIC = Path(__file__).parent / "static"
_CHUNK = 1 << 20
KEEPALIVE_REQUESTS = 20  # responses per keep-alive connection before the server closes it


class KeepAliveCap:
    """Closes a keep-alive connection after ``max_requests`` responses (``Connection: close``), as nginx's
    ``keepalive_requests`` does, so that long-lived clients spread over the worker processes.

    ``rare serve --workers N`` runs uvicorn's workers on one shared socket: a connection stays with the worker
    that accepted it. With 8 keep-alive clients on 2 workers the split came out 5/3 to 6/2, and the busier
    worker, which one interpreter lock holds to about one core, set everyone's latency while the other idled.
    A client that reconnects is accepted by whichever worker gets to it first, mostly the less busy one; HTTP
    clients reconnect on their own (browsers, httpx, requests, http.client). A connection is known by its
    client address; the table forgets the oldest beyond ``_TRACKED`` connections.
    """

    _TRACKED = 4096

    def __init__(self, app: ASGIApp, max_requests: int = KEEPALIVE_REQUESTS):
        self.app, self.max_requests = app, max_requests
        self._served: OrderedDict[tuple[str, int], int] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or client is None:
            await self.app(scope, receive, send)
            return
        key = (client[0], client[1])
        served = self._served.pop(key, 0) + 1
        if served < self.max_requests:
            self._served[key] = served
            if len(self._served) > self._TRACKED:
                self._served.popitem(last=False)
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


def _refusal(field: str, cause: str, status: int) -> JSONResponse:
    return JSONResponse({"detail": f"{field}: {cause}", "field": field}, status_code=status)


@contextmanager
def _upload(upload: UploadFile | None, service: Service) -> Iterator[QueryImage | None]:
    """Read at most the byte cap, spool to a temp file (the backend takes a path; nothing lands in the data),
    and decode it with the project's safe loader under the pixel cap."""
    if upload is None or not upload.filename:
        yield None
        return
    cap = service.limits.max_upload_bytes
    with tempfile.NamedTemporaryFile(prefix="rare-serve-", suffix=Path(upload.filename).suffix[:8]) as tmp:
        size = 0
        while chunk := upload.file.read(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise BadInput("image", f"upload is over the size cap of {cap} bytes", 413)
            tmp.write(chunk)
        tmp.flush()
        if size == 0:
            raise BadInput("image", "the uploaded file is empty")
        try:
            image = open_image(tmp.name, service.limits.max_pixels)
        except ImageLoadError as exc:
            cause = str(exc).removeprefix(f"{tmp.name}: ")
            raise BadInput("image", f"{upload.filename}: {cause}") from None
        yield QueryImage(image, Path(tmp.name))


def create_app(service: Service) -> FastAPI:
    app = FastAPIOffline(title="rare serve",
                         description="Search trained rare indexes (the evaluation's cached candidate embeddings, "
                                     "exact search), one or two variants side by side, with query enhancement on "
                                     "the fly.")

    @app.exception_handler(BadInput)
    def _bad_input(_: Request, exc: BadInput) -> JSONResponse:
        return _refusal(exc.field, exc.cause, exc.status)

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        return _refusal(str(err["loc"][-1]), err["msg"], 422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/info")
    def info() -> InfoOut:
        """Served variants, tasks (with the modalities they fix), pools and the request caps."""
        return service.info()

    @app.post("/search")
    async def search(
        text: Annotated[str, Form(description="Query text (free queries).")] = "",
        task: Annotated[str, Form(description="Dataset-task, e.g. glyphcaps_task0: sets the instruction, the "
                                              "query and candidate modality, and the local pool.")] = "",
        qid: Annotated[str, Form(description="A benchmark test query instead of text/image (its positives "
                                             "are marked).")] = "",
        k: Annotated[int, Form(description="Results per variant.")] = 10,
        pool: Annotated[str, Form(description="local (the task's pool) or global (every candidate).")] = "local",
        variants: Annotated[str, Form(description="Comma-separated variants; empty: every served one.")] = "",
        image: Annotated[UploadFile | None, File(description="Query image (capped in bytes and pixels).")] = None,
    ) -> SearchOut:
        """Rank candidates for one query with each variant: did, score, modality, original and enhanced text."""
        names = [v.strip() for v in variants.split(",") if v.strip()]

        def submit() -> Pending:
            with _upload(image, service) as query_image:
                return service.submit(text=text, image=query_image, task=task, qid=qid, k=k, pool=pool,
                                      variants=names)

        return await (await run_in_threadpool(submit)).done()

    @app.get("/candidates/{did}")
    def candidate(did: str) -> CandidateOut:
        return service.candidate(did)

    @app.get("/images/{did}", response_class=FileResponse)
    def candidate_image(did: str) -> FileResponse:
        """The candidate's own image file under the data root."""
        return FileResponse(service.candidate_image(did))

    @app.get("/queries/random")
    def random_query(dataset: Annotated[str, Query(description="Dataset name; empty: any.")] = "",
                     seed: Annotated[int | None, Query(description="Fixes the draw.")] = None) -> QueryOut:
        """A benchmark test query with its positives, to search by qid."""
        return service.random_query(dataset, seed)

    @app.get("/queries/{qid}/image", response_class=FileResponse)
    def query_image(qid: str) -> FileResponse:
        return FileResponse(service.query_image(qid))

    app.add_middleware(KeepAliveCap)
    return app

