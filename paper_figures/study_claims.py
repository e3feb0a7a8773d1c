"""The reproduction's studies and what each paper (or gmoe's own study) claims for them.

:data:`STUDIES` names every study of ``REPRODUCTION.md``, in the page's order, with its
:class:`Claim`; the study's grid is ``simulations/NAME.toml``.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Claim:
    """What a paper (or our own study) claims for one setting."""

    source: str
    setting: str
    claim: str


PAPER1 = "Nguyen, Nguyen & Ho (2023), softmax gating"


PAPER2 = "Nguyen, Akbarian, Yan & Ho (2024), top-K sparse gating"


PAPER3 = "Nguyen, Akbarian & Ho (2024), temperature"


OURS = "gmoe's own study"


#: The studies of the reproduction, in the order of REPRODUCTION.md.
STUDIES = {
    "softmax-exact": Claim(PAPER1, "softmax gate, exact-specified (k = k* = 2)",
                           "D1 decays as n^-1/2; the published code's fit was "
                           "e^3.5 n^-0.638"),
    "softmax-over-k3": Claim(PAPER1, "softmax gate, over-specified (k = 3, k* = 2)",
                             "D2 decays as n^-1/2 (rbar(2) = 4); a cell of m = 2 atoms "
                             "estimates beta1, b at n^-1/8 and a, nu at n^-1/4"),
    "softmax-over-k4": Claim(PAPER1, "softmax gate, over-specified (k = 4, k* = 2)",
                             "D2 decays as n^-1/2 (rbar(2) = 4, rbar(3) = 6)"),
    "paper2-top1-exact": Claim(PAPER2, "top-1 gate, exact-specified (k = k* = 2), "
                                       "X ~ N(0, 1)",
                               "D1 decays as n^-1/2; the selection boundary is estimated "
                               "fast"),
    "paper2-top1-over": Claim(PAPER2, "top-1 truth, over-specified fit (k = 3, K = 2)",
                              "densities converge at n^-1/2 when the fitted K covers the "
                              "selected cells; D2 at n^-1/2"),
    "paper2-top1-over-density": Claim(PAPER2, "top-1 truth, over-specified fit (k = 3, "
                                              "K = 2), n from 1e3 to 1e5, densities only",
                                      "densities converge at n^-1/2 when the fitted K covers "
                                      "the selected cells"),
    "topk-exact": Claim(OURS, "top-2 of 3 experts, exact-specified",
                        "D1 decays as n^-1/2 (as the softmax gate)"),
    "topk-over": Claim(OURS, "top-2 truth, over-specified fit (k = 4, K = 3), n from 1e3 "
                                "to 1e5",
                       "D2 decays as n^-1/2 when the fitted K covers the selected cells"),
    "temperature": Claim(PAPER3, "temperature gate (tau held at its start), tau start "
                                 "noise 0.05 n^-0.083",
                         "raw parameters converge slower than any polynomial (the "
                         "headline, D1 on the identifiable scale gamma = beta / tau, "
                         "is held to gmoe's n^-1/2, not the paper's)"),
    "temperature-fixed-noise": Claim(PAPER3, "temperature gate, tau start noise 0.05 "
                                             "(fixed)",
                                     "raw parameters converge slower than any "
                                     "polynomial (the headline, D1 on the identifiable "
                                     "scale gamma = beta / tau, is held to gmoe's n^-1/2, "
                                     "not the paper's)"),
    "activation": Claim(PAPER3, "activation (tanh) dense-to-sparse gate, exact-specified",
                        "polynomial rates restored: D1 at n^-1/2"),
    "activation-data-starts": Claim(PAPER3, "activation's truth and data, the near-truth "
                                    "start plus 20 data-driven ones (best of 21 kept)",
                                    "polynomial rates restored: D1 at n^-1/2"),
}


#: Studies that refit another study's tasks (its truth, data and near-truth start) with more
#: starts, and that study.
MORE_STARTS_OF = {"activation-data-starts": "activation"}


def headline_column(columns):
    """The column a study's rate is headlined by, among its metric columns (in order).

    D1 for an exact fit, D2 for an over-specified one, and without either the first
    column (the Hellinger distance of a study of the density alone).
    """
    columns = list(columns)
    return next((c for c in ("d1", "d2") if c in columns), columns[0])


#: Paper 1's published fit of D1 on the exact grid: e^3.5 n^-0.638.
PUBLISHED_D1 = (np.exp(3.5), -0.638)
