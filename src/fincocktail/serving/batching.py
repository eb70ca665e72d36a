"""Batches of waiting chat requests for `fincocktail serve`: concurrent requests share forward passes.

Why: one model instance serves every request, and decoding them one at a time made N
concurrent requests cost N times one (issue 27: the second of two streamed requests got its
headers only when the first had finished). Here each request becomes a `Job`; one model
thread takes every job waiting for the same adapter (up to `max_batch`) and decodes them
together with `generate_greedy`, each row with its own stop strings, budget and cancellation.
Jobs that arrive while a batch decodes wait for the next one, which takes them all at once.

Each job's tokens go to its own queue as they are decoded, so the request's thread (not the
model thread) streams them: a slow client never holds the batch. A job not started within the
server's queue timeout is abandoned (a 503 to retry); a job whose client has gone is cancelled
alone, the rest of its batch decodes on.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from fincocktail.evaluation.generate import Generation, generate_greedy
from fincocktail.serving.openai_fields import BadRequest

DEFAULT_MAX_BATCH = 8
DEFAULT_BATCH_WINDOW_S = 0.01  # an idle model waits this long for requests sent at the same moment
GATHER_WINDOWS = 5  # and again while more arrive, up to this many windows
_DONE = object()


@dataclass(eq=False)
class Job:
    """One request's decoding: its prompt, options, and (filled by the model thread) its tokens and result."""

    name: str  # the served model (adapter) it runs on
    ids: list[int]
    max_tokens: int
    stop: tuple[str, ...]
    gone: Callable[[], bool] | None = None  # the client has hung up
    state: str = "waiting"  # waiting -> running -> done; or waiting -> abandoned
    result: Generation | None = None
    error: BaseException | None = None
    tokens: list[int] = field(default_factory=list)
    events: "queue.Queue[Any]" = field(default_factory=queue.Queue)  # token ids, then _DONE
    started: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False  # set by the request's thread when writing to the client failed

    def is_gone(self) -> bool:
        return self.cancelled or (self.gone is not None and self.gone())


class Batcher:
    """The model thread: gathers waiting jobs of one adapter into batches and decodes them."""

    def __init__(self, pool: Any, max_batch: int = DEFAULT_MAX_BATCH, window_s: float = DEFAULT_BATCH_WINDOW_S):
        self.pool = pool
        self.max_batch = max(1, max_batch)
        self.window_s = window_s
        self._cond = threading.Condition()
        self._waiting: list[Job] = []
        self._worker: threading.Thread | None = None
        self.batches: list[int] = []  # the size of every batch decoded (tests and measurements read it)

    def submit(self, job: Job, timeout_s: float | None) -> Job:
        """Queue `job` and wait until the model thread starts it; a 503 when that takes over `timeout_s`."""
        self.enqueue([job])
        return self.wait_started(job, timeout_s)

    def enqueue(self, jobs: list[Job]) -> None:
        """Queue `jobs` together (the prompts of one request go into one batch); starts the model thread if idle."""
        with self._cond:
            self._waiting.extend(jobs)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="fincocktail-model", daemon=True)
                self._worker.start()

    def wait_started(self, job: Job, timeout_s: float | None) -> Job:
        """`job` once the model thread has taken it; abandoned and a 503 when that takes over `timeout_s`."""
        if job.started.wait(timeout_s):
            return job
        with self._cond:
            if job.state == "waiting":  # not taken: give up its place
                job.state = "abandoned"
                self._waiting.remove(job)
                raise BadRequest(f"the model is busy (waited {timeout_s:g} s for earlier requests); retry later",
                                 status=503, kind="server_error", code="busy")
        return job  # taken just as the wait ran out

    def abandon(self, jobs: list[Job]) -> None:
        """Withdraw the jobs of a request that gave up (one of its prompts got a 503): those still waiting, and cancel the rest."""
        with self._cond:
            for j in jobs:
                if j.state == "waiting":
                    j.state = "abandoned"
                    self._waiting.remove(j)
                j.cancelled = True

    def _work(self) -> None:
        """Decode batches while jobs wait; the thread ends when none is left (`submit` starts another)."""
        while True:
            with self._cond:
                if not self._waiting:
                    self._worker = None
                    return
                name = self._waiting[0].name
            self._gather()
            with self.pool.use(name) as scorer:
                with self._cond:
                    jobs = [j for j in self._waiting if j.name == name][: self.max_batch]
                    for j in jobs:
                        self._waiting.remove(j)
                        j.state = "running"
                        j.started.set()
                if jobs:
                    self._run(scorer, jobs)

    def _gather(self) -> None:
        """Wait `window_s` for requests sent at the same moment, again while more keep arriving (at most
        GATHER_WINDOWS windows), unless a full batch already waits. Why: clients of one burst reach the
        server spread over tens of ms; a lone request pays one window."""
        seen = -1
        for _ in range(GATHER_WINDOWS):
            with self._cond:
                count = len(self._waiting)
            if count == seen or count >= self.max_batch or self.window_s <= 0:
                return
            seen = count
            time.sleep(self.window_s)

    def _run(self, scorer: Any, jobs: list[Job]) -> None:
        """One batch; every job ends with a result or the batch's error, and its stream's end mark."""
        self.batches.append(len(jobs))

        def on_token(i: int, tok: int) -> None:
            jobs[i].tokens.append(tok)
            jobs[i].events.put(tok)

        try:
            gens = generate_greedy(scorer, self.pool.tokenizer, [j.ids for j in jobs], max(j.max_tokens for j in jobs),
                                   batch_size=len(jobs), on_token=on_token, row_stops=[j.stop for j in jobs],
                                   row_max_tokens=[j.max_tokens for j in jobs], row_gone=lambda i: jobs[i].is_gone())
            for j, g in zip(jobs, gens):
                j.result = g
        except Exception as exc:  # every request of the batch learns what failed; the server keeps serving
            for j in jobs:
                j.error = exc
        finally:
            for j in jobs:
                j.state = "done"
                j.events.put(_DONE)


def stream_tokens(job: Job, timeout_s: float = 600.0) -> Iterator[int]:
    """The job's token ids as the model thread decodes them; ends when the job is done (re-raising its error)."""
    while True:
        try:
            item = job.events.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no token from the model in {timeout_s:g} s") from None
        if item is _DONE:
            break
        yield item
    if job.error is not None:
        raise job.error


def wait_result(job: Job) -> Generation:
    """The job's finished generation (its tokens are in `job.tokens`)."""
    for _ in stream_tokens(job):
        pass
    assert job.result is not None
    return job.result
