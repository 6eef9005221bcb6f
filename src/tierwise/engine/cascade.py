"""The confidence cascade as a dispatch strategy (FrugalGPT / AutoMix style).

The cheapest candidate answers first; if its confidence is below its calibrated threshold
(:class:`tierwise.cascade.Thresholds`, from ``tierwise cascade calibrate``) the next model is asked,
until one is confident or the top model answers. Every model called becomes a typed
:class:`CascadeStep` on the request record (confidence, kept / escalated / error, its own tokens and
cost), so the log and the savings baseline see exactly what was spent.

Models run under the same slot rules as any call (engine/slot.py). A lower model that fails is
escalated past; one that rejects the request (``UpstreamRejected``) ends it: that is the client's
error. Lower models are asked for log-probabilities (their confidence signal); a kept lower answer
has them removed again unless the client asked for them.

Streaming: a lower answer can only be judged once complete, so lower answers are never streamed;
a kept one is sent as chunks at once, and the top model -- whose answer is always kept -- streams live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..backends.base import Completion
from ..cascade import SKIP, Thresholds
from ..errors import AllModelsFailed, Overloaded, RequestError, UpstreamRejected
from .dispatch import OpenStream, open_stream, record_failure, tried
from .record import CascadeStep, RequestRecord
from .slot import Slot, failure_reason


def mean_logprob(values: Sequence[float] | None) -> float | None:
    vals = [v for v in (values or ()) if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _answer_key(text: str) -> str:
    """What two sampled answers must share to agree: the final number if any, else normalised text."""
    from ..graders import extract_number, normalise_text

    num = extract_number(text)
    return f"#{num}" if num is not None else normalise_text(text)[:200]


@dataclass
class Cascade:
    thresholds: Thresholds
    samples: int = 0  # self_consistency: extra answers sampled per lower model
    sample_temperature: float = 0.7
    source: str = "<thresholds>"

    def steps(self, slots: dict[str, Slot], allowed: Sequence[str],
              excluded: dict[str, str]) -> list[tuple[Slot, float]]:
        """Models to call in order with their thresholds: skipped and non-candidate ones left out."""
        top = self.thresholds.models[-1]
        if top not in allowed:  # the top answers whenever nothing below is confident: it must fit
            why = excluded.get(top, "not a candidate")
            code = "unsupported_capability" if why.startswith("lacks") else "context_length_exceeded"
            raise RequestError(f"the cascade's top model {top} cannot take this request ({why}); "
                               "ask a model by name instead", param="messages", code=code)
        plan = [(slots[m], t) for m, t in zip(self.thresholds.models[:-1], self.thresholds.values)
                if t != SKIP and m in allowed]
        return plan + [(slots[top], -math.inf)]

    async def _confidence(self, slot: Slot, body: dict[str, Any], answer: Completion) -> tuple[float | None, int, int]:
        """(confidence, extra tokens in, extra tokens out) of one lower answer."""
        if self.thresholds.confidence == "logprob":
            return mean_logprob(answer.token_logprobs), 0, 0
        key = _answer_key(answer.text)
        sample = {**body, "temperature": self.sample_temperature}
        sample.pop("logprobs", None)
        sample.pop("top_logprobs", None)
        agree = t_in = t_out = 0
        for _ in range(self.samples):
            r = await slot.complete(sample)
            agree += _answer_key(r.text) == key
            t_in, t_out = t_in + r.tokens_in, t_out + r.tokens_out
        return agree / max(1, self.samples), t_in, t_out

    async def lower(self, plan: list[tuple[Slot, float]], body: dict[str, Any], rec: RequestRecord,
                    steps: list[CascadeStep]) -> tuple[Slot, Completion] | None:
        """Ask the lower models in turn; the first confident answer, or None (the top must answer)."""
        asked = {**body, "logprobs": True}
        for slot, threshold in plan[:-1]:
            try:
                answer = await slot.complete(asked)
                conf, x_in, x_out = await self._confidence(slot, body, answer)
            except UpstreamRejected:
                raise
            except Exception as exc:
                record_failure(rec, slot, exc)
                steps.append(CascadeStep(slot.name, None, "error"))
                continue
            t_in, t_out = answer.tokens_in + x_in, answer.tokens_out + x_out
            kept = conf is not None and conf >= threshold
            steps.append(CascadeStep(slot.name, conf, "kept" if kept else "escalated", t_in, t_out,
                                     slot.cost(t_in, t_out)))
            if kept:
                if not body.get("logprobs"):
                    for choice in answer.body.get("choices") or ():
                        if isinstance(choice, dict):
                            choice["logprobs"] = None
                return slot, answer
        return None

    async def top_complete(self, slot: Slot, body: dict[str, Any], rec: RequestRecord,
                           steps: list[CascadeStep]) -> Completion:
        try:
            answer = await slot.complete(body)
        except UpstreamRejected:
            raise
        except Exception as exc:
            record_failure(rec, slot, exc)
            steps.append(CascadeStep(slot.name, None, "error"))
            raise self.top_failed(slot, rec, exc) from None
        steps.append(CascadeStep(slot.name, mean_logprob(answer.token_logprobs), "kept", answer.tokens_in,
                                 answer.tokens_out, slot.cost(answer.tokens_in, answer.tokens_out)))
        return answer

    async def top_stream(self, slot: Slot, body: dict[str, Any], rec: RequestRecord,
                         steps: list[CascadeStep]) -> OpenStream:
        try:
            return await open_stream(slot, body)
        except UpstreamRejected:
            raise
        except Exception as exc:
            record_failure(rec, slot, exc, streaming=True)
            steps.append(CascadeStep(slot.name, None, "error"))
            raise self.top_failed(slot, rec, exc) from None

    @staticmethod
    def top_failed(slot: Slot, rec: RequestRecord, exc: BaseException) -> Exception:
        what = tried(rec) or failure_reason(exc)
        if failure_reason(exc) == "overloaded":
            return Overloaded(f"cascade: the top model {slot.name} is busy ({what})")
        return AllModelsFailed(f"cascade: the top model {slot.name} failed and no cheaper answer was kept ({what})")


def chain_header(steps: Sequence[dict] | None) -> str:
    """``m0:-0.92:escalated,m1:-0.21:kept``: model, confidence (``none``: no signal), outcome."""
    out = []
    for s in steps or ():
        conf = "none" if s.get("confidence") is None else f"{s['confidence']:.2f}"
        out.append(f"{s['model']}:{conf}:{s['outcome']}")
    return ",".join(out)
