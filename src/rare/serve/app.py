"""The HTTP layer: the JSON API (documented at /docs and /redoc, offline), the search page and its static files.

Handlers are plain ``def`` (FastAPI runs them in its thread pool, so a slow one never blocks the event
loop), except ``/search``: its blocking part (the upload, decoding it, the enhancement backend) runs in the
thread pool, and the wait for its batch is awaited, so no thread is held while the models run and the
response is checked and encoded on the loop without another trip through the pool. Every refusal answers
``{"detail": "<field>: <cause>", "field": "<field>"}`` with a 4xx, and never names a server-side path.
Request headers and bodies are bounded (``RequestLimits``: 431, 413) before any handler runs.
"""

from __future__ import annotations

import base64
import binascii
import re
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rare.data.images import ImageLoadError, open_image
from rare.serve.service import BadInput, CandidateOut, InfoOut, Pending, QueryImage, QueryOut, SearchOut, Service

STATIC = Path(__file__).parent / "static"
_CHUNK = 1 << 20
KEEPALIVE_REQUESTS = 20  # responses per keep-alive connection before the server closes it
MAX_HEADER_BYTES = 64 * 1024  # all request headers together (nginx's default buffers hold 32 KiB)
FORM_OVERHEAD = 1 << 20       # a body may exceed the upload cap by this much: form fields and multipart framing
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,7}")


class _BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException, so FastAPI's body parsing passes it through."""

    def __init__(self, max_body: int):
        super().__init__(413, f"request body over {max_body} bytes")


class RequestLimits:
    """431 for oversized request headers and 413 for a body over ``max_body`` bytes, before the app reads
    it: by its Content-Length when it declares one, else counted as it streams in. The connection keeps
    serving; the handler never sees the request."""

    def __init__(self, app: ASGIApp, max_body: int, max_header: int = MAX_HEADER_BYTES):
        self.app, self.max_body, self.max_header = app, max_body, max_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        if sum(len(k) + len(v) for k, v in headers) > self.max_header:
            await _refusal("headers", f"request headers over {self.max_header} bytes", 431)(scope, receive, send)
            return
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _refusal("body", f"request body over {self.max_body} bytes", 413)(scope, receive, send)
            return
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLarge(self.max_body)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge as exc:
            if started:
                raise
            await _refusal("body", exc.detail, 413)(scope, receive, send)


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
def _spooled(name: str, chunks: Iterator[bytes], service: Service) -> Iterator[QueryImage]:
    """Spool at most the byte cap to a temp file (the backend takes a path; nothing lands in the data) and
    decode it with the project's safe loader under the pixel cap: an upload and a data URL alike."""
    cap = service.limits.max_upload_bytes
    # The suffix only helps decoders that look at it; from the client's name, so only a plain extension.
    suffix = Path(name).suffix
    with tempfile.NamedTemporaryFile(prefix="rare-serve-",
                                     suffix=suffix if _SAFE_SUFFIX.fullmatch(suffix) else "") as tmp:
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise BadInput("image", f"upload is over the size cap of {cap} bytes", 413)
            tmp.write(chunk)
        tmp.flush()
        if size == 0:
            raise BadInput("image", "the uploaded file is empty")
        try:
            image = open_image(tmp.name, service.limits.max_pixels)
        except ImageLoadError as exc:  # its message names the temp file: never shown to the client
            cause = str(exc).removeprefix(f"{tmp.name}: ").replace(tmp.name, "<upload>")
            cause = cause.replace(str(Path(tmp.name).parent), "<tmp>")
            raise BadInput("image", f"{name}: {cause}") from None
        yield QueryImage(image, Path(tmp.name))


@contextmanager
def _upload(upload: UploadFile | None, service: Service) -> Iterator[QueryImage | None]:
    if upload is None or not upload.filename:
        yield None
        return
    if any(ord(c) < 32 or ord(c) == 127 for c in upload.filename):  # NUL and friends: no file is named so
        raise BadInput("image", "the upload's file name holds control characters")
    with _spooled(upload.filename, iter(lambda: upload.file.read(_CHUNK), b""), service) as image:
        yield image


_DATA_URL = re.compile(r"^data:(?P<mime>image/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*;base64,", re.ASCII)
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}


@contextmanager
def _data_url(url: str | None, service: Service) -> Iterator[QueryImage | None]:
    """``data:image/png;base64,...``: the JSON request's image, held to the upload's caps."""
    if not url:
        yield None
        return
    m = _DATA_URL.match(url)
    if m is None:
        raise BadInput("image", "expected a base64 data URL (data:image/<type>;base64,<bytes>)")
    cap = service.limits.max_upload_bytes
    if (len(url) - m.end()) * 3 // 4 > cap + 3:
        raise BadInput("image", f"upload is over the size cap of {cap} bytes", 413)
    try:
        data = base64.b64decode(url[m.end():], validate=True)
    except binascii.Error as exc:
        raise BadInput("image", f"the data URL is not valid base64 ({exc})") from None
    with _spooled(f"data URL{_EXT.get(m['mime'] or '', '')}", iter([data]), service) as image:
        yield image


class SearchJSON(BaseModel):
    """``POST /search`` as ``application/json``: the form's fields, the image as a base64 data URL."""

    model_config = ConfigDict(extra="forbid")
    text: str = ""
    task: str = ""
    qid: str = ""
    k: int = 10
    pool: str = "local"
    variants: str | list[str] = ""
    image: str | None = Field(None, description="data:image/<type>;base64,<bytes>")


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
ACCEPTED = (*FORM_TYPES, "application/json")


def _json_search(body: bytes) -> SearchJSON:
    try:
        return SearchJSON.model_validate_json(body or b"{}")
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        raise BadInput(loc, "not valid JSON" if err["type"] == "json_invalid" else err["msg"]) from None


def create_app(service: Service) -> FastAPI:
    app = FastAPIOffline(title="rare serve",
                         description="Search trained rare indexes (the evaluation's cached candidate embeddings, "
                                     "exact search), one or two variants side by side, with query enhancement on "
                                     "the fly.")

    @app.exception_handler(BadInput)
    def _bad_input(_: Request, exc: BadInput) -> JSONResponse:
        return _refusal(exc.field, exc.cause, exc.status)

    @app.exception_handler(_BodyTooLarge)
    def _too_large(_: Request, exc: _BodyTooLarge) -> JSONResponse:
        return _refusal("body", exc.detail, 413)

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

    @app.post("/search", openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": SearchJSON.model_json_schema(ref_template="#/components/schemas/{model}")}}}})
    async def search(
        request: Request,
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
        """Rank candidates for one query with each variant: did, score, modality, original and enhanced text.
        Takes a form (fields, image upload) or ``application/json`` (the same fields, the image as a base64
        data URL); any other content type is refused with 415."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            body = _json_search(await request.body())
            listed = body.variants if isinstance(body.variants, list) else body.variants.split(",")
            names = [v.strip() for v in listed if v.strip()]

            def submit() -> Pending:
                with _data_url(body.image, service) as query_image:
                    return service.submit(text=body.text, image=query_image, task=body.task, qid=body.qid, k=body.k,
                                          pool=body.pool, variants=names)
        elif ctype and ctype not in FORM_TYPES:
            raise BadInput("content-type", f"{ctype!r} is not accepted; send one of {', '.join(ACCEPTED)}", 415)
        else:
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
    app.add_middleware(RequestLimits, max_body=service.limits.max_upload_bytes + FORM_OVERHEAD)
    return app

