"""Graders: turn a model's answer into a score in [0, 1].

``collect`` needs to know, per prompt and model, whether the answer was right, and users' prompt sets
come in a few shapes: math word problems with a numeric gold answer (GSM8K), multiple choice
(MMLU-Pro, letters A-J), short answers checked exactly or by regex, and open answers that only
another model can judge. Each grader owns the instruction it adds (a system message) and the
generation settings it needs, so a cell of the outcome table is fully determined by
(prompt, model, grader name, grader settings) -- which is what the resume key of ``collect`` hashes.

The pure functions (:func:`extract_number`, :func:`extract_choice`, :func:`choice_from_top_logprobs`,
...) are the tested core; the :class:`Grader` classes wrap them for ``collect``.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable

from .errors import TierwiseError

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend, ChatResult

GRADER_NAMES = ("numeric", "choice", "choice-logprob", "exact", "regex", "judge")
LETTERS = string.ascii_uppercase[:10]  # MMLU-Pro has up to ten options, A-J


class GraderError(TierwiseError, ValueError):
    """A grader was misconfigured or an item lacks what the grader needs (e.g. a gold answer)."""


@dataclass
class Grade:
    """A score plus what was extracted, so a wrong grade can be audited from the sidecar."""

    score: float
    extracted: str | None = None
    # grader-specific confidence (log-probability); None -> mean token log-probability of the answer
    confidence: float | None = None


# --------------------------------------------------------------------------------------------
# numeric answers (GSM8K)

_NUM = r"[-+−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?"
_NUM_RE = re.compile(r"(?<![\w.])" + _NUM + r"(?!\d)")
_BOXED_RE = re.compile(r"\\boxed\s*\{")
_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|=|:)\s*:?\s*(?:\*\*)?\s*(.{0,80})", re.IGNORECASE
)
_HASHES_RE = re.compile(r"####\s*(.{0,80})")


def parse_number(text: str) -> float | None:
    """A float from one number token: ``$1,234.50`` -> 1234.5, ``3/4`` -> 0.75, ``−5`` -> -5."""
    t = text.strip().replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
    if not t:
        return None
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            frac = Fraction(int(num), int(den))
            return float(frac)
        return float(t)
    except (ValueError, ZeroDivisionError):
        return None


def _last_number(text: str) -> str | None:
    found = _NUM_RE.findall(text)
    return found[-1] if found else None


def _first_number(text: str) -> str | None:
    m = _NUM_RE.search(text)
    return m.group(0) if m else None


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}``, honouring nested braces (``\\boxed{\\frac{1}{2}}``)."""
    out = []
    for m in _BOXED_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end() : i - 1] if depth == 0 else text[m.end() :])
    return out


def _latex_to_plain(text: str) -> str:
    text = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"\1/\2", text)
    return text.replace("\\!", "").replace("\\,", "").replace("{,}", ",").replace("\\%", "%")


def extract_number(text: str) -> str | None:
    """The model's final numeric answer as a normalised string, or None.

    Order of trust: the last ``\\boxed{}``, then ``#### N``, then the last "the answer is N",
    then the last number anywhere. Small models often restate numbers after the answer
    ("The answer is 18. Check: 16 - 3 - 4 = 9"), which is why the explicit markers win.
    """
    if not text:
        return None
    candidates: list[str] = []
    boxed = _boxed_contents(text)
    if boxed:
        candidates.append(_latex_to_plain(boxed[-1]))
    hashes = _HASHES_RE.findall(text)
    if hashes:
        candidates.append(hashes[-1])
    answer_is = _ANSWER_IS_RE.findall(text)
    if answer_is:
        candidates.append(answer_is[-1])
    for cand in candidates:
        num = _first_number(cand)
        if num is not None and parse_number(num) is not None:
            return _normalise_number(num)
    num = _last_number(_latex_to_plain(text))
    if num is None or parse_number(num) is None:
        return None
    return _normalise_number(num)


def _normalise_number(token: str) -> str:
    value = parse_number(token)
    assert value is not None
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def gold_number(answer: Any) -> str | None:
    """Gold numeric answer: the text after ``####`` (GSM8K) or the whole field when it is a number."""
    if answer is None:
        return None
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return None if isinstance(answer, float) and math.isnan(answer) else _normalise_number(str(answer))
    text = str(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    num = _first_number(text)
    return None if num is None or parse_number(num) is None else _normalise_number(num)


def numbers_equal(a: str | None, b: str | None, rel_tol: float = 1e-6) -> bool:
    if a is None or b is None:
        return False
    x, y = parse_number(a), parse_number(b)
    if x is None or y is None:
        return False
    return math.isclose(x, y, rel_tol=rel_tol, abs_tol=1e-9)


def score_numeric(text: str, gold: Any) -> Grade:
    want = gold_number(gold)
    if want is None:
        raise GraderError(f"gold answer {str(gold)[-40:]!r} has no number")
    got = extract_number(text)
    return Grade(1.0 if numbers_equal(got, want) else 0.0, got)


# --------------------------------------------------------------------------------------------
# multiple choice (MMLU / MMLU-Pro)

_OPTION_LINE_RE = re.compile(r"^\s*\(?([A-J])[.)]\s+\S", re.MULTILINE)


def option_letters(prompt: str, default: str = LETTERS) -> str:
    """Option letters listed in a prompt ("A. ...", "(B) ..."), in order; ``default`` if none found."""
    found = _OPTION_LINE_RE.findall(prompt)
    seen = "".join(dict.fromkeys(found))
    # a real option list is A, B, C, ... contiguous from A
    if len(seen) >= 2 and seen == LETTERS[: len(seen)]:
        return seen
    return default


_CHOICE_PATTERNS = [
    # "The answer is (C)", "answer: C", "Answer is **C**", "correct option is C."
    re.compile(
        r"(?:answer|option|choice)\s*(?:is|:|=)?\s*(?:option\s*)?[\s*(\[]*([A-J])(?![A-Za-z])", re.IGNORECASE
    ),
    re.compile(r"\\boxed\s*\{\s*\(?([A-J])\)?\s*\}"),
    re.compile(r"\(([A-J])\)"),
]


# a statement of the answer itself ("the answer is (B)", "Answer: B"): it outranks a reply's first letter
# (a capital letter only: "the answer is a number ..." picks nothing)
_ANSWER_STATEMENT = re.compile(r"(?i:answer)\s*(?i:is|:|=)\s*(?:(?i:option)\s*)?[\s*(\[]*([A-J])(?![A-Za-z])")


def extract_choice(text: str, valid: str = LETTERS) -> str | None:
    """The option letter a free-text answer picks, or None.

    The last "answer is X" style statement (or ``\boxed{X}``) wins; else a reply that starts with a letter
    ("C", "C.", "(C) 42 J") unless it is a list of the options (small models repeat them: "A. 4\nB. 5
    ..."); else the last parenthesised letter. A bare capital "A" inside a sentence is never taken as an
    answer ("A good approach is ...").
    """
    if not text:
        return None
    for pattern in (_ANSWER_STATEMENT, _CHOICE_PATTERNS[1]):
        hits = [h for h in (h.upper() for h in pattern.findall(text)) if h in valid]
        if hits:
            return hits[-1]
    stripped = text.strip().lstrip("*( [").strip()
    head = re.match(r"([A-J])(?:$|[.):\]*,]|\s+(?![a-z]))", stripped)
    if head and head.group(1) in valid and len(set(_OPTION_LINE_RE.findall(text))) < 2:
        return head.group(1)
    for pattern in _CHOICE_PATTERNS:
        hits = [h.upper() if pattern is _CHOICE_PATTERNS[0] else h for h in pattern.findall(text)]
        hits = [h for h in hits if h in valid]
        if hits:
            return hits[-1]
    return None


def gold_letter(answer: Any, valid: str = LETTERS) -> str:
    letter = str(answer).strip().strip("().").upper() if answer is not None else ""
    if len(letter) != 1 or letter not in valid:
        raise GraderError(f"gold answer {answer!r} is not an option letter {valid[0]}-{valid[-1]}")
    return letter


def choice_from_top_logprobs(top: dict[str, float] | None, valid: str = LETTERS) -> tuple[str | None, float]:
    """Best valid option letter among the first token's alternatives, with its log-probability.

    Tokenisers spell a letter several ways ("C", " C", "(C"); their probabilities are summed
    (log-sum-exp) per letter. Returns ``(None, -inf)`` when no valid letter is among the top-k.
    """
    if not top:
        return None, -math.inf
    per_letter: dict[str, list[float]] = {}
    for token, lp in top.items():
        t = str(token).strip().lstrip("(*[").rstrip(").:*]").strip()
        if len(t) == 1 and t.upper() == t and t in valid and lp is not None and math.isfinite(lp):
            per_letter.setdefault(t, []).append(float(lp))
    if not per_letter:
        return None, -math.inf
    scored = {k: _logsumexp(v) for k, v in per_letter.items()}
    best = max(scored, key=lambda k: (scored[k], -valid.index(k)))
    return best, scored[best]


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


# --------------------------------------------------------------------------------------------
# exact / regex

def normalise_text(text: str) -> str:
    """Lower-case, drop punctuation, articles and extra spaces (SQuAD-style answer normalisation)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def score_exact(text: str, gold: Any, *, normalise: bool = True) -> Grade:
    if gold is None:
        raise GraderError("exact grading needs a gold 'answer'")
    golds = gold if isinstance(gold, (list, tuple)) else [gold]
    got = text.strip()
    if normalise:
        ok = any(normalise_text(got) == normalise_text(str(g)) for g in golds)
    else:
        ok = any(got == str(g).strip() for g in golds)
    return Grade(1.0 if ok else 0.0, got[:200])


def score_regex(text: str, pattern: str | re.Pattern) -> Grade:
    rx = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, re.IGNORECASE | re.DOTALL)
    m = rx.search(text or "")
    return Grade(1.0 if m else 0.0, m.group(0)[:200] if m else None)


# --------------------------------------------------------------------------------------------
# LLM-as-judge

DEFAULT_RUBRIC = (
    "You are grading an answer to a question. Judge only correctness and completeness, "
    "not style. Reply with a single line 'Score: N' where N is an integer from 0 (wrong) "
    "to 10 (fully correct)."
)
_SCORE_RE = re.compile(r"score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.IGNORECASE)
_FRACTION_RE = re.compile(r"\b(\d+(?:\.\d+)?)\s*/\s*(10|100|5|1)\b")


def parse_judge_score(text: str, scale: float = 10.0) -> float | None:
    """A [0, 1] score from a judge's reply ("Score: 7", "8/10", "**Score**: 9 / 10", "6"), or None."""
    if not text:
        return None
    m = _SCORE_RE.search(text.replace("**Score**", "Score"))
    if m:
        value, denom = float(m.group(1)), float(m.group(2)) if m.group(2) else scale
    else:
        f = _FRACTION_RE.search(text)
        if f:
            value, denom = float(f.group(1)), float(f.group(2))
        else:
            bare = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*\.?\s*", text)
            if not bare:
                return None
            value, denom = float(bare.group(1)), scale
    if denom <= 0:
        return None
    return min(1.0, max(0.0, value / denom))


def judge_messages(question: str, answer: str, reference: str | None, rubric: str = DEFAULT_RUBRIC) -> list[dict]:
    body = f"Question:\n{question}\n\n"
    if reference:
        body += f"Reference answer:\n{reference}\n\n"
    body += f"Answer to grade:\n{answer}\n\nReply with 'Score: N' (0-10)."
    return [{"role": "system", "content": rubric}, {"role": "user", "content": body}]


# --------------------------------------------------------------------------------------------
# Grader objects used by collect


@dataclass
class Generation:
    """How a grader wants the model queried; part of the resume key."""

    max_tokens: int = 256
    temperature: float = 0.0
    logprobs: bool = True
    top_logprobs: int = 0
    system: str | None = None

    def key(self) -> str:
        return (
            f"mt={self.max_tokens};t={self.temperature:g};lp={int(self.logprobs)};"
            f"top={self.top_logprobs};sys={self.system or ''}"
        )


@dataclass
class Grader:
    """Base grader: scores a ChatResult for one item (a prompt-set record with ``prompt``, ``answer``...)."""

    name: str = "base"
    generation: Generation = field(default_factory=Generation)

    def messages(self, item: dict) -> list[dict]:
        msgs = []
        if self.generation.system:
            msgs.append({"role": "system", "content": self.generation.system})
        msgs.append({"role": "user", "content": item["prompt"]})
        return msgs

    def check_item(self, item: dict) -> None:
        """Raise GraderError before any model runs if the item cannot be graded."""

    async def grade(self, item: dict, result: "ChatResult") -> Grade:  # pragma: no cover - abstract
        raise NotImplementedError

    def confidence(self, result: "ChatResult", grade: Grade) -> float | None:
        """Log-probability confidence of the answer (the cascade's signal); None if unavailable."""
        return grade.confidence if grade.confidence is not None else mean_logprob(result.token_logprobs)

    def settings_key(self) -> str:
        return f"{self.name}|{self.generation.key()}"


def mean_logprob(token_logprobs: list[float] | None) -> float | None:
    vals = [float(v) for v in (token_logprobs or []) if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


NUMERIC_SYSTEM = (
    "Solve the problem step by step. Finish with a final line of the form 'The answer is N', "
    "where N is a number."
)


@dataclass
class NumericGrader(Grader):
    name: str = "numeric"
    generation: Generation = field(default_factory=lambda: Generation(max_tokens=256, system=NUMERIC_SYSTEM))

    def check_item(self, item: dict) -> None:
        if gold_number(item.get("answer")) is None:
            raise GraderError(f"item {item['prompt'][:40]!r}: gold 'answer' has no number")

    async def grade(self, item: dict, result: "ChatResult") -> Grade:
        return score_numeric(result.text, item.get("answer"))


CHOICE_SYSTEM = (
    "Answer the multiple-choice question. Think briefly if needed, then finish with "
    "'The answer is (X)' where X is the letter of the correct option."
)
# at the end of the user turn, not in a system message: small instruct models then start their
# reply with the letter itself instead of "To answer this..." (measured on Qwen2.5-Coder-0.5B/1.5B)
CHOICE_LETTER_INSTRUCTION = "Reply with only the letter of the correct option."


@dataclass
class ChoiceGrader(Grader):
    """Free-text answer, letter parsed from the text."""

    name: str = "choice"
    generation: Generation = field(default_factory=lambda: Generation(max_tokens=256, system=CHOICE_SYSTEM))

    def check_item(self, item: dict) -> None:
        gold_letter(item.get("answer"), option_letters(item["prompt"]))

    async def grade(self, item: dict, result: "ChatResult") -> Grade:
        valid = option_letters(item["prompt"])
        want = gold_letter(item.get("answer"), valid)
        got = extract_choice(result.text, valid)
        return Grade(1.0 if got == want else 0.0, got)


@dataclass
class ChoiceLogprobGrader(Grader):
    """One forward pass: the answer is the best valid letter among the first token's top-k.

    ``max_tokens=1`` makes this ~100x cheaper than free-text choice grading on CPU; the recorded
    confidence is the chosen letter's log-probability.
    """

    name: str = "choice-logprob"
    generation: Generation = field(
        default_factory=lambda: Generation(max_tokens=1, logprobs=True, top_logprobs=20)
    )

    def messages(self, item: dict) -> list[dict]:
        msgs = super().messages(item)
        msgs[-1] = {"role": "user", "content": item["prompt"].rstrip() + "\n\n" + CHOICE_LETTER_INSTRUCTION}
        return msgs

    def check_item(self, item: dict) -> None:
        gold_letter(item.get("answer"), option_letters(item["prompt"]))

    def _pick(self, item: dict, result: "ChatResult") -> tuple[str | None, float]:
        valid = option_letters(item["prompt"])
        letter, lp = choice_from_top_logprobs(result.first_token_top, valid)
        if letter is None:  # backend gave no alternatives: fall back to the generated token
            letter = extract_choice(result.text, valid)
            lp = result.token_logprobs[0] if letter and result.token_logprobs else -math.inf
        return letter, lp

    async def grade(self, item: dict, result: "ChatResult") -> Grade:
        valid = option_letters(item["prompt"])
        want = gold_letter(item.get("answer"), valid)
        got, lp = self._pick(item, result)
        return Grade(1.0 if got == want else 0.0, got, lp if math.isfinite(lp) else None)

@dataclass
class ExactGrader(Grader):
    name: str = "exact"
    normalise: bool = True
    generation: Generation = field(
        default_factory=lambda: Generation(max_tokens=64, system="Answer with the answer only, no explanation.")
    )

    def check_item(self, item: dict) -> None:
        if item.get("answer") is None:
            raise GraderError(f"item {item['prompt'][:40]!r}: exact grading needs a gold 'answer'")

    async def grade(self, item: dict, result: "ChatResult") -> Grade:
        return score_exact(result.text, item.get("answer"), normalise=self.normalise)


@dataclass
class RegexGrader(Grader):
    """Correct when the answer matches the item's ``pattern`` field, or the grader-wide ``pattern``."""

    name: str = "regex"
    pattern: str | None = None

    def settings_key(self) -> str:
        return super().settings_key() + f"|re={self.pattern or ''}"

    def _pattern(self, item: dict) -> str:
        pat = item.get("pattern") or self.pattern  # never the gold answer: ["cold", "chilly"] is a character class
        if pat is None:
            raise GraderError(f"item {item['prompt'][:40]!r}: regex grading needs a 'pattern' (or --pattern)")
        try:
            re.compile(str(pat))
        except re.error as exc:
            raise GraderError(f"item {item['prompt'][:40]!r}: bad regex {pat!r}: {exc}") from None
        return str(pat)

    def check_item(self, item: dict) -> None:
        self._pattern(item)

    async def grade(self, item: dict, result: "ChatResult") -> Grade:
        return score_regex(result.text, self._pattern(item))


@dataclass
class JudgeGrader(Grader):
    """Another model grades the answer with a rubric; its 0-10 score is mapped to [0, 1].

    The judge is any :class:`Backend` (a pyramid model or an external OpenAI-compatible one).
    An unparseable judge reply scores 0 and keeps the reply in ``extracted`` for auditing.
    """

    name: str = "judge"
    judge: "Backend | None" = None
    judge_name: str = ""
    rubric: str = DEFAULT_RUBRIC
    generation: Generation = field(default_factory=lambda: Generation(max_tokens=512))
    # builds the judge again where a pickled grader lands (a Ray worker): a live backend does not travel
    judge_factory: "Callable[[], Backend] | None" = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.judge_factory is not None:
            state["judge"] = None
        return state

    def settings_key(self) -> str:
        import hashlib

        rub = hashlib.sha256(self.rubric.encode()).hexdigest()[:8]
        return super().settings_key() + f"|judge={self.judge_name}|rubric={rub}"

    async def grade(self, item: dict, result: "ChatResult") -> Grade:
        if self.judge is None and self.judge_factory is not None:
            self.judge = self.judge_factory()
        if self.judge is None:
            raise GraderError("judge grader has no judge model (use --judge MODEL)")
        msgs = judge_messages(item["prompt"], result.text, _opt_str(item.get("answer")), self.rubric)
        reply = await self.judge.chat(msgs, max_tokens=16, temperature=0.0)
        score = parse_judge_score(reply.text)
        return Grade(0.0 if score is None else score, reply.text.strip()[:200])


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def make_grader(name: str, **options: Any) -> Grader:
    """A grader by CLI name; options: ``max_tokens``, ``pattern``, ``judge``, ``judge_name``, ``rubric``,
    ``judge_factory``."""
    classes = {
        "numeric": NumericGrader,
        "choice": ChoiceGrader,
        "choice-logprob": ChoiceLogprobGrader,
        "exact": ExactGrader,
        "regex": RegexGrader,
        "judge": JudgeGrader,
    }
    if name not in classes:
        raise GraderError(f"unknown grader {name!r}; choose one of {', '.join(GRADER_NAMES)}")
    max_tokens = options.pop("max_tokens", None)
    kwargs = {k: v for k, v in options.items() if v is not None}
    allowed = {"pattern"} if name == "regex" else {"judge", "judge_name", "rubric", "judge_factory"} if name == "judge" else set()
    unknown = set(kwargs) - allowed
    if unknown:
        raise GraderError(f"grader {name!r} does not take option(s) {sorted(unknown)}")
    grader = classes[name](**kwargs)
    if max_tokens is not None:
        if name == "choice-logprob" and max_tokens != 1:
            raise GraderError("choice-logprob reads one token; --max-tokens does not apply")
        if int(max_tokens) < 1:
            raise GraderError(f"--max-tokens must be >= 1, got {max_tokens}")
        grader.generation.max_tokens = int(max_tokens)
    return grader
