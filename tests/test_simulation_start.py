"""Near-truth starts (paper 1's reference protocol) and the task seeds of the simulation harness."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from gmoe import MixingMeasure, conditional_log_density, make_design
from gmoe.simulation import (
    draw_assignment,
    make_near_truth_start,
    task_seed_sequence,
    task_streams,
)
from gmoe.simulation.seeds import evaluation_seed_sequence

REFERENCE_TRUTH = MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                           [0.09, 0.16])
TEMPERATURE_TRUTH = MixingMeasure([[6.25], [0.0]], [-2.0, 0.0], [[-20.0], [20.0]],
                                  [15.0, -5.0], [0.09, 0.16], gating="temperature",
                                  temperature=0.25)
TOPK_TRUTH = MixingMeasure([[6.0], [-6.0], [0.0]], [-4.0, 2.0, 0.0], [[-10.0], [10.0], [3.0]],
                           [8.0, -4.0, 2.0], [0.09, 0.16, 0.04], gating="topk", top_k=2)
NO_NOISE = dict(gate_noise=0.0, expert_noise=0.0, var_noise=0.0)


@pytest.mark.parametrize("n_true, n_experts", [(2, 2), (2, 3), (2, 4), (3, 5)])
def test_assignment_covers_every_true_atom(global_random_seed, n_true, n_experts):
    rng = np.random.default_rng(global_random_seed)
    seen = set()
    for _ in range(200):
        s = draw_assignment(n_true, n_experts, rng)
        assert s.shape == (n_experts,)
        assert s[-1] == n_true - 1  # the last fitted atom goes to the true reference
        assert set(s.tolist()) == set(range(n_true))
        seen.add(tuple(s.tolist()))
    if n_experts > n_true:
        assert len(seen) > 1  # really random


@pytest.mark.parametrize("truth, n_experts, top_k", [
    (REFERENCE_TRUTH, 2, None), (REFERENCE_TRUTH, 3, None), (REFERENCE_TRUTH, 4, None),
    (TEMPERATURE_TRUTH, 3, None), (TOPK_TRUTH, 4, 3)])
def test_noiseless_start_has_the_truths_density(global_random_seed, truth, n_experts, top_k):
    # Several fitted atoms in one true cell split its weight (beta0 - c log m), so without
    # noise the start's density is the truth's, whatever the assignment.
    assignment = [0, 1, 2, 2] if truth is TOPK_TRUTH else None
    start = make_near_truth_start(truth, n_experts, 1000, global_random_seed, top_k=top_k,
                                  assignment=assignment, **NO_NOISE)
    assert start.n_experts == n_experts and start.gating == truth.gating
    assert not np.any(start.gate_coef[-1]) and start.gate_intercept[-1] == 0  # rebased
    X = make_design(200)
    y = np.random.default_rng(global_random_seed).normal(0.0, 10.0, 200)
    assert_allclose(conditional_log_density(start, X, y),
                    conditional_log_density(truth, X, y), rtol=1e-10, atol=1e-10)


def test_noise_schedule_scales():
    # sd of b_i - b*_{s_i} is 0.05 n^-0.083; of nu_i - nu*_{s_i} (half-normal) is
    # 0.005 n^-0.25 * sqrt(2/pi) in mean.
    rng = np.random.default_rng(0)
    for n in (100, 100000):
        starts = [make_near_truth_start(REFERENCE_TRUTH, 2, n, rng) for _ in range(2000)]
        db = np.array([s.expert_intercept - REFERENCE_TRUTH.expert_intercept for s in starts])
        da = np.array([s.expert_coef[:, 0] - REFERENCE_TRUTH.expert_coef[:, 0] for s in starts])
        dv = np.array([s.expert_var - REFERENCE_TRUTH.expert_var for s in starts])
        assert_allclose(db, da)  # the same eps' on (b_i, a_i)
        # 2000 draws: relative error of an sd estimate ~ 1/sqrt(2 * 2000) = 1.6%
        assert_allclose(db.std(), 0.05 * n ** -0.083, rtol=0.06)
        # nu_i - nu*_{s_i} is half-normal with scale 0.005 n^-0.25: a Kolmogorov-Smirnov
        # test against that law fails for a signed normal draw (half the values negative),
        # a shifted one or another scale (e.g. the exponent 0.083 of the other noises).
        sd_var = 0.005 * n ** -0.25
        assert stats.kstest(dv.ravel() / sd_var, "halfnorm").pvalue > 1e-3
        assert stats.kstest(dv.ravel() / (0.005 * n ** -0.083), "halfnorm").pvalue < 1e-6
        assert_allclose(dv.mean(), sd_var * np.sqrt(2 / np.pi), rtol=0.06)
        # Gate: beta1_i - beta1*_i and beta0_i - beta0*_i move together (eps (1, 1)),
        # and the re-basing subtracts the reference atom's eps from both.
        d1 = np.array([s.gate_coef[0, 0] - 25.0 for s in starts])
        d0 = np.array([s.gate_intercept[0] + 8.0 for s in starts])
        assert_allclose(d1, d0, atol=1e-12)
        assert_allclose(d1.std(), np.sqrt(2) * 0.005 * n ** -0.083, rtol=0.06)


def test_published_variance_center():
    start = make_near_truth_start(REFERENCE_TRUTH, 2, 1000, 0, var_center="published")
    assert np.all(start.expert_var >= [0.3, 0.4])
    assert_allclose(start.expert_var, [0.3, 0.4], atol=0.005)
    with pytest.raises(ValueError, match="var_center"):
        make_near_truth_start(REFERENCE_TRUTH, 2, 1000, 0, var_center="std")


def test_start_checks():
    with pytest.raises(ValueError, match="gating must be the truth's 'softmax'"):
        make_near_truth_start(REFERENCE_TRUTH, 2, 100, 0, gating="topk")
    with pytest.raises(ValueError, match="every true atom at least once"):
        make_near_truth_start(REFERENCE_TRUTH, 3, 100, 0, assignment=[1, 1, 1])
    with pytest.raises(ValueError, match="n_experts must be >= n_true"):
        draw_assignment(3, 2)


def test_start_is_reproducible():
    a = make_near_truth_start(REFERENCE_TRUTH, 4, 500, 7)
    b = make_near_truth_start(REFERENCE_TRUTH, 4, 500, 7)
    assert a == b


# ------------------------------------------------------------------------ seeds
def test_task_seed_sequence_is_the_design_contract():
    seq = task_seed_sequence(5, 1000, 3)
    assert seq.entropy == 5 and seq.spawn_key == (1000, 3)
    streams = task_streams(5, 1000, 3)
    expected = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(1000, 3, 0)))
    assert streams.data.random() == expected.random()
    expected = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(1000, 3, 1)))
    assert streams.start.random() == expected.random()
    fit = np.random.SeedSequence(5, spawn_key=(1000, 3, 2)).generate_state(1, np.uint32)[0]
    assert streams.fit_seed == int(fit)


def test_task_streams_differ_between_tasks_and_streams():
    draws = {}
    for key in [(100, 0), (100, 1), (101, 0)]:
        s = task_streams(1, *key)
        draws[key] = (s.data.random(), s.start.random(), s.fit_seed)
    values = [v for triple in draws.values() for v in triple[:2]]
    assert len(set(values)) == len(values)
    assert draws[(100, 0)] == (lambda s: (s.data.random(), s.start.random(), s.fit_seed))(
        task_streams(1, 100, 0))
    assert evaluation_seed_sequence(1).spawn_key == (0,)


# ------------------------------------------------------------------ published protocol
@pytest.mark.parametrize("n_experts, expected", [(3, {1: 2 / 3, 2: 1 / 3}),
                                                 (4, {1: 3 / 7, 2: 3 / 7, 3: 1 / 7})])
def test_published_assignment_probabilities(n_experts, expected):
    from gmoe.simulation.start import draw_published_assignment

    rng = np.random.default_rng(0)
    draws = [draw_published_assignment(2, n_experts, rng) for _ in range(4000)]
    assert all(s[-1] == 1 and 0 in s for s in draws)
    counts = np.bincount([int(np.sum(s == 0)) for s in draws], minlength=n_experts)
    for m, p in expected.items():
        # 4000 draws: the share's sd is at most sqrt(0.25 / 4000) = 0.008; allow 4 sd.
        assert counts[m] / 4000 == pytest.approx(p, abs=0.032)


def test_published_start_keeps_beta0_and_leaves_the_reference_gate_alone():
    start = make_near_truth_start(REFERENCE_TRUTH, 4, 1000, 3, protocol="published",
                                  var_center="published", assignment=[0, 0, 1, 1])
    # No - log m: each copy keeps beta0* (up to its gate noise, 0.005 * 1000^-0.083).
    assert_allclose(start.gate_intercept[:2], -8.0, atol=0.02)
    assert start.gate_intercept[2] == pytest.approx(0.0, abs=0.02)
    # The reference (last) atom: exactly the truth's gate, so no re-basing moved the others.
    assert start.gate_intercept[3] == 0.0 and not np.any(start.gate_coef[3])
    assert_allclose(start.expert_var, [0.3, 0.3, 0.4, 0.4], atol=0.01)
    with pytest.raises(ValueError, match="protocol must be one of"):
        make_near_truth_start(REFERENCE_TRUTH, 3, 100, 0, protocol="paper")


@pytest.mark.parametrize("exponent, ratio", [(None, 10 ** -0.083), (0.0, 1.0)])
def test_temperature_noise_follows_its_schedule(exponent, ratio):
    # sd of log tau_start - log tau* is 0.05 n^-exponent: the published schedule
    # (exponent 0.083 by default) or a fixed scale (exponent 0).
    def spread(n):
        logs = [np.log(make_near_truth_start(TEMPERATURE_TRUTH, 2, n, seed,
                                             temperature_noise=0.05,
                                             temperature_noise_exponent=exponent).temperature)
                for seed in range(1500)]
        return np.std(np.array(logs) - np.log(0.25))

    small, large = spread(1000), spread(10000)
    # 1500 draws: an sd's relative error is ~1/sqrt(2 * 1500) = 2%; allow 8%.
    expected = 0.05 * 1000 ** -(0.083 if exponent is None else exponent)
    assert small == pytest.approx(expected, rel=0.08)
    assert large / small == pytest.approx(ratio, rel=0.1)
    # Without temperature noise the start copies tau* exactly (the default).
    assert make_near_truth_start(TEMPERATURE_TRUTH, 2, 1000, 0).temperature == 0.25
