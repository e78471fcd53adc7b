"""Every registered layer against its finite-network twin (issue #20).

A small network around each layer class runs three ways: fused (the engine, through the
layer's ``lower``), layer by layer (its ``apply``), and as finite random networks sampled
through the twin registered in ``finite_network.LAYERS`` (Monte Carlo: the oracle that
shares no rule with either).  A layer class with no example here, or no twin, fails
``test_every_layer_has_a_twin_and_an_example``: a new layer comes with its check.
"""

import math
import warnings

import numpy as np
import pytest

from nngp_lut.kernel import (GRU, LSTM, Activation, Aggregate, AvgPool, BatchNorm, Conv, Dense,
                             Dropout, FanInConcat, FanInSum, FanOut, Flatten, GlobalAvgPool,
                             Identity, LastStep, Layer, LayerNorm, Network,
                             PositionalEmbedding, SelfAttention, SimpleRNN, parallel, serial)

#: Fused against layerwise, relative to the largest entry.
TOL_ENGINE = 1e-9
#: Monte Carlo: within this many standard errors of the mean over draws, plus the
#: finite-width bias O(1/width) (a few 1e-3 of the entries at width 256).
MC_SIGMAS = 5.0
MC_BIAS = 5e-3
MC_WIDTH, MC_DRAWS = 256, 24


def _ring(nodes):
    a = np.eye(nodes)
    for i in range(nodes):
        a[i, (i + 1) % nodes] = a[i, (i - 1) % nodes] = 0.5
    return a


#: name: (network, input shape).  Together they hold every layer class.
EXAMPLES = {
    "dense-activation": (serial(Dense(1.6, 0.1), Activation("relu"), Dense(1.2, 0.2),
                                Activation("erf"), Dense(1.0, 0.0)), (6,)),
    "layernorm": (serial(Dense(1.0, 0.1), LayerNorm(), Activation("erf"), Dense(1.0, 0.0)),
                  (6,)),
    "residual": (serial(Dense(1.0, 0.1), FanOut(2),
                        parallel(Identity(), serial(Activation("relu"), Dense(1.5, 0.1),
                                                    Dropout(0.3))),
                        FanInSum(), Activation("relu"), Dense(1.0, 0.0)), (6,)),
    "concat": (serial(FanOut(2), parallel(Dense(1.0, 0.0), Dense(2.0, 0.5)), FanInConcat(),
                      Activation("relu"), Dense(1.0, 0.0)), (6,)),
    "conv-flatten": (serial(Conv(1.5, 0.1, (2, 2)), Activation("relu"),
                            Conv(1.0, 0.1, (2, 2), strides=(2, 2), padding="VALID"),
                            Flatten(), Dense(1.0, 0.0)), (4, 4, 2)),
    "conv-pool": (serial(Conv(1.5, 0.1, (2, 2)), Activation("relu"), AvgPool((2, 2)),
                         Conv(1.0, 0.1, (2, 2)), Activation("erf"), GlobalAvgPool(),
                         Dense(1.0, 0.0)), (4, 4, 2)),
    "graph": (serial(Dense(1.0, 0.1), Aggregate(_ring(5)), Activation("relu"),
                     Dense(1.0, 0.1), Aggregate(_ring(5)), GlobalAvgPool(), Dense(1.0, 0.0)),
              (5, 2)),
    "rnn": (serial(SimpleRNN("erf", 1.5, 1.0, 0.1), SimpleRNN("relu", 1.2, 1.4, 0.2),
                   LastStep(), Dense(1.0, 0.0)), (4, 2)),
    "attention": (serial(Dense(1.0, 0.1), SelfAttention(1.5, 0.1, logit_var=1.0),
                         Activation("relu"), SelfAttention(1.0, 0.0, tied=False),
                         GlobalAvgPool(), Dense(1.0, 0.0)), (4, 3)),
    "transformer": (serial(PositionalEmbedding(0.5), Dense(1.0, 0.1), FanOut(2),
                           parallel(Identity(), SelfAttention(1.0, 0.1, logit_var=1.0)),
                           FanInSum(), LayerNorm(), FanOut(2),
                           parallel(Identity(), serial(Dense(2.0, 0.1), Activation("relu"),
                                                       Dense(1.0, 0.1))),
                           FanInSum(), LayerNorm(), GlobalAvgPool(), Dense(1.0, 0.0)),
                    (4, 3)),
    "rnn-mean": (serial(Dense(1.0, 0.1), SimpleRNN("erf", 1.3, 1.0, 0.1), GlobalAvgPool(),
                        Dense(1.0, 0.0)), (3, 2)),
    "gru": (serial(GRU("tanh", 1.5, 1.0, 0.1, tol=1e-3, max_points=2 ** 14), LastStep(),
                   Dense(1.0, 0.0)), (4, 2)),
    "batchnorm": (serial(Dense(1.0, 0.1), BatchNorm("relu"), Dense(1.5, 0.1),
                         BatchNorm("tanh", tol=2e-4), Dense(1.0, 0.0)), (6,)),
    "lstm": (serial(Dense(1.0, 0.1), LSTM("erf", 1.5, 1.2, 0.1, tol=1e-3, max_points=2 ** 14),
                    GlobalAvgPool(), Dense(1.0, 0.0)), (3, 2)),
    # 1/sqrt(n): linear layers after it, whose mean kernel is exact for any number of heads
    "attention-sqrt": (serial(Dense(1.0, 0.1),
                              SelfAttention(1.5, 0.1, logit_var=2.0, tied=False,
                                            scaling="1/sqrt(n)", heads=4),
                              GlobalAvgPool(), Dense(1.0, 0.0)), (4, 3)),
}


def _layer_classes(base=Layer):
    for cls in base.__subclasses__():
        if not cls.__name__.startswith("_"):
            yield cls
        yield from _layer_classes(cls)


def _inputs(shape, n=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + shape)
    return x * rng.uniform(0.6, 1.4, (n,) + (1,) * len(shape))


def test_every_layer_has_a_twin_and_an_example():
    pytest.importorskip("jax")
    from nngp_lut.finite_network import LAYERS

    used = {type(node) for net, _ in EXAMPLES.values() for node in net.walk()}
    for cls in set(_layer_classes()):
        assert cls in LAYERS, f"{cls.__name__} has no finite-network twin"
        assert cls in used, f"{cls.__name__} has no example in tests/test_registry.py"
        assert cls.lower is not Layer.lower or not cls.fused, \
            f"{cls.__name__} has no engine lowering"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_fused_layerwise_and_finite_network_agree(name):
    pytest.importorskip("jax")
    from nngp_lut import montecarlo as mc

    layer, shape = EXAMPLES[name]
    x = _inputs(shape)
    net = Network(layer)
    kinds = net.kinds
    reference = net.layerwise(x, get=kinds)
    if net.fused:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every fusable example runs fused
            fused = net.kernel(x, get=kinds)
        for kind, f, r in zip(kinds, fused, reference):
            assert np.max(np.abs(f - r)) <= TOL_ENGINE * np.abs(r).max(), kind
    # a network that is not self-averaging (attention at 1/sqrt(n)) has a random kernel at
    # every width: its mean over the draws (and heads) is the same check
    draws = list(mc._per_draw(layer, x, None, MC_WIDTH, MC_DRAWS, 0, kinds, 1, None))
    for kind, r in zip(kinds, reference):
        scale = np.abs(r).max()
        a = np.stack([d[kind] for d in draws])
        err = a.std(0, ddof=1) / math.sqrt(len(draws))
        bound = MC_SIGMAS * err + MC_BIAS * scale
        assert np.all(np.abs(a.mean(0) - r) <= bound), (kind, a.mean(0), r)
