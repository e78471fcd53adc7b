"""Random architectures of the ``--arch`` grammar, for property tests and
``bench/bench_random_arch.py`` (issue #20).

``random_network(seed)`` draws a network of vectors (even seeds) or of 4x4 images (odd
seeds) from blocks that each start after a Dense or a Conv and end in one: activations,
LayerNorm, residual branches joined by FanInSum, concatenated branches joined by
FanInConcat (with an Activation right after the join, whose kernel is a mixture), pooling,
and a Flatten or GlobalAvgPool readout (sometimes with an Activation after it).  A quarter of
the networks use the standard parameterisation (every Dense and Conv declares width 64, as
its NTK needs).  Activations are relu and one of erf or gelu per network (the fused engine
holds one unequal-variance table at a time).  Biases are positive, so no unit has variance 0.
"""

import numpy as np

from nngp_lut.kernel import (Activation, AvgPool, Conv, Dense, FanInConcat, FanInSum, FanOut,
                             Flatten, GlobalAvgPool, Identity, LayerNorm, parallel, serial)

#: The image inputs' shape (H, W, C) and the vector inputs' dimension.
IMAGE_SHAPE = (4, 4, 2)
VECTOR_DIM = 6
#: The finite width declared by standard-parameterisation layers.
STANDARD_WIDTH = 64


def random_network(seed):
    """(layer, kind, activations): a random network, "vector" or "image", and the set of
    activation names it uses."""
    rng = np.random.default_rng(seed)
    image = seed % 2 == 1
    param = "standard" if rng.random() < 0.25 else "ntk"
    width = STANDARD_WIDTH if param == "standard" else None
    general = str(rng.choice(["erf", "gelu"]))
    used = set()

    def act():
        name = "relu" if rng.random() < 0.5 else general
        used.add(name)
        return Activation(name)

    def var(lo, hi):
        return float(np.round(rng.uniform(lo, hi), 2))

    def dense(last=False):
        return Dense(var(0.5, 2.0), var(0.05, 0.5), param, None if last else width)

    def conv():
        k = int(rng.integers(1, 4))
        pad = str(rng.choice(["SAME", "CIRCULAR"]))
        return Conv(var(0.5, 2.0), var(0.05, 0.5), filter_shape=(k, k), padding=pad,
                    parameterization=param, width=width)

    affine = conv if image else dense
    blocks = {
        "act": lambda: [act(), affine()],
        "layernorm": lambda: [LayerNorm(str(rng.choice(["channels", "all"])) if image
                                        else "channels"), act(), affine()],
        "residual": lambda: [FanOut(2), parallel(serial(act(), affine()), Identity()),
                             FanInSum()],
        "concat": lambda: [FanOut(2), parallel(affine(), serial(act(), affine())),
                           FanInConcat(), act(), affine()],
    }
    names = sorted(blocks) + (["pool"] if image else [])
    if image:
        blocks["pool"] = lambda: [act(), AvgPool((2, 2), padding=str(
            rng.choice(["SAME", "VALID"]))), affine()]
    layers = [affine()]
    pooled = False
    for _ in range(int(rng.integers(1, 4))):
        name = str(rng.choice(names))
        if name == "pool" and pooled:  # 4x4 -> 2x2 once; a second would leave 1x1
            name = "act"
        pooled |= name == "pool"
        layers += blocks[name]()
    if image:
        layers.append(Flatten() if rng.random() < 0.5 else GlobalAvgPool())
        if rng.random() < 0.5:  # an Activation after the readout: a mixture over positions
            layers += [act(), dense()]
    else:
        layers.append(act())
    layers.append(dense(last=True))
    return serial(*layers), "image" if image else "vector", used


def random_inputs(kind, n, seed):
    """n inputs of the kind, of unit mean square per feature (unequal norms)."""
    rng = np.random.default_rng(seed)
    shape = IMAGE_SHAPE if kind == "image" else (VECTOR_DIM,)
    x = rng.standard_normal((n,) + shape)
    return x * rng.uniform(0.6, 1.4, (n,) + (1,) * len(shape))
