"""gmoe: Gaussian mixture-of-experts regression by maximum likelihood.

Softmax, top-K sparse, dense-to-sparse (temperature) and activation gating; Voronoi-loss
metrics; a convergence-rate simulation harness.
"""

from .estimator import GaussianMoERegressor, log_likelihood_scorer
from .exceptions import DegenerateExpertWarning, GMoEWarning, SingularInformationWarning
from .model import (
    MixingMeasure,
    compute_e_step,
    conditional_log_density,
    e_step,
    make_design,
    sample_moe,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "DegenerateExpertWarning",
    "GMoEWarning",
    "GaussianMoERegressor",
    "MixingMeasure",
    "SingularInformationWarning",
    "compute_e_step",
    "conditional_log_density",
    "e_step",
    "log_likelihood_scorer",
    "make_design",
    "sample_moe",
]
