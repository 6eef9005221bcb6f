"""The shipped default router: trained on the embedded pyramid's own outcomes, and worth shipping."""

from __future__ import annotations

import numpy as np
import pytest

from tierwise.config import default_pyramid, default_router_path
from tierwise.router import Router
from tierwise.weights import EMBEDDED


@pytest.fixture(scope="module")
def router() -> Router:
    path = default_router_path()
    assert path.is_file(), f"{path} is missing: rebuild it with scripts/build_default_router.sh"
    return Router.load(path)  # also checks the encoder fingerprint against the shipped encoder


def test_default_pyramid_uses_the_shipped_router(router):
    p = default_pyramid()
    assert p.router == str(default_router_path())
    router.check_models([m.name for m in p.models])
    assert sorted(router.models) == sorted(EMBEDDED)


def test_shipped_router_beats_the_zero_router_in_its_own_cv(router):
    cv = router.metadata["cv"]
    kind = router.kind
    assert router.metadata["cv_folds"] >= 5 and router.metadata["trained_rows"] >= 300
    assert cv[kind]["aiq"] > cv["zero_router"]["aiq"]
    # the default knob was calibrated to a quality target, not left at "always the best model"
    assert router.metadata.get("calibrated_target", "").startswith("quality=")


def test_shipped_router_routes_easy_and_hard_prompts_differently(router):
    prompts = ["hi", "What is 2 + 2?",
               "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
               "How many clips did Natalia sell altogether in April and May?",
               "Which of the following best describes the role of the enzyme helicase in DNA replication? "
               "A. joins Okazaki fragments B. unwinds the double helix C. adds primers D. proofreads"]
    scores = router.score(prompts)
    assert scores.shape == (4, 3) and np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()
    assert len({tuple(np.round(s, 6)) for s in scores}) == 4  # the scores depend on the prompt
