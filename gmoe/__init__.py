"""gmoe: Gaussian mixture-of-experts regression by maximum likelihood.

Softmax, top-K sparse, dense-to-sparse (temperature) and activation gating; Voronoi-loss
metrics; a convergence-rate simulation harness.
"""

from . import alignment, metrics
from .estimator import GaussianMoERegressor
from .exceptions import (
    DegenerateExpertWarning,
    GMoEWarning,
    RankDeficientDesignWarning,
    SingularInformationWarning,
)
from .inference import MoEResults, bootstrap, fit_results
from .model import (
    MixingMeasure,
    compute_e_step,
    conditional_log_density,
    e_step,
    make_design,
    sample_moe,
)
from .predictive import PredictiveMixture, predictive_distribution
from .scoring import log_likelihood_scorer
from .selection import SelectionResult, select_n_experts

__version__ = "0.1.0.dev0"

__all__ = [
    "DegenerateExpertWarning",
    "GMoEWarning",
    "GaussianMoERegressor",
    "MixingMeasure",
    "MoEResults",
    "PredictiveMixture",
    "RankDeficientDesignWarning",
    "SelectionResult",
    "SingularInformationWarning",
    "alignment",
    "bootstrap",
    "metrics",
    "compute_e_step",
    "conditional_log_density",
    "e_step",
    "fit_results",
    "log_likelihood_scorer",
    "predictive_distribution",
    "make_design",
    "sample_moe",
    "select_n_experts",
]
