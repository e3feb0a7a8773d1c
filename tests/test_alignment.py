import itertools
import types

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from gmoe import MixingMeasure, conditional_log_density, sample_moe
from gmoe.alignment import align_to, canonical_order, compute_alignment_cost, permute_experts


def _three(gating="softmax", **options):
    return MixingMeasure([[3.0, -1.0], [-2.0, 0.5], [0.0, 0.0]], [0.5, -0.4, 0.0],
                         [[2.0, 0.0], [-1.0, 1.5], [0.5, -0.5]], [1.0, -3.0, 5.0],
                         [0.3, 0.8, 0.1], gating=gating, **options)


MODELS = {
    "softmax": lambda: _three(),
    "topk1": lambda: _three("topk", top_k=1),
    "topk2_linear": lambda: _three("topk", top_k=2, topk_selection="linear"),
    "temperature": lambda: _three("temperature", temperature=0.5),
    # the activation gate pins only the reference intercept: every slope is free
    "activation": lambda: MixingMeasure(
        [[3.0, -1.0], [-2.0, 0.5], [1.0, 2.0]], [0.5, -0.4, 0.0],
        [[2.0, 0.0], [-1.0, 1.5], [0.5, -0.5]], [1.0, -3.0, 5.0], [0.3, 0.8, 0.1],
        gating="activation", temperature=0.7, activation="tanh"),
}
PERMS = [p for p in itertools.permutations(range(3)) if p != (0, 1, 2)]


@pytest.fixture(params=sorted(MODELS))
def measure(request):
    return MODELS[request.param]()


def _data(measure, n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, measure.n_features))
    return X, sample_moe(measure, X, random_state=rng)


def _perturb(measure, scale, seed):
    """Small noise on every free parameter (keeps the reference convention)."""
    rng = np.random.default_rng(seed)
    v = measure.to_vector()
    noisy = v + scale * (1 + np.abs(v)) * rng.standard_normal(v.shape)
    k, d = measure.n_experts, measure.n_features
    noisy[2 * k * d + 2 * k:2 * k * d + 3 * k] = np.abs(noisy[2 * k * d + 2 * k:
                                                              2 * k * d + 3 * k])
    if measure.family.uses_temperature:
        noisy[-1] = abs(noisy[-1])
    return _rebuild(noisy, measure)


def _rebuild(vector, like):
    """from_vector, but re-basing the gate (the noise moved the reference row)."""
    k, d = like.n_experts, like.n_features
    gc = vector[:k * d].reshape(k, d)
    gi = vector[k * d:k * d + k]
    return MixingMeasure(gc, gi, vector[k * d + k:2 * k * d + k].reshape(k, d),
                         vector[2 * k * d + k:2 * k * d + 2 * k],
                         vector[2 * k * d + 2 * k:2 * k * d + 3 * k],
                         **{**like._options(),
                            **({"temperature": float(vector[-1])}
                               if like.family.uses_temperature else {})},
                         rebase=True)


# ------------------------------------------------------------------ permute_experts


@pytest.mark.parametrize("perm", PERMS)
def test_permute_experts_keeps_the_density(measure, perm):
    X, y = _data(measure)
    permuted = permute_experts(measure, perm)
    assert_allclose(conditional_log_density(permuted, X, y),
                    conditional_log_density(measure, X, y), rtol=1e-10, atol=1e-10)
    assert_array_equal(permuted.expert_intercept, measure.expert_intercept[list(perm)])
    assert_array_equal(permuted.expert_var, measure.expert_var[list(perm)])
    # the reference convention holds after re-basing
    assert permuted.gate_intercept[-1] == 0
    if measure.gating != "activation":
        assert_array_equal(permuted.gate_coef[-1], 0.0)
    else:  # only the intercept is re-based: the slopes are carried as they are
        assert_array_equal(permuted.gate_coef, measure.gate_coef[list(perm)])


@pytest.mark.parametrize("perm", PERMS)
def test_permute_experts_keeps_the_topk_selection(perm):
    m = MODELS["topk1"]()
    X, _ = _data(m)
    permuted = permute_experts(m, perm)
    active = np.exp(m.log_gate(X)) > 0
    assert_array_equal(np.exp(permuted.log_gate(X)) > 0, active[:, list(perm)])


def test_permuting_back_restores_the_measure(measure):
    perm = np.array([2, 0, 1])
    back = permute_experts(permute_experts(measure, perm), np.argsort(perm))
    assert_allclose(back.to_vector(), measure.to_vector(), rtol=1e-14, atol=1e-14)


def test_identity_permutation_is_a_no_op(measure):
    assert permute_experts(measure, [0, 1, 2]) == measure


@pytest.mark.parametrize("perm, match", [
    ([0, 1], r"integer array of shape \(3,\)"),
    ([0.0, 1.0, 2.0], r"integer array of shape \(3,\)"),
    ([0, 0, 1], "permutation of 0..2"),
    ([0, 1, 3], "permutation of 0..2"),
])
def test_permute_experts_rejects_non_permutations(perm, match):
    with pytest.raises(ValueError, match=match):
        permute_experts(_three(), perm)


# ------------------------------------------------------------------ canonical_order


def test_canonical_order_sorts_by_expert_intercept(measure):
    order = canonical_order(measure)
    assert_array_equal(order, np.argsort(measure.expert_intercept))
    assert np.all(np.diff(permute_experts(measure, order).expert_intercept) > 0)


@pytest.mark.parametrize("perm", PERMS)
def test_canonical_form_does_not_depend_on_the_labels(measure, perm):
    canon = permute_experts(measure, canonical_order(measure))
    other = permute_experts(measure, perm)
    canon_other = permute_experts(other, canonical_order(other))
    assert_allclose(canon_other.to_vector(), canon.to_vector(), rtol=1e-13, atol=1e-13)


def test_canonical_order_breaks_ties_with_slopes_then_gate():
    # equal intercepts: the slope decides; equal experts: the gate slope decides
    m = MixingMeasure([[1.0], [-1.0], [0.0]], [0.0, 0.0, 0.0], [[2.0], [1.0], [1.0]],
                      [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert_array_equal(canonical_order(m), [1, 2, 0])


# -------------------------------------------------------------------------- align_to


@pytest.mark.parametrize("perm", PERMS)
def test_align_to_recovers_a_known_permutation(measure, perm, global_random_seed):
    # 2% relative noise on every parameter: well inside the experts' separation
    noisy = _perturb(measure, 0.02, seed=global_random_seed)
    shuffled = permute_experts(noisy, perm)
    aligned, found = align_to(shuffled, measure)
    # aligned expert j is shuffled expert found[j] = noisy expert perm[found[j]]
    assert_array_equal(np.asarray(perm)[found], [0, 1, 2])
    assert_array_equal(found, np.argsort(perm))
    # relabelling leaves the density unchanged
    X, y = _data(measure)
    assert_allclose(conditional_log_density(aligned, X, y),
                    conditional_log_density(shuffled, X, y), rtol=1e-10, atol=1e-10)
    assert_allclose(aligned.expert_intercept, noisy.expert_intercept, rtol=1e-14)


def test_align_to_itself_is_the_identity(measure):
    aligned, perm = align_to(measure, measure)
    assert_array_equal(perm, [0, 1, 2])
    assert aligned == measure


def test_align_to_uses_the_gate_when_the_experts_agree():
    # Two identical experts told apart only by their gates.
    ref = MixingMeasure([[4.0], [-4.0], [0.0]], [0.0, 0.0, 0.0], [[1.0], [1.0], [-1.0]],
                        [0.0, 0.0, 2.0], [0.5, 0.5, 0.2])
    shuffled = permute_experts(ref, [1, 0, 2])
    aligned, perm = align_to(shuffled, ref)
    assert_array_equal(perm, [1, 0, 2])
    assert_allclose(aligned.gate_coef, ref.gate_coef)


def test_align_to_temperature_on_the_identifiable_scale():
    ref = MODELS["temperature"]()
    # the same gamma = beta / tau with tau doubled, relabelled
    scaled = ref.replace(gate_coef=2 * ref.gate_coef, gate_intercept=2 * ref.gate_intercept,
                         temperature=2 * ref.temperature)
    shuffled = permute_experts(scaled, [2, 0, 1])
    _, perm = align_to(shuffled, ref)
    assert_array_equal(perm, np.argsort([2, 0, 1]))


def test_align_to_across_gating_families_uses_the_experts():
    ref = MODELS["softmax"]()
    other = permute_experts(MODELS["activation"](), [1, 2, 0])
    _, perm = align_to(other, ref)
    assert_array_equal(perm, np.argsort([1, 2, 0]))


def test_alignment_cost_is_standardised():
    ref = MODELS["softmax"]()
    # rescaling one parameter block (variances x 1e6) does not change the matching
    big = ref.replace(expert_var=ref.expert_var * 1e6)
    cost = compute_alignment_cost(permute_experts(big, [1, 2, 0]), big)
    assert cost.shape == (3, 3)
    assert np.all(cost >= 0)
    assert_array_equal(np.argmin(cost, axis=1), np.argsort([1, 2, 0]))


def test_align_to_accepts_fitted_estimators():
    m = MODELS["softmax"]()
    est = types.SimpleNamespace(mixing_measure_=permute_experts(m, [2, 1, 0]))
    ref = types.SimpleNamespace(mixing_measure_=m)
    aligned, perm = align_to(est, ref)
    assert_array_equal(perm, [2, 1, 0])
    assert isinstance(aligned, MixingMeasure)


def test_align_to_rejects_mismatched_shapes():
    m = MODELS["softmax"]()
    two = MixingMeasure([[1.0, 0.0], [0.0, 0.0]], [0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]],
                        [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="same n_experts and n_features"):
        align_to(two, m)
    with pytest.raises(ValueError, match="must be a MixingMeasure or a fitted estimator"):
        align_to(m, "reference")
