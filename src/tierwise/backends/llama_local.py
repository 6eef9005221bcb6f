"""In-process GGUF models through llama-cpp-python, safe to call from an asyncio server.

A ``llama_cpp.Llama`` object decodes one sequence at a time and is not thread-safe, so each backend
holds ``max_concurrency`` loaded copies (default 1) and an ``asyncio.Semaphore`` of the same size:
concurrent requests queue on the semaphore instead of crashing, and the blocking decode runs in a
dedicated worker thread so the event loop keeps serving. Models load at construction (server
start), so a missing or corrupt file fails before the first request, not during it.

Generation is our own short loop over ``Llama.generate`` rather than ``create_chat_completion``:
that API needs ``logits_all=True`` for logprobs (an n_ctx x n_vocab float buffer: 2.5 GB for a
4k-context Qwen) and cannot be stopped mid-way for a timeout. Here the prompt is rendered with the
GGUF's own chat template (the same Jinja formatter llama-cpp-python uses), log-probabilities are
read from the last decoded row only, and a deadline / cancel flag is checked after every token.
"""

from __future__ import annotations

import asyncio
import codecs
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import numpy as np

from .base import BackendError, ChatResult, StreamDelta, TimedBackend

# Used only when a GGUF carries no chat template.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class _Gen:
    text: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    finish: str = "length"
    logprobs: list[float] = field(default_factory=list)
    first_top: dict[str, float] | None = None
    timed_out: bool = False


class LlamaBackend(TimedBackend):
    """A local GGUF model; ``timeout`` is the whole request's budget, queueing included."""

    def __init__(
        self,
        name: str,
        model_path: str | Path,
        *,
        context_window: int = 4096,
        n_threads: int | None = None,
        max_concurrency: int = 1,
        timeout_s: float = 120.0,
        seed: int = 0,
    ):
        import os

        self.name = name
        self.context_window = int(context_window)
        self.path = Path(model_path)
        self.n_threads = n_threads or os.cpu_count() or 1
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self._seed = seed
        self._free = [self._load() for _ in range(self.max_concurrency)]
        self._first = self._free[0]
        self._free_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix=f"llama-{name}")
        self._sems: dict[int, asyncio.Semaphore] = {}
        self._formatter, self._template_stops = self._make_formatter(self._first)
        self._n_vocab = self._first.n_vocab()

    # ---- loading and prompt rendering --------------------------------------------------------

    def _load(self):
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(self.name, f"llama-cpp-python is not installed ({exc}); run scripts/setup.sh") from None
        if not self.path.is_file():
            raise BackendError(self.name, f"{self.path}: model file not found")
        try:
            return Llama(
                model_path=str(self.path),
                n_ctx=self.context_window,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self._seed,
                logits_all=False,
                verbose=False,
            )
        except Exception as exc:
            raise BackendError(self.name, f"{self.path}: cannot load GGUF ({exc})") from None

    @staticmethod
    def _make_formatter(llm):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template") or CHATML
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return fmt, [s for s in (eos,) if s]

    def _prompt_tokens(self, llm, messages: list[dict]) -> list[int]:
        try:
            rendered = self._formatter(messages=messages)
        except Exception as exc:
            raise BackendError(self.name, f"chat template failed on these messages: {exc}", status=400) from None
        return llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)

    def count_tokens(self, messages: list[dict]) -> int:
        """Exact prompt tokens: the chat template rendered and tokenized with the model's tokenizer."""
        return len(self._prompt_tokens(self._first, messages))

    # ---- the blocking generation loop (worker thread) ---------------------------------------

    def _generate(
        self,
        llm,
        messages: list[dict],
        max_tokens: int,
        temperature: float,
        stop: list[str] | None,
        want_lp: bool,
        top_n: int,
        deadline: float,
        cancel: threading.Event,
        emit: Callable[[str], None] | None,
    ) -> _Gen:
        import llama_cpp

        prompt = self._prompt_tokens(llm, messages)
        g = _Gen(tokens_in=len(prompt))
        room = self.context_window - len(prompt)
        if room <= 0:
            raise BackendError(
                self.name, f"prompt has {len(prompt)} tokens; context window is {self.context_window}", status=400
            )
        max_tokens = max(1, min(int(max_tokens), room))
        stops = [s for s in (stop or []) + self._template_stops if s]
        hold = max((len(s) for s in stops), default=1) - 1
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        vocab = llm._model.vocab
        emitted = 0
        if temperature > 0:
            llm.set_seed(int(time.time_ns() % 2**31))
        for tok in llm.generate(prompt, temp=float(temperature), top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0):
            if want_lp or (top_n and g.first_top is None):
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(self._n_vocab,))
                m = float(row.max())
                lse = m + float(np.log(np.exp(row - m, dtype=np.float64).sum()))
                if top_n and g.first_top is None:
                    top = np.argpartition(row, -top_n)[-top_n:]
                    g.first_top = {}
                    for t in top[np.argsort(-row[top])]:
                        piece = llm.detokenize([int(t)], special=True).decode("utf-8", "replace")
                        g.first_top.setdefault(piece, float(row[t]) - lse)
                if want_lp and not llama_cpp.llama_vocab_is_eog(vocab, tok):
                    g.logprobs.append(float(row[tok]) - lse)
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                g.finish = "stop"
                break
            g.tokens_out += 1
            g.text += decoder.decode(llm.detokenize([tok]))
            if stops:
                window = g.text[max(0, emitted - hold):]
                hits = [window.find(s) for s in stops if s in window]
                if hits:
                    g.text = g.text[: max(0, emitted - hold) + min(hits)]
                    g.finish = "stop"
                    break
            if emit is not None:
                safe = len(g.text) - _partial_stop(g.text, stops)
                if safe > emitted:
                    emit(g.text[emitted:safe])
                    emitted = safe
            if g.tokens_out >= max_tokens:
                break
            if cancel.is_set() or time.monotonic() > deadline:
                g.timed_out = True
                break
        if g.finish != "stop":
            g.text += decoder.decode(b"", final=True)
        if emit is not None and len(g.text) > emitted:
            emit(g.text[emitted:])
        if want_lp:
            g.logprobs = g.logprobs[: g.tokens_out]
        return g

    # ---- async plumbing ----------------------------------------------------------------------

    def _sem(self) -> asyncio.Semaphore:
        """One semaphore per event loop (tests and CLIs may run several loops one after another)."""
        loop = asyncio.get_running_loop()
        sem = self._sems.get(id(loop))
        if sem is None:
            self._sems = {id(loop): asyncio.Semaphore(self.max_concurrency)}
            sem = self._sems[id(loop)]
        return sem

    async def _submit(self, fn: Callable, deadline: float, cancel: threading.Event) -> asyncio.Future:
        """Wait for a free model copy (bounded by the deadline), then run ``fn(llm)`` in the worker thread."""
        sem = self._sem()
        try:
            await asyncio.wait_for(sem.acquire(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise BackendError(self.name, "timed out waiting for a free model slot", timeout=True) from None
        with self._free_lock:
            llm = self._free.pop()

        def run():
            return fn(llm)

        fut = asyncio.get_running_loop().run_in_executor(self._executor, run)

        def release(_):  # only when the thread is really done with this copy
            with self._free_lock:
                self._free.append(llm)
            sem.release()

        fut.add_done_callback(release)
        return fut

    def _outcome(self, fut, limit: float) -> _Gen:
        """A finished generation's result; its failure, or running out of time, as a BackendError."""
        try:
            g: _Gen = fut.result()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(self.name, f"generation failed: {type(exc).__name__}: {exc}") from None
        if g.timed_out:
            raise self._timeout(limit)
        return g

    async def _chat(self, messages: list[dict], *, max_tokens: int, temperature: float, stop: list[str] | None,
                    logprobs: bool, top_logprobs: int, limit: float) -> ChatResult:
        t0 = time.monotonic()
        deadline = t0 + limit
        cancel = threading.Event()
        fut = await self._submit(
            lambda llm: self._generate(
                llm, messages, max_tokens, temperature, stop, logprobs, int(top_logprobs), deadline, cancel, None
            ),
            deadline,
            cancel,
        )
        try:
            await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()) + 0.05)
        except asyncio.TimeoutError:
            cancel.set()
            raise self._timeout(limit) from None
        except asyncio.CancelledError:
            cancel.set()
            raise
        except Exception:
            pass  # the generation failed: _outcome reports it
        g = self._outcome(fut, limit)
        return ChatResult(
            text=g.text,
            tokens_in=g.tokens_in,
            tokens_out=g.tokens_out,
            finish_reason=g.finish,
            token_logprobs=g.logprobs if logprobs else None,
            first_token_top=g.first_top if top_logprobs else None,
            latency_s=time.monotonic() - t0,
        )

    async def _stream(self, messages: list[dict], *, max_tokens: int, temperature: float, stop: list[str] | None,
                      limit: float) -> AsyncIterator[StreamDelta]:
        """Text pieces as they are decoded; the worker thread feeds an asyncio queue thread-safely."""
        deadline = time.monotonic() + limit
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("text", piece))

        fut = await self._submit(
            lambda llm: self._generate(llm, messages, max_tokens, temperature, stop, False, 0, deadline, cancel, emit),
            deadline,
            cancel,
        )
        fut.add_done_callback(lambda f: queue.put_nowait(("done", f)))
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()) + 0.05)
                except asyncio.TimeoutError:
                    raise self._timeout(limit) from None
                if kind == "text":
                    yield StreamDelta(text=value)
                    continue
                g = self._outcome(value, limit)
                yield StreamDelta(finish_reason=g.finish, tokens_in=g.tokens_in, tokens_out=g.tokens_out)
                return
        finally:
            cancel.set()  # the consumer left early (disconnect): stop decoding at the next token

    async def aclose(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for llm in self._free:
            llm.close()
        self._free = []


def _partial_stop(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string (held back)."""
    best = 0
    for s in stops:
        for i in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:i]):
                best = max(best, i)
                break
    return best
