"""The one blocking decode loop of the local llama.cpp backend (runs in a worker thread).

``decode`` drives ``Llama.generate`` token by token for both ``complete`` and ``stream``: it turns
tokens into UTF-8 text incrementally, cuts at stop strings (holding back a tail that could still
grow into one, so a streamed piece never has to be taken back), reads log-probabilities from the
last decoded logits row only (no ``logits_all``), and checks the deadline and the cancel flag after
every token. ``emit(piece, logprob_entries)`` receives the text as it becomes safe to show; a
non-streaming call passes ``emit=None`` and reads the :class:`Generation` at the end.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Emit = Callable[[str, list], None]
PROMPT_CHUNK = 128  # prompt tokens evaluated between two checks of the deadline and the cancel flag


@dataclass
class Sampling:
    """What a request asks of the sampler (already validated, defaults applied)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit before sampling
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0
    grammar: Any = None  # a llama_cpp.LlamaGrammar


@dataclass
class Generation:
    text: str = ""
    tokens_out: int = 0
    finish: str = "length"
    stop: str | None = None  # the client's stop string that ended the answer (vLLM reports it as stop_reason)
    logprobs: list[dict] = field(default_factory=list)  # OpenAI logprobs.content entries
    timed_out: bool = False


def partial_suffix(text: str, markers: list[str]) -> int:
    """Length of the longest tail of ``text`` that could still grow into one of ``markers``."""
    best = 0
    for s in markers:
        for i in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:i]):
                best = i
                break
    return best


def _entry(piece: bytes, logprob: float) -> dict:
    return {"token": piece.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(piece)}


def decode(llm, prompt: list[int], s: Sampling, *, deadline: float, cancel: threading.Event,
           emit: Emit | None = None, template_stops: list[str] | None = None) -> Generation:
    import llama_cpp

    g = Generation()
    stops = [x for x in list(s.stop) + list(template_stops or []) if x]
    hold = max((len(x) for x in stops), default=1) - 1
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    vocab = llm._model.vocab
    n_vocab = llm.n_vocab()
    want_lp = s.logprobs or s.top_logprobs > 0
    emitted = 0  # chars of g.text known to be final (handed to emit, when streaming)
    lp_sent = 0  # logprob entries handed to emit

    def flush(upto: int) -> None:
        nonlocal emitted, lp_sent
        if upto > emitted:
            if emit is not None:
                emit(g.text[emitted:upto], g.logprobs[lp_sent:])
            emitted, lp_sent = upto, len(g.logprobs)

    if not _read_prompt(llm, prompt, deadline, cancel):
        g.timed_out = True  # the client went away, or time ran out, while the prompt was being read
        return g
    if s.seed is not None:
        llm.set_seed(int(s.seed) % 2**31)
    elif s.temperature > 0:
        llm.set_seed(int(time.time_ns() % 2**31))
    tokens = llm.generate(prompt, temp=float(s.temperature), top_k=s.top_k, top_p=float(s.top_p),
                          min_p=s.min_p, repeat_penalty=1.0, frequency_penalty=float(s.frequency_penalty),
                          presence_penalty=float(s.presence_penalty), grammar=s.grammar,
                          logits_processor=_biased(s.logit_bias))
    try:
        for tok in tokens:
            eog = llama_cpp.llama_vocab_is_eog(vocab, tok)
            if want_lp and not eog:
                g.logprobs.append(_logprob_entry(llm, tok, n_vocab, s.top_logprobs))
            if eog:
                g.finish = "stop"
                break
            g.tokens_out += 1
            g.text += decoder.decode(llm.detokenize([tok]))
            if stops:
                start = max(0, emitted - hold)
                hits = [i for i in (g.text.find(x, start) for x in stops) if i >= 0]
                if hits:
                    cut = min(hits)
                    g.stop = next((x for x in s.stop if g.text.find(x, start) == cut), None)
                    g.text = g.text[:cut]
                    g.finish = "stop"
                    break
            flush(len(g.text) - partial_suffix(g.text, stops))
            if g.tokens_out >= s.max_tokens:
                break
            if cancel.is_set() or time.monotonic() > deadline:
                g.timed_out = True
                break
    finally:
        tokens.close()
    if g.finish != "stop":
        g.text += decoder.decode(b"", final=True)
    flush(len(g.text))
    return g


def _read_prompt(llm, prompt: list[int], deadline: float, cancel: threading.Event) -> bool:
    """Evaluate all but the prompt's last token in chunks, checking the deadline and the cancel flag between
    them; ``generate`` then finds them cached (its prefix match) and decodes only the last one. Without it a
    long prompt was read to the end whatever happened: a client that hung up, or a request past its
    ``timeout_s``, kept the model busy for seconds (1,574 tokens: 13 s here) and the next requests timed out.
    The cached prefix of the previous request is reused as ``generate`` would. False: stopped early."""
    head = np.asarray(prompt[:-1], dtype=np.intc)
    cached = np.asarray(llm._input_ids, dtype=np.intc)[: len(head)]
    differ = np.flatnonzero(cached != head[: len(cached)])
    keep = int(differ[0]) if len(differ) else len(cached)
    if keep < llm.n_tokens and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
        keep = 0  # this model cannot drop part of its cache: read the prompt from the start
    llm.n_tokens = keep
    while llm.n_tokens < len(head):
        if cancel.is_set() or time.monotonic() > deadline:
            return False
        llm.eval(head[llm.n_tokens: llm.n_tokens + PROMPT_CHUNK].tolist())
    return True


def _biased(bias: dict[int, float] | None):
    """``logit_bias`` as a llama-cpp-python logits processor (its first sampler sees the logits in id order)."""
    if not bias:
        return None
    import llama_cpp

    ids = np.fromiter(bias, dtype=np.intp, count=len(bias))
    add = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))

    def apply(input_ids, scores):
        scores[ids] += add
        return scores

    return llama_cpp.LogitsProcessorList([apply])


def _logprob_entry(llm, tok: int, n_vocab: int, top_n: int) -> dict:
    """The sampled token's log-probability (and its top alternatives) from the last logits row."""
    import llama_cpp

    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
    m = float(row.max())
    lse = m + float(np.log(np.exp(row - m, dtype=np.float64).sum()))
    entry = _entry(llm.detokenize([tok], special=True), float(row[tok]) - lse)
    top: list[dict] = []
    if top_n > 0:
        best = np.argpartition(row, -top_n)[-top_n:]
        for t in best[np.argsort(-row[best])]:
            top.append(_entry(llm.detokenize([int(t)], special=True), float(row[t]) - lse))
    entry["top_logprobs"] = top
    return entry
