"""Random architectures of the grammar (issue #20): the fused engine against the layerwise
reference, the diagonal recursion against the pairs, and a subset against Monte Carlo over
finite networks (the oracle that shares no rule with either).  The seeds are fixed;
``bench/bench_random_arch.py`` checks hundreds more against neural-tangents."""

import math
import warnings

import numpy as np
import pytest

from nngp_lut.kernel import Network

from .random_arch import random_inputs, random_network

#: Fused against layerwise and diagonal against pairs, relative to the largest entry.
TOL_ENGINE = 1e-7
#: Monte Carlo: within this many standard errors of the mean over draws, plus the
#: finite-width bias O(1/width) (a few 1e-3 of the entries at width 256).
MC_SIGMAS = 5.0
MC_BIAS = 5e-3
SEEDS = range(16)
MC_SEEDS = (1, 2, 5, 8)


@pytest.mark.parametrize("seed", SEEDS)
def test_fused_layerwise_and_diagonal_agree(seed):
    layer, kind, _ = random_network(seed)
    x = random_inputs(kind, 4, seed)
    net = Network(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every drawn network runs fused
        k, t = net.kernel(x, get=("nngp", "ntk"))
    lk, lt = net.layerwise(x, get=("nngp", "ntk"))
    dk, dt = net.diagonal(x, get=("nngp", "ntk"))
    for fused, ref, diag in ((k, lk, dk), (t, lt, dt)):
        scale = np.abs(ref).max()
        assert np.max(np.abs(fused - ref)) <= TOL_ENGINE * scale, repr(layer)
        assert np.max(np.abs(np.diag(ref) - diag)) <= TOL_ENGINE * scale, repr(layer)
        np.testing.assert_array_equal(fused, fused.T)
        assert np.linalg.eigvalsh(fused).min() >= -TOL_ENGINE * scale


@pytest.mark.parametrize("seed", MC_SEEDS)
def test_against_finite_networks(seed):
    pytest.importorskip("jax")
    from nngp_lut import montecarlo as mc

    layer, kind, _ = random_network(seed)
    x = random_inputs(kind, 3, seed)
    k, t = Network(layer).kernel(x, get=("nngp", "ntk"))
    draws = list(mc._per_draw(layer, x, None, 256, 24, seed, ("nngp", "ntk"), 1, None))
    for kind_, exact in (("nngp", k), ("ntk", t)):
        a = np.stack([d[kind_] for d in draws])
        err = a.std(0, ddof=1) / math.sqrt(len(draws))
        bound = MC_SIGMAS * err + MC_BIAS * np.abs(exact).max()
        assert np.all(np.abs(a.mean(0) - exact) <= bound), (repr(layer), kind_)
