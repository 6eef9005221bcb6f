"""Quality models: predict, per prompt, how well each model of the pyramid will answer.

Every learned router is a quality model (features -> per-model success) plus a decision rule
(``tierwise.decision``); keeping them apart is what lets one knob trade cost for quality and lets
calibration work the same way for every router.
"""

from .base import QualityModel, make_quality_model, QUALITY_MODELS  # noqa: F401
from . import baselines, knn, neural, source, ensemble, probe  # noqa: F401  (register the kinds)
