"""`mt serve`: translation over HTTP with JSON, on Starlette and uvicorn (`pip install 'mt[serve]'`).

    POST /v1/translate  {"text": "una frase"} or {"text": ["una frase", "otra"]}, with optional search
                        settings (the fields of SearchOptions: search, beam_size, n_best, ...) and
                        "scores": true -> {"translations": ...} in input order; a string for a string
                        input, a list for a list; with n_best > 1 every translation is a list, best first;
                        with n_best > 1 or "scores": true also "scores" (what the search ranked by) and
                        "log_probs" of the same shape. Inputs cut to the translate limit add "warnings".
    GET  /health        200 {"status": "ok"} once the model is loaded and its default search compiled,
                        503 {"status": "loading"} before.
    GET  /v1/info       the model's settings, vocabulary sizes, parameter count, training records and
                        the search defaults.

Every error is a JSON {"error": "..."} with a 4xx status (5xx for a failure of the server itself).

Micro-batching: TensorFlow runs off the event loop. One worker thread loads the model and traces every
search; once a decoder thread is free, it takes the oldest waiting request and gathers the requests with
the same settings that arrive within --max-wait-ms of it, up to --max-batch-rows rows of the search
(sentences x beam size). Their sentences, shortest first, are cut into one part for each free decoder
(more where a part would pass max-batch-rows / decoders rows), and every request gets its own slice of the
results once all parts are decoded. --workers decoders run at once, each on its share of the cores, as
`mt translate --workers` decodes (2 on a CPU of 2 or more cores): two parts fill each other's gaps, and
under many small requests a decoder that finishes early takes the next requests while the other goes on,
so the batches do not march in lock-step. A sentence's translation does not depend on its batch
(mt/translate.py), and each request's sentences keep the row ids they would have alone, so the answer is
the text `mt translate` writes for the same lines and settings (in float32; under bfloat16 products a
near-tie can be settled otherwise in another batch, as with translate's --batch-size).
"""

import asyncio
import collections
import concurrent.futures
import json
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import click

from mt.errors import UserError
from mt.search_options import DEFAULTS

DEFAULT_WAIT_MS = 5.0
DEFAULT_BODY_BYTES = 1_000_000
DEFAULT_LINES = 1000


class BadRequest(Exception):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class Job:
    """One request's sentences for the worker, and the future its answer goes to."""

    options: object  # SearchOptions
    scores: bool
    encoded: list  # source pieces per sentence
    arrived: float = field(default_factory=time.monotonic)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    @property
    def key(self):
        return self.options, self.scores and self.options.search == "greedy"

    @property
    def rows(self):
        return len(self.encoded) * (self.options.beam_size if self.options.search == "beam" else 1)


class Worker(threading.Thread):
    """Loads the model and compiles its default search, then gathers batches of jobs and hands them to
    `decoders` threads until stopped."""

    def __init__(self, load, max_rows, max_wait, on_failure, decoders=1):
        super().__init__(name="mt-serve-worker", daemon=True)
        self.load, self.max_rows, self.max_wait, self.on_failure = load, max_rows, max_wait, on_failure
        self.decoders = max(1, decoders)
        self.model, self.error = None, None
        self.ready = threading.Event()
        self.jobs = queue.SimpleQueue()
        self.waiting = collections.deque()  # jobs taken from the queue that did not fit the last batch
        self.stopping = False
        self.parts = queue.SimpleQueue()  # (translator, Group, its sentences) for the decoder threads
        self.idle = threading.Condition()
        self.free = self.decoders  # decoder threads minus the parts handed to them and not yet decoded

    def submit(self, job):
        self.jobs.put(job)
        return job.future

    def stop(self):
        self.jobs.put(None)

    def run(self):
        try:
            self.model = self.load()
            self.model.hypotheses(["warm up"], DEFAULTS)  # traces the default search before /health is 200
        except BaseException as error:  # reported by the main thread once the server has stopped
            self.error = error
            self.on_failure()
            return
        threads = [threading.Thread(target=self._decoder, name=f"mt-serve-decoder-{i}", daemon=True)
                   for i in range(self.decoders)]
        for thread in threads:
            thread.start()
        self.ready.set()
        try:
            while True:
                with self.idle:  # gather only for a free decoder: meanwhile requests pile up into a batch
                    self.idle.wait_for(lambda: self.free > 0)
                group = self._gather()
                if group is None:
                    return
                self._dispatch(group)
        finally:
            for _ in threads:
                self.parts.put(None)  # after every part already handed out
            for thread in threads:
                thread.join()

    def _next(self, timeout):
        """The next job from the queue, or None when none came within `timeout` seconds (None: wait)."""
        try:
            job = self.jobs.get(timeout=timeout) if timeout is None or timeout > 0 else self.jobs.get_nowait()
        except queue.Empty:
            return None
        if job is None:
            self.stopping = True
        return job

    def _gather(self):
        """The oldest job with the jobs of the same settings that arrive within max_wait of it and fit in
        max_rows; None once stopped with nothing left."""
        if self.waiting:
            first = self.waiting.popleft()
        else:
            first = None if self.stopping else self._next(None)
            if first is None:
                return None
        group, rows = [first], first.rows
        for job in list(self.waiting):  # older jobs first, in their order
            if job.key == first.key and rows + job.rows <= self.max_rows:
                self.waiting.remove(job)
                group.append(job)
                rows += job.rows
        deadline = first.arrived + self.max_wait
        while rows < self.max_rows and not self.stopping:
            job = self._next(deadline - time.monotonic())
            if job is None:
                break
            if job.key == first.key and rows + job.rows <= self.max_rows:
                group.append(job)
                rows += job.rows
            else:
                self.waiting.append(job)
                if job.key == first.key:  # the batch is full
                    break
        return group

    def _dispatch(self, jobs):
        """Cut the gathered jobs' sentences, shortest first, into parts for the decoders: one for each free
        decoder, more where a part would pass max_rows / decoders rows (translate's rule: the rows in flight
        are shared among the batches decoded at once)."""
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        first = live[0]
        try:
            translator = self.model.translator_for(first.options, first.scores)
            translator.trace()  # here: Keras keeps its settings per thread, a decoder runs no model code
        except BaseException as error:
            for job in live:
                job.future.set_exception(error)
            return
        per_row = first.options.beam_size if first.options.search == "beam" else 1
        batch = max(1, self.max_rows // self.decoders // per_row)  # sentences a decoder's batch holds
        sentences = sorted(((j, i) for j, job in enumerate(live) for i in range(len(job.encoded))),
                           key=lambda ji: len(live[ji[0]].encoded[ji[1]]))
        with self.idle:
            count = max(1, min(self.free, len(sentences)), -(-len(sentences) // batch))
            self.free -= count
        parts = [sentences[k * len(sentences) // count:(k + 1) * len(sentences) // count] for k in range(count)]
        group = Group(live, parts)
        for part in parts:
            self.parts.put((translator, group, part, batch))

    def _decoder(self):
        while True:
            part = self.parts.get()
            if part is None:
                return
            translator, group, sentences, batch = part
            try:
                encoded = [group.jobs[j].encoded[i] for j, i in sentences]
                row_ids = [i for _, i in sentences]  # the ids each request's sentences have alone
                ratio = group.jobs[0].options.max_length_ratio
                group.done(sentences, translator.hypotheses_of_pieces(encoded, ratio, row_ids, batch))
            except BaseException as error:
                group.fail(sentences, error)
            finally:
                with self.idle:
                    self.free += 1
                    self.idle.notify()


class Group:
    """The jobs of one gathered batch, cut into parts: each job is answered as soon as the parts holding
    its sentences are decoded (so its client may send its next request while the other parts run), and
    fails if one of them fails."""

    def __init__(self, jobs, parts):
        self.jobs = jobs
        self.found = [[None] * len(job.encoded) for job in jobs]
        self.left = [0] * len(jobs)  # parts still to come, per job
        for part in parts:
            for j in {j for j, _ in part}:
                self.left[j] += 1
        self.failed = [False] * len(jobs)
        self.lock = threading.Lock()

    def done(self, sentences, found):
        answered = []
        with self.lock:
            for (j, i), hyps in zip(sentences, found):
                self.found[j][i] = hyps
            for j in {j for j, _ in sentences}:
                self.left[j] -= 1
                if not self.left[j] and not self.failed[j]:
                    answered.append(j)
        for j in answered:
            self.jobs[j].future.set_result(self.found[j])

    def fail(self, sentences, error):
        failed = []
        with self.lock:
            for j in {j for j, _ in sentences}:
                self.left[j] -= 1
                if not self.failed[j]:
                    self.failed[j] = True
                    failed.append(j)
        for j in failed:
            self.jobs[j].future.set_exception(error)


def parse_request(body, max_lines):
    """(lines, single, scores, SearchOptions) of a request body; BadRequest for anything wrong in it."""
    from mt.api import search_options

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"the body is not UTF-8: {error}") from None
    try:
        payload = json.loads(text)
    except ValueError as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise BadRequest('the body must be a JSON object such as {"text": "..."}')
    if "text" not in payload:
        raise BadRequest('missing "text": a string or a list of strings')
    payload = dict(payload)
    source = payload.pop("text")
    scores = payload.pop("scores", False)
    if not isinstance(scores, bool):
        raise BadRequest(f'"scores" must be true or false, got {scores!r}')
    single = isinstance(source, str)
    lines = [source] if single else source
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise BadRequest('"text" must be a string or a list of strings')
    if len(lines) > max_lines:
        raise BadRequest(f"{len(lines)} lines is more than this server takes in one request ({max_lines})", 413)
    try:
        options = search_options(payload)
    except UserError as error:
        raise BadRequest(str(error)) from None
    return lines, single, scores, options


def encode(tokenizer, lines):
    """Source pieces of the lines, stripped as `mt translate` reads them and cut as it cuts them, and the
    warnings for the cut ones."""
    from mt.translate import MAX_INPUT_PIECES

    encoded = tokenizer.encode([line.strip() for line in lines])
    long = [i for i, e in enumerate(encoded) if len(e) > MAX_INPUT_PIECES]
    warnings = [f"input {i} is longer than {MAX_INPUT_PIECES} pieces and was cut to that length" for i in long]
    return [e[:MAX_INPUT_PIECES] for e in encoded], warnings


def answer(found, single, n_best, scores):
    """The JSON body of the hypotheses of a request (see the module docstring)."""
    from mt.translate import _one_line

    def shape(values):
        values = values if n_best > 1 else [v[0] for v in values]
        return values[0] if single else values

    body = {"translations": shape([[_one_line(h.text) for h in hyps] for hyps in found])}
    if scores or n_best > 1:
        body["scores"] = shape([[h.score for h in hyps] for hyps in found])
        body["log_probs"] = shape([[h.log_prob for h in hyps] for hyps in found])
    return body


def make_app(worker, max_body_bytes, max_lines):
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(message, status):
        return JSONResponse({"error": message}, status_code=status)

    async def read_body(request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise BadRequest(f"the body is larger than this server takes ({max_body_bytes} bytes)", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise BadRequest(f"the body is larger than this server takes ({max_body_bytes} bytes)", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def translate(request):
        if not worker.ready.is_set():
            return error("the model is still loading", 503)
        try:
            lines, single, scores, options = parse_request(await read_body(request), max_lines)
            if options.coverage_penalty and not worker.model.translator.model.attention:
                raise BadRequest("coverage_penalty needs a model with attention (this one has model.attention: "
                                 "none)")
        except BadRequest as bad:
            return error(bad.message, bad.status)
        encoded, warnings = encode(worker.model.translator.src_tok, lines)
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        found = await asyncio.wrap_future(worker.submit(Job(options, scores, encoded)))
        body = answer(found, single, options.n_best, scores)
        if warnings:
            body["warnings"] = warnings
        return JSONResponse(body)

    async def health(request):
        if worker.ready.is_set():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "loading"}, status_code=503)

    async def info(request):
        if not worker.ready.is_set():
            return error("the model is still loading", 503)
        return JSONResponse(worker.model.info())

    async def http_error(request, exc):
        return error(exc.detail, exc.status_code)

    async def server_error(request, exc):
        return error(f"internal error: {type(exc).__name__}: {exc}", 500)

    routes = [Route("/v1/translate", translate, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/v1/info", info, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})


def listening_socket(host, port):
    """A listening socket on (host, port); port 0 picks a free one."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until the server runs, none is refused
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def run(model, host, port, max_batch_rows, max_wait_ms, max_body_bytes, max_lines, weights, precision, workers=None):
    """`mt serve`: serve the run folder MODEL until SIGTERM or Ctrl-C, then finish the requests in flight."""
    try:
        import uvicorn
    except ImportError:
        raise UserError("mt serve needs Starlette and uvicorn: pip install 'mt[serve]'") from None
    from mt.api import Model
    from mt.folders import RunFolder
    from mt.translate import DEFAULT_ROWS, decoding_workers

    for name, value in (("--max-batch-rows", max_batch_rows), ("--max-body-bytes", max_body_bytes),
                        ("--max-lines", max_lines)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if max_wait_ms < 0:
        raise UserError(f"--max-wait-ms must be 0 or more, got {max_wait_ms}")
    run_folder = RunFolder(model)  # a wrong folder is an error at once, before the port is taken
    run_folder.vocab_sizes()
    run_folder.existing_weights(weights)
    decoders = decoding_workers(workers)  # before TensorFlow's first operation: it shares out the cores

    server = None

    def stop_server():
        if server is not None:
            server.should_exit = True

    worker = Worker(lambda: Model.load(model, weights, precision), max_batch_rows or DEFAULT_ROWS,
                    max_wait_ms / 1000.0, stop_server, decoders)
    app = make_app(worker, max_body_bytes, max_lines)
    sock = listening_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    worker.start()
    click.echo(f"serving {model} on http://{bound_host}:{bound_port} (GET /health answers 200 once the model "
               "is loaded)", err=True)
    # uvicorn handles SIGINT and SIGTERM by a graceful shutdown, then raises the signal again for the
    # handler it found; a handler that does nothing makes that shutdown the whole answer, and the exit 0
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        worker.stop()
        worker.join()
    if worker.error is not None:
        raise worker.error
    click.echo("stopped", err=True)
    sys.stderr.flush()
