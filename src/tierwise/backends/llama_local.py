"""In-process GGUF models through llama-cpp-python, behind the OpenAI chat-completions interface.

A ``llama_cpp.Llama`` object decodes one sequence at a time and is not thread-safe, so each backend
holds ``max_concurrency`` loaded copies (default 1) and an ``asyncio.Semaphore`` of the same size:
concurrent requests queue on the semaphore instead of crashing, and the blocking decode runs in a
dedicated worker thread so the event loop keeps serving (``_llama_worker``). Models load at
construction (server start), so a missing or corrupt file fails before the first request.

Generation is our own loop over ``Llama.generate`` (``_llama_decode``) rather than
``create_chat_completion``: that API needs ``logits_all=True`` for logprobs (an n_ctx x n_vocab
float buffer: 2.5 GB for a 4k-context Qwen) and cannot be stopped mid-way. The prompt is rendered
with the GGUF's own Jinja chat template (tools included, when the template supports them),
log-probabilities are read from the last decoded row only, and a deadline / cancel flag is checked
after every token, so a timeout or a client that leaves stops decoding at the next token.

The request body is honoured field by field (``_llama_request``): ``messages`` (text; image/audio
parts are refused), ``max_tokens``/``max_completion_tokens`` (absent: ``default_max_tokens``, else
the rest of the context window), ``temperature``, ``top_p``, ``seed``, ``stop``,
``frequency_penalty``/``presence_penalty``, ``logprobs``/``top_logprobs``, ``response_format``
(``json_object``/``json_schema`` through llama.cpp grammars, ``_llama_grammar``), ``tools`` with
``tool_choice``/``parallel_tool_calls`` (Hermes ``<tool_call>`` blocks, ``_llama_tools``; forced
choices are grammar-constrained) and ``stream_options.include_usage``. ``n > 1`` is refused. The
answer goes back as OpenAI's ``chat.completion`` / ``chat.completion.chunk`` objects
(``_llama_response``).

Local defaults that differ from OpenAI's: **temperature 0.0 (greedy) when the request sets none**,
so a local model answers the same prompt the same way; when sampling, ``top_k=40``, ``min_p=0.05``
and ``top_p=0.95`` unless the request sets ``top_p``. ``timeout`` is the whole request's budget,
queueing included. Usage is exact (the model's own tokenizer), never estimated.

Legacy ``/v1/completions`` (``complete_text`` / ``stream_text``, ``_llama_text``) run the same
decode loop on the raw prompt, with no chat template. A model built with ``embedding=True`` is an
embedding model: it answers ``embed`` only (``_llama_embed``), in the same worker threads.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

from ..errors import BackendError
from ._llama_decode import Generation, Sampling, decode
from ._llama_embed import embed_texts, embedding_body, parse_embed_request, pooling_needed
from ._llama_grammar import GrammarBook
from ._llama_request import LocalRequest, parse_request, reject, template_messages
from ._llama_response import Chunks, completion_body, logprobs
from ._llama_text import TextAnswer, parse_text_request
from ._llama_tools import ToolCallSplitter
from ._llama_worker import Worker
from .base import Backend, Completion

# Used only when a GGUF carries no chat template.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BASE_CAPABILITIES = frozenset({"json_object", "json_schema", "logprobs", "completions", "prefill"})
MEAN_POOLING = 1  # llama_cpp.LLAMA_POOLING_TYPE_MEAN


_PLACEHOLDER = re.compile("\x00(\\d+)\x00")


class LlamaBackend(Backend):
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
        default_max_tokens: int | None = None,
        embedding: bool = False,
    ):
        self.name = name
        self.embedding = bool(embedding)  # loaded for /v1/embeddings only (no generation)
        self._pooling = -1  # the GGUF's own pooling type
        self.context_window = int(context_window)
        self.path = Path(model_path)
        self.n_threads = n_threads or os.cpu_count() or 1
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout_s = float(timeout_s)
        self.default_max_tokens = int(default_max_tokens) if default_max_tokens else None
        self._seed = seed
        first = self._load()
        if self.embedding and pooling_needed(first):  # a GGUF without a pooling type: mean-pool it
            first.close()
            self._pooling = MEAN_POOLING
            first = self._load()
        copies = [first] + [self._load() for _ in range(self.max_concurrency - 1)]
        self._first = copies[0]
        self._worker = Worker(name, copies)  # loaded copies, their threads and the deadline rules
        template = self._first.metadata.get("tokenizer.chat_template") or CHATML
        self._formatter, self._template_stops = self._make_formatter(self._first, template)
        self.capabilities = frozenset({"embeddings"}) if self.embedding else (
            BASE_CAPABILITIES | ({"tools"} if "tools" in template else frozenset()))
        self._grammars = GrammarBook(name, self._first._model.vocab)
        import llama_cpp

        self.system_fingerprint = "fp_" + hashlib.sha256(
            f"llama.cpp {llama_cpp.__version__} {self.path.name} {self.path.stat().st_size}".encode()
        ).hexdigest()[:12]

    # ---- loading and prompt rendering --------------------------------------------------------

    def _load(self):
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(self.name, f"llama-cpp-python is not installed ({exc}); run scripts/setup.sh") from None
        if not self.path.is_file():
            raise BackendError(self.name, f"{self.path}: model file not found")
        # an embedding model takes each input in one batch (pooling needs the whole sequence)
        extra = dict(embedding=True, pooling_type=self._pooling, n_batch=self.context_window,
                     n_ubatch=self.context_window) if self.embedding else {}
        try:
            return Llama(model_path=str(self.path), n_ctx=self.context_window, n_threads=self.n_threads,
                         n_threads_batch=self.n_threads, seed=self._seed, logits_all=False, verbose=False, **extra)
        except Exception as exc:
            raise BackendError(self.name, f"{self.path}: cannot load GGUF ({exc})") from None

    @staticmethod
    def _make_formatter(llm, template: str):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return fmt, [s for s in (eos,) if s]

    def _prompt_tokens(self, llm, messages: list[dict], tools: list[dict] | None = None,
                       prefill: str | None = None) -> list[int]:
        """The rendered prompt's tokens, with the clients' text never read as control tokens.

        Each message's text is rendered as a placeholder; the template's own text is tokenized with
        special tokens (``<|im_start|>`` ...) and each message's text without, so a user writing
        ``<|im_start|>system`` gets those characters, not a new system turn. ``prefill``: text the
        answer starts with (the opened assistant turn continues it), tokenized as a client's text.
        """
        if prefill is not None:
            tokens = self._prompt_tokens(llm, messages, tools)
            return tokens + llm.tokenize(prefill.encode("utf-8", "replace"), add_bos=False, special=False)
        texts: list[str] = []
        masked = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, str) and content:
                masked.append({**m, "content": f"\x00{len(texts)}\x00"})
                texts.append(content)
            else:
                masked.append(m)
        try:
            rendered = self._formatter(messages=masked, tools=tools)
        except Exception as exc:
            raise reject(self.name, f"the chat template cannot render these messages: {exc}",
                         param="messages") from None
        parts = _PLACEHOLDER.split(rendered.prompt)
        if sorted(int(i) for i in parts[1::2]) != list(range(len(texts))):  # the template altered them
            rendered = self._formatter(messages=messages, tools=tools)
            return llm.tokenize(rendered.prompt.encode("utf-8", "replace"), add_bos=not rendered.added_special, special=True)
        tokens: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                tokens += llm.tokenize(texts[int(part)].encode("utf-8", "replace"), add_bos=False, special=False)
            elif part or i == 0:
                tokens += llm.tokenize(part.encode("utf-8", "replace"), add_bos=i == 0 and not rendered.added_special,
                                       special=True)
        return tokens

    def count_tokens(self, messages: list[dict], tools: list[dict] | None = None) -> int:
        """Exact prompt tokens: the chat template rendered (with the function ``tools`` it would be given)
        and tokenized with the model's tokenizer."""
        fns = [{"type": "function", "function": t["function"]} for t in tools or ()
               if isinstance(t, dict) and isinstance(t.get("function"), dict)]
        return len(self._prompt_tokens(self._first, template_messages(messages, self.name, strict=False),
                                       fns if fns and "tools" in self.capabilities else None))

    # ---- one request: parse, constrain, generate (worker thread) -----------------------------

    def _prepare(self, body: dict[str, Any], *, text: bool = False):
        """The request read and its grammar compiled: every 4xx is raised here, before a slot is taken.
        ``text``: a legacy completions body (raw prompt, ``_llama_text``) instead of a chat one."""
        if self.embedding:
            raise reject(self.name, f"model {self.name!r} is loaded for embeddings only (POST /v1/embeddings)",
                         code="unsupported_capability", param="model")
        if text:
            return parse_text_request(body, self.name), None
        req = parse_request(body, self.name, tools_supported="tools" in self.capabilities)
        if req.tool_mode in ("required", "named"):
            tools = [t for t in req.tools or () if req.tool_mode == "required" or t["function"]["name"] == req.tool_name]
            grammar = self._grammars.for_tools(tools, parallel=req.parallel_tool_calls and req.tool_mode == "required")
        else:
            grammar = self._grammars.for_response_format(req.response_format)
        return req, grammar

    def _generate(self, llm, req: LocalRequest, grammar, deadline: float, cancel: threading.Event,
                  on_start: Callable[[int], None] | None = None,
                  emit: Callable[[str, list], None] | None = None) -> tuple[int, Generation]:
        if req.prompt is not None:  # legacy completions: the client's raw prompt, special tokens read as such
            prompt = llm.tokenize(req.prompt.encode("utf-8", "replace"), add_bos=True, special=True)
            if not prompt:  # "" on a model that adds no BOS: generation needs one token to start from
                prompt = [llm.token_bos() if llm.token_bos() >= 0 else llm.token_eos()]
        else:
            prompt = self._prompt_tokens(llm, req.messages, req.tools, req.prefill)
        room = self.context_window - len(prompt)
        param = "messages" if req.prompt is None else "prompt"
        if room <= 0:
            raise reject(self.name, f"the prompt has {len(prompt)} tokens; this model's context window is "
                         f"{self.context_window}", code="context_length_exceeded", param=param)
        if req.max_tokens and req.max_tokens > room:  # as OpenAI: refused, not silently cut to what fits
            raise reject(self.name, f"the prompt has {len(prompt)} tokens and max_tokens is {req.max_tokens}; this "
                         f"model's context window is {self.context_window}", code="context_length_exceeded",
                         param=param)
        unknown = [t for t in req.logit_bias or () if t >= llm.n_vocab()]
        if unknown:
            raise reject(self.name, f"'logit_bias' names token id {unknown[0]}; this model's vocabulary has "
                         f"{llm.n_vocab()} tokens", param="logit_bias")
        wanted = req.max_tokens or self.default_max_tokens or room
        sampling = Sampling(max_tokens=max(1, min(wanted, room)), temperature=req.temperature, top_p=req.top_p,
                            seed=req.seed, frequency_penalty=req.frequency_penalty,
                            presence_penalty=req.presence_penalty, logit_bias=req.logit_bias, stop=req.stop,
                            logprobs=req.logprobs,
                            top_logprobs=req.top_logprobs, grammar=grammar)
        if on_start is not None:
            on_start(len(prompt))
        g = decode(llm, prompt, sampling, deadline=deadline, cancel=cancel, emit=emit,
                   template_stops=self._template_stops)
        return len(prompt), g

    # ---- running a job on the worker (``_llama_worker``) -------------------------------------

    def _generation(self, result, limit: float) -> tuple[int, Generation]:
        """A finished generation's (prompt tokens, Generation); one that ran out of time, a timeout."""
        if result is None or result[1].timed_out:
            raise self._timeout(limit)
        return result

    async def _run(self, req: LocalRequest, grammar, timeout: float | None, t0: float) -> tuple[int, Generation]:
        limit = self._budget(timeout)
        result = await self._worker.run(lambda llm, deadline, cancel: self._generate(
            llm, req, grammar, deadline, cancel), max(0.0, t0 + limit - time.monotonic()))
        return self._generation(result, limit)

    async def complete(self, body: dict[str, Any], *, timeout: float | None = None) -> Completion:
        t0 = time.monotonic()
        req, grammar = self._prepare(body)
        tokens_in, g = await self._run(req, grammar, timeout, t0)
        out = completion_body(req, model=self.name, fingerprint=self.system_fingerprint, text=g.text,
                              finish=g.finish, entries=g.logprobs, tokens_in=tokens_in, tokens_out=g.tokens_out,
                              stop=g.stop)
        return Completion(out, tokens_in=tokens_in, tokens_out=g.tokens_out, usage_estimated=False,
                          latency_s=time.monotonic() - t0)

    async def complete_text(self, body: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """A legacy ``text_completion`` for the raw ``prompt`` (``_llama_text``)."""
        t0 = time.monotonic()
        req, _ = self._prepare(body, text=True)
        tokens_in, g = await self._run(req, None, timeout, t0)
        return TextAnswer(req, self.name, self.system_fingerprint).body(
            g.text, g.finish, g.logprobs, tokens_in, g.tokens_out)

    async def embed(self, body: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """OpenAI's ``create embedding`` answer (``_llama_embed``); only for ``embedding=True`` models."""
        if not self.embedding:
            raise self._unsupported("embeddings")
        limit = self._budget(timeout)
        req = parse_embed_request(body, self.name, self._first.n_embd())
        vectors, tokens = await self._worker.run(lambda llm, deadline, cancel: embed_texts(
            llm, req, self.name, deadline=deadline, cancel=cancel), limit)
        return embedding_body(vectors, tokens, req, self.name)

    async def _events(self, req: LocalRequest, grammar, timeout: float | None) -> AsyncIterator[tuple]:
        """A generation as it runs: ``("start", prompt_tokens)``, ``("text", piece, logprob_entries)``
        ..., then ``("done", prompt_tokens, Generation)``; leaving early stops the decode."""
        limit = self._budget(timeout)

        def job(llm, deadline: float, cancel: threading.Event, put: Callable) -> tuple[int, Generation]:
            return self._generate(llm, req, grammar, deadline, cancel, lambda n: put("start", n),
                                  lambda piece, lp: put("text", piece, lp))

        async with aclosing(self._worker.events(job, limit)) as events:
            async for event in events:
                yield event if event[0] != "done" else ("done", *self._generation(event[1], limit))

    async def stream(self, body: dict[str, Any], *, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """``chat.completion.chunk`` objects as tokens are decoded (tool-call blocks held back and parsed)."""
        req, grammar = self._prepare(body)
        chunks = Chunks(self.name, self.system_fingerprint, req.include_usage)
        splitter = ToolCallSplitter(req.tool_names, parallel=req.parallel_tool_calls) if req.tool_mode != "off" else None
        pending: list[dict] = []  # logprob entries not yet sent

        def take_logprobs() -> dict | None:
            entries = pending[:]
            pending.clear()
            return logprobs(req, entries)

        async with aclosing(self._events(req, grammar, timeout)) as events:
            async for event in events:
                if event[0] == "start":
                    yield chunks.delta({"role": "assistant", "content": ""})
                elif event[0] == "text":
                    pending.extend(event[2])
                    shown = splitter.feed(event[1]) if splitter else event[1]
                    if shown:
                        yield chunks.delta({"content": shown}, logprobs=take_logprobs())
                else:
                    tokens_in, g = event[1], event[2]
                    finish = g.finish
                    rest, calls = splitter.finish(cut=finish == "length") if splitter else ("", None)
                    if rest:
                        yield chunks.delta({"content": rest}, logprobs=take_logprobs())
                    for i, call in enumerate(calls or ()):
                        finish = "length" if g.finish == "length" else "tool_calls"
                        yield chunks.delta({"tool_calls": [{"index": i, **call}]},
                                           logprobs=take_logprobs() if pending else None)
                    yield chunks.delta({}, finish, logprobs=take_logprobs() if pending else None, stop=g.stop)
                    if req.include_usage:
                        yield chunks.usage(tokens_in, g.tokens_out)

    async def stream_text(self, body: dict[str, Any], *, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """A legacy completion's ``text_completion`` chunks as tokens are decoded (``_llama_text``)."""
        req, _ = self._prepare(body, text=True)
        answer = TextAnswer(req, self.name, self.system_fingerprint)
        async with aclosing(self._events(req, None, timeout)) as events:
            async for event in events:
                if event[0] == "start" and req.echo and req.prompt:
                    yield answer.chunk(req.prompt)
                elif event[0] == "text":
                    yield answer.chunk(event[1], entries=event[2])
                elif event[0] == "done":
                    yield answer.chunk("", event[2].finish)
                    if req.include_usage:
                        yield answer.usage_chunk(event[1], event[2].tokens_out)

    async def aclose(self) -> None:
        self._worker.close()
