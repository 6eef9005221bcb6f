"""Graders on answers shaped like what small local models actually write."""

from __future__ import annotations

import asyncio
import math

import pytest

from tierwise.backends.base import ChatResult
from tierwise.graders import (
    ChoiceGrader,
    ChoiceLogprobGrader,
    GraderError,
    JudgeGrader,
    NumericGrader,
    choice_from_top_logprobs,
    extract_choice,
    extract_number,
    gold_letter,
    gold_number,
    make_grader,
    option_letters,
    parse_judge_score,
    score_exact,
    score_numeric,
    score_regex,
)

GSM_GOLD = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Janet has 16 - 3 - 4 = 9 eggs left. 9 * 2 = 18. The answer is 18.", "18"),
        ("She makes $18 per day.\nThe answer is $18.", "18"),
        ("The answer is: **$1,234.50**", "1234.5"),
        ("So the total is \\boxed{1,080} dollars. Check: 1080 / 12 = 90", "1080"),
        ("Therefore \\boxed{\\frac{3}{4}} of the pie remains.", "0.75"),
        ("Step 1: 5 + 7 = 12\nStep 2: 12 * 3 = 36\n#### 36", "36"),
        ("The answer is 18. Check: 16 - 3 - 4 = 9, and 9 x 2 = 18, total 20 minutes", "18"),
        ("He ends up with 20 apples.", "20"),
        ("The temperature dropped to −5 degrees. The answer is −5", "-5"),
        ("It costs 3.50 dollars per kg, so 7 kg cost 24.5 dollars.", "24.5"),
        ("The final answer is 42 cm", "42"),
        ("I am not sure how to solve this.", None),
        ("", None),
        ("Total: 1,000,000 people", "1000000"),
        ("The answer is 18.00", "18"),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_gold_number_reads_after_hashes():
    assert gold_number(GSM_GOLD) == "18"
    assert gold_number("... #### 1,200") == "1200"
    assert gold_number(7) == "7"
    assert gold_number("no number here") is None


def test_score_numeric_right_wrong_and_bad_gold():
    assert score_numeric("so she earns $18 a day. The answer is 18", GSM_GOLD).score == 1.0
    wrong = score_numeric("16 - 3 = 13, 13 * 2 = 26. The answer is 26.", GSM_GOLD)
    assert wrong.score == 0.0 and wrong.extracted == "26"
    # 18.0 equals 18
    assert score_numeric("The answer is 18.0", GSM_GOLD).score == 1.0
    with pytest.raises(GraderError, match="no number"):
        score_numeric("18", "unknown")


PROMPT_MC = "Which gas is most abundant in air?\nA. Oxygen\nB. Nitrogen\nC. Argon\nD. Carbon dioxide"


def test_option_letters_reads_the_prompt():
    assert option_letters(PROMPT_MC) == "ABCD"
    assert option_letters("no options here") == "ABCDEFGHIJ"
    ten = "Q\n" + "\n".join(f"{c}. x{c}" for c in "ABCDEFGHIJ")
    assert option_letters(ten) == "ABCDEFGHIJ"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        ("B. Nitrogen", "B"),
        ("(B) Nitrogen makes up 78% of the air.", "B"),
        ("**B**", "B"),
        ("Nitrogen is about 78% of air. The answer is (B).", "B"),
        ("A good approach is to recall composition. Answer: B", "B"),
        ("The correct option is b.", "B"),
        ("I think the answer is \\boxed{B}", "B"),
        ("Let's see: option A is oxygen (21%). The answer is B", "B"),
        ("A lot of people think oxygen, but it is nitrogen.", None),
        ("The answer is E", None),  # not a valid option of a 4-option question
        ("", None),
        # a stated answer outranks the reply's first letter; a repeated list of the options picks nothing
        ("A. Green\n\nThe answer is (B). Leaves reflect green.", "B"),
        ("A. 4\nB. 5\nC. 6\nD. 7", None),
        ("B\n\nExplanation: option A is wrong.", "B"),
        ("B. The answer is a number close to 78.", "B"),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, "ABCD") == expected


def test_choice_from_top_logprobs_sums_spellings_and_ignores_invalid():
    top = {" B": -1.2, "B": -1.0, "A": -0.9, "The": -0.1, "E": -0.05, "\n": -2.0}
    letter, lp = choice_from_top_logprobs(top, "ABCD")
    # B: logsumexp(-1.2, -1.0) ~ -0.40 beats A at -0.9; "The" and E are not options
    assert letter == "B"
    assert lp == pytest.approx(math.log(math.exp(-1.2) + math.exp(-1.0)))
    assert choice_from_top_logprobs({"The": -0.1, "I": -0.5}, "ABCD") == (None, -math.inf)
    assert choice_from_top_logprobs(None) == (None, -math.inf)
    # lower-case tokens are words ("a"), not letters
    assert choice_from_top_logprobs({"a": -0.1, "C": -3.0}, "ABCD")[0] == "C"


def test_gold_letter_validates():
    assert gold_letter("b", "ABCD") == "B"
    assert gold_letter("(C)", "ABCD") == "C"
    with pytest.raises(GraderError, match="not an option letter"):
        gold_letter("E", "ABCD")
    with pytest.raises(GraderError):
        gold_letter(None)


def _run(coro):
    return asyncio.run(coro)


def test_choice_logprob_grader_one_pass():
    g = ChoiceLogprobGrader()
    assert g.generation.max_tokens == 1 and g.generation.top_logprobs > 0
    item = {"prompt": PROMPT_MC, "answer": "B"}
    msgs = g.messages(item)
    assert len(msgs) == 1 and msgs[-1]["content"].startswith(PROMPT_MC)
    assert msgs[-1]["content"].endswith("Reply with only the letter of the correct option.")
    res = ChatResult(text="B", tokens_in=60, tokens_out=1, token_logprobs=[-0.3],
                     first_token_top={"B": -0.3, "A": -1.6, "C": -2.9})
    grade = _run(g.grade(item, res))
    assert grade.score == 1.0 and grade.extracted == "B"
    assert g.confidence(res, grade) == pytest.approx(-0.3)
    res_wrong = ChatResult(text="Oxygen", tokens_in=60, tokens_out=1, token_logprobs=[-0.2],
                           first_token_top={"O": -0.2, "A": -1.1, "B": -2.5})
    grade = _run(g.grade(item, res_wrong))
    # the generated token is not a letter, but the best-scoring valid option is A
    assert grade.score == 0.0 and grade.extracted == "A"
    assert g.confidence(res_wrong, grade) == pytest.approx(-1.1)


def test_choice_grader_free_text():
    g = ChoiceGrader()
    item = {"prompt": PROMPT_MC, "answer": "B"}
    res = ChatResult(text="Air is 78% nitrogen, 21% oxygen.\nThe answer is (B).", tokens_in=50, tokens_out=20,
                     token_logprobs=[-0.5, -0.1, -0.3])
    grade = _run(g.grade(item, res))
    assert grade.score == 1.0
    assert g.confidence(res, grade) == pytest.approx(-0.3)


def test_exact_and_regex():
    assert score_exact("The Eiffel Tower.", "eiffel tower").score == 1.0
    assert score_exact("Paris, France", ["Paris", "paris france"]).score == 1.0
    assert score_exact("Lyon", "Paris").score == 0.0
    assert score_exact("Paris.", "paris", normalise=False).score == 0.0
    assert score_regex("def add(a, b):\n    return a + b", r"return\s+a\s*\+\s*b").score == 1.0
    assert score_regex("return a - b", r"return\s+a\s*\+\s*b").score == 0.0
    g = make_grader("regex", pattern="[")
    with pytest.raises(GraderError, match="bad regex"):
        g.check_item({"prompt": "x"})
    # the gold answer is never read as a pattern (["cold", "chilly"] became a character class)
    with pytest.raises(GraderError, match="needs a 'pattern'"):
        make_grader("regex").check_item({"prompt": "Opposite of hot?", "answer": ["cold", "chilly"]})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Score: 7", 0.7),
        ("**Score**: 10", 1.0),
        ("score = 3/10", 0.3),
        ("The answer is mostly right. 8/10", 0.8),
        ("9", 0.9),
        ("Score: 15", 1.0),
        ("I cannot grade this.", None),
    ],
)
def test_parse_judge_score(text, expected):
    got = parse_judge_score(text)
    assert got == (None if expected is None else pytest.approx(expected))


class _ScriptedJudge:
    """Stands in for a judge model's reply only; the grading logic under test is ours."""

    def __init__(self, reply: str):
        self.reply = reply
        self.seen: list[list[dict]] = []

    async def chat(self, messages, **kw):
        self.seen.append(messages)
        return ChatResult(text=self.reply, tokens_in=10, tokens_out=3)


def test_judge_grader_builds_rubric_prompt_and_maps_score():
    judge = _ScriptedJudge("Score: 6")
    g = JudgeGrader(judge=judge, judge_name="j")
    grade = _run(g.grade({"prompt": "Explain TCP", "answer": "reliable stream"},
                         ChatResult(text="TCP is a protocol", tokens_in=1, tokens_out=1)))
    assert grade.score == pytest.approx(0.6)
    sent = judge.seen[0]
    assert "Reference answer" in sent[1]["content"] and "TCP is a protocol" in sent[1]["content"]
    assert _run(JudgeGrader(judge=_ScriptedJudge("no idea")).grade(
        {"prompt": "q"}, ChatResult(text="a", tokens_in=1, tokens_out=1))).score == 0.0


def test_make_grader_and_settings_key():
    g = make_grader("numeric", max_tokens=128)
    assert isinstance(g, NumericGrader) and g.generation.max_tokens == 128
    assert make_grader("numeric").settings_key() != g.settings_key()
    with pytest.raises(GraderError, match="unknown grader"):
        make_grader("bleu")
    with pytest.raises(GraderError, match="does not take"):
        make_grader("numeric", pattern="x")
    with pytest.raises(GraderError, match="gold 'answer' has no number"):
        make_grader("numeric").check_item({"prompt": "q", "answer": "n/a"})
