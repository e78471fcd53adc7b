"""Finite random networks: the Monte-Carlo check of the infinite-width kernels.

A network of the layer algebra (:mod:`nngp_lut.kernel.layers`) describes a random finite
network as well as its infinite-width limit.  This module samples that finite network in
float64 with JAX (an optional dependency: ``pip install "nngp-lut[finite]"``) and estimates

* the empirical NNGP: the covariance of the output units, mean over draws and over all the
  output units (the readout layer has ``width`` units unless it declares its own);
* the empirical NTK: sum over all parameters of grad f_u(x) . grad f_u(x') for the first
  ``ntk_units`` output units u, mean over those units and the draws.  The gradients come
  from JAX's automatic differentiation (one ``vjp`` per input, then a ``jvp``), never from
  hand-written backpropagation.

Inputs are (n, d) vectors, (n, L, C) sequences or graphs, or (n, H, W, C) images.  A
network whose outputs keep spatial axes is read out as ``Flatten`` would be: both kernels
are means over the output positions of the positionwise ones (the NTK then costs one
``vjp`` per input and position); ``Network.kernel`` itself wants a Flatten or a
GlobalAvgPool before the readout.

By the GP correspondence (Neal 1996; Lee et al. 2018; Matthews et al. 2018; Yang 2019) and
the NTK's convergence at initialisation (Jacot et al. 2018; Yang 2020) the relative error
of both against :meth:`nngp_lut.kernel.Network.kernel` falls like 1/sqrt(width):
:func:`convergence` measures it over a list of widths and fits the log-log slope.

Each layer type has one small pair of functions in :data:`LAYERS`, keyed by the layer's
class: ``init(layer, key, n_in, width) -> (params, n_out)`` draws the parameters for an
input of ``n_in`` features (a tuple of them for branches), ``apply(layer, params, x)`` maps a
batch of inputs (n, n_in) to outputs.  As the layers' docstrings define them:

* ``Dense``: NTK parameterisation z = sqrt(w / n_in) W x + sqrt(b) beta, W, beta ~ N(0, 1);
  standard z = W x + beta, W ~ N(0, w / n_in), beta ~ N(0, b) (no beta when bias_var is
  None); on the last (channel) axis of images, as ``stax.Dense``;
* ``Conv``: the same with W x a cross-correlation over the filter's offsets
  (``lax.conv_general_dilated``, NHWC or NLC) and n_in = prod(filter_shape) C_in; SAME and
  VALID padding as lax's, CIRCULAR by wrapping the inputs round by SAME's padding first
  (neural-tangents' ``_same_pad_for_filter_shape``); ``width`` output channels;
* ``AvgPool``: window sums (``lax.reduce_window``) over the full window size, also where a
  SAME window reaches past the edge (``normalize_edges=False``); ``GlobalAvgPool``: the
  mean over the positions; ``Flatten``: the reshape to (n, H W C);
* ``Aggregate``: z_i = sum_j A_ij x_j over the nodes of (n, nodes, C) inputs;
* ``Activation``: phi in jax.numpy, built-ins by name and expressions translated from the
  same whitelisted syntax tree as :mod:`nngp_lut.activations` (phi' by autodiff);
* ``LayerNorm``: (z - mean(z)) / sqrt(var(z)) over the features of each example (the
  infinite-width rule K / sqrt(q1 q2) is its limit: the features' mean tends to 0 and their
  mean square to K(x, x)); over the channels of each position, over all positions and
  channels (``over="all"``) or over the positions of each channel (``"space"``, which has
  no Gaussian limit: sampled, but ``Network.kernel`` refuses it);
* ``Dropout`` (evaluation mode) and ``Identity``: the identity;
* ``FanOut``, ``parallel``, ``FanInSum``, ``FanInConcat``: branches, summed or concatenated.

Every draw has its own key, ``fold_in(fold_in(key(seed), width), draw)``: a run is
reproducible from its integer seed, and a run with more draws extends one with fewer.
Everything runs under JAX's 64-bit mode, switched on only inside this module's calls.

References
----------
Neal, "Bayesian Learning for Neural Networks", 1996, ch. 2.
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018.
Jacot et al., "Neural Tangent Kernel", NeurIPS 2018, Theorems 1 and 2.
Yang, "Wide Feedforward or Recurrent Neural Networks of Any Architecture are Gaussian
Processes" (GP4A), NeurIPS 2019, the convergence plots; "Tensor Programs II", 2020.
Novak et al., "Neural Tangents", ICLR 2020 (empirical kernels; LayerNorm).
Novak et al., "Bayesian Deep Convolutional Networks with Many Channels are Gaussian
Processes", ICLR 2019 (the finite CNNs whose NNGP is the convolutional one, their Fig. 1
Monte Carlo); Garriga-Alonso et al., ICLR 2019; Du et al., "Graph Neural Tangent Kernel",
NeurIPS 2019 (aggregation).
"""

import ast
import contextlib
import dataclasses
import functools
import math

import numpy as np

try:
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jsp_special
except ImportError as exc:  # the infinite-width engine never needs JAX
    raise ImportError('nngp_lut.montecarlo needs JAX: pip install "nngp-lut[finite]" '
                      f'(import failed: {exc})') from exc

from .activations import _FUNCTIONS, _to_source
from .data import validate_inputs
from .errors import DataError, MemoryBudgetError, ParameterError
from .kernel import Network
from .kernel.layers import (Activation, Aggregate, ArchitectureError, AvgPool, Conv, Dense,
                            Dropout, FanInConcat, FanInSum, FanOut, Flatten, GlobalAvgPool,
                            Identity, Layer, LayerNorm, Parallel, Serial)

#: The kernels an estimate can give.
KINDS = ("nngp", "ntk")


@contextlib.contextmanager
def _x64():
    """JAX's 64-bit mode for the duration of one call (not process-wide)."""
    switch = getattr(jax, "enable_x64", None)
    if switch is None:  # jax < 0.6
        from jax.experimental import enable_x64 as switch
        with switch():
            yield
        return
    with switch(True):
        yield


# --- activations in jax.numpy ------------------------------------------------------------------
def _heaviside(x):
    return jnp.where(x > 0, 1.0, 0.0)


#: Built-in activations (nngp_lut.activations' registry) as jax.numpy functions.
BUILTINS = {
    "relu": lambda x: jnp.maximum(x, 0.0),
    "abs": jnp.abs,
    "step": _heaviside,
    "identity": lambda x: x,
    "tanh": jnp.tanh,
    "erf": jsp_special.erf,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "sin": jnp.sin,
    "cos": jnp.cos,
}
# The functions an expression may call are the whitelist of nngp_lut.activations
# (_FUNCTIONS, numpy-style names); each is jax.numpy's function of the same name but these.
_JAX_EXPRESSION_OVERRIDES = {"erf": jsp_special.erf, "erfc": jsp_special.erfc,
                             "heaviside": _heaviside}


def _expression_namespace():
    names = {name: _JAX_EXPRESSION_OVERRIDES.get(name) or getattr(jnp, name)
             for name in _FUNCTIONS}
    return dict(names, pi=math.pi, e=math.e, __builtins__={})


def jax_activation(layer):
    """phi of an :class:`~nngp_lut.kernel.layers.Activation` layer as a jax.numpy function.

    Built-ins map to jax.numpy; ``leaky_relu(slope=s)`` to ``where(x > 0, x, s x)``; an
    expression is checked by the whitelist of :mod:`nngp_lut.activations` (the same
    ``_to_source`` that compiles it for Numba) and then compiled over jax.numpy.  A table
    file is read for the activation it names.

    Raises
    ------
    ArchitectureError
        For a Python-callable activation, which has no JAX form.
    """
    name, source = layer.key
    if name == "path":  # a table file: the activation it was built for
        name, source = Activation(layer.table).key
    if name in BUILTINS:
        return BUILTINS[name]
    if name.startswith("leaky_relu(slope="):
        slope = float(name[len("leaky_relu(slope="):-1])
        return lambda x: jnp.where(x > 0, x, slope * x)
    if name.startswith("expr:"):
        tree = ast.parse(source, mode="eval")
        _to_source(tree)  # raises ExpressionError outside the whitelist
        namespace = _expression_namespace()
        # Only whitelisted nodes reach here (x, pi, e, numbers, arithmetic, whitelisted
        # calls), evaluated with no builtins: the same argument as activations.py's exec.
        exec(f"def phi(x):\n    return {ast.unparse(tree)}\n", namespace)  # noqa: S102
        return namespace["phi"]
    raise ArchitectureError(f"activation {name!r} has no JAX form for the Monte Carlo: use a "
                            "built-in or an expression in x")


# --- one pair of functions per layer type ------------------------------------------------------
class _Branches(tuple):
    """The per-input shapes of the branches after a FanOut (one shape per branch)."""


def _single(layer, shape):
    if isinstance(shape, _Branches):
        raise ArchitectureError(f"{layer!r} takes one input but gets {len(shape)} branches; "
                                "join them with FanInSum() or FanInConcat() first")
    return shape


def _dense_init(layer, key, shape, width):
    if isinstance(shape, _Branches):
        raise ArchitectureError(f"{layer!r} gets {len(shape)} branches; join them first")
    n_in, n_out = shape[-1], int(layer.width or width)  # on the channels, as stax.Dense
    kw, kb = jax.random.split(key)
    params = {"W": jax.random.normal(kw, (n_in, n_out), jnp.float64)}
    if layer.bias_var is not None:
        params["b"] = jax.random.normal(kb, (n_out,), jnp.float64)
    if layer.parameterization == "standard":  # the variances are in the parameters
        params["W"] = params["W"] * math.sqrt(layer.weight_var / n_in)
        if "b" in params:
            params["b"] = params["b"] * math.sqrt(layer.bias_var)
    return params, shape[:-1] + (n_out,)


def _dense_apply(layer, params, x):
    if layer.parameterization == "standard":
        z = x @ params["W"]
        return z + params["b"] if "b" in params else z
    z = math.sqrt(layer.weight_var / x.shape[-1]) * (x @ params["W"])
    return z + math.sqrt(layer.bias_var) * params["b"] if "b" in params else z


def _spatial(layer, shape, axes, what):
    """The spatial sizes of a one-input layer whose ``what`` spans ``axes`` spatial axes."""
    shape = _single(layer, shape)
    if len(shape) != axes + 1:
        layout = "(N, L, C)" if axes == 1 else "(N, H, W, C)"
        raise ArchitectureError(f"{layer!r} has a {axes}-D {what} and needs {layout} inputs, "
                                f"got inputs of shape (N, {', '.join(map(str, shape))})")
    return shape[:-1]


def _out_sizes(layer, sizes, window, strides, padding):
    """Output positions per axis (neural-tangents' and lax's rule): ceil(n / s) with SAME or
    CIRCULAR padding, floor((n - window) / s) + 1 with VALID."""
    if padding != "VALID":
        return tuple(-(-n // s) for n, s in zip(sizes, strides))
    if any(n < f for n, f in zip(sizes, window)):
        raise ArchitectureError(f"{layer!r}: the window {tuple(window)} is larger than the "
                                f"inputs' {tuple(sizes)} positions with VALID padding")
    return tuple((n - f) // s + 1 for n, f, s in zip(sizes, window, strides))


def _circular_pad(x, window, strides):
    """Wrap the spatial axes around so that a VALID window gives SAME's output positions
    (neural-tangents' CIRCULAR padding, ``_same_pad_for_filter_shape``)."""
    pads = jax.lax.padtype_to_pads(x.shape[1:-1], window, strides, "SAME")
    return jnp.pad(x, [(0, 0), *pads, (0, 0)], mode="wrap")


def _conv_init(layer, key, shape, width):
    sizes = _spatial(layer, shape, len(layer.filter_shape), "filter")
    c_in, c_out = shape[-1], int(layer.width or width)
    kw, kb = jax.random.split(key)
    params = {"W": jax.random.normal(kw, layer.filter_shape + (c_in, c_out), jnp.float64)}
    if layer.bias_var is not None:
        params["b"] = jax.random.normal(kb, (c_out,), jnp.float64)
    if layer.parameterization == "standard":
        params["W"] = params["W"] * math.sqrt(layer.weight_var
                                              / (math.prod(layer.filter_shape) * c_in))
        if "b" in params:
            params["b"] = params["b"] * math.sqrt(layer.bias_var)
    out = _out_sizes(layer, sizes, layer.filter_shape, layer.stride, layer.padding)
    return params, out + (c_out,)


def _conv_apply(layer, params, x):
    padding = layer.padding
    if padding == "CIRCULAR":
        x, padding = _circular_pad(x, layer.filter_shape, layer.stride), "VALID"
    spec = ("NHC", "HIO", "NHC") if len(layer.filter_shape) == 1 else ("NHWC", "HWIO", "NHWC")
    z = jax.lax.conv_general_dilated(x, params["W"], layer.stride, padding,
                                     dimension_numbers=spec)  # a cross-correlation
    if layer.parameterization == "standard":
        return z + params["b"] if "b" in params else z
    fan_in = math.prod(layer.filter_shape) * x.shape[-1]
    z = math.sqrt(layer.weight_var / fan_in) * z
    return z + math.sqrt(layer.bias_var) * params["b"] if "b" in params else z


def _avgpool_init(layer, key, shape, width):
    sizes = _spatial(layer, shape, len(layer.window_shape), "window")
    return {}, _out_sizes(layer, sizes, layer.window_shape, layer.stride,
                          layer.padding) + (shape[-1],)


def _avgpool_apply(layer, params, x):
    window, strides, padding = layer.window_shape, layer.stride, layer.padding
    if padding == "CIRCULAR":
        x, padding = _circular_pad(x, window, strides), "VALID"
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *window, 1), (1, *strides, 1),
                                  padding)
    return total / math.prod(window)  # the full window even past the edge (SAME)


def _global_avgpool_init(layer, key, shape, width):
    if len(_single(layer, shape)) < 2:
        raise ArchitectureError("GlobalAvgPool needs inputs with spatial axes, (N, L, C) or "
                                f"(N, H, W, C); got (N, {shape[0]})")
    return {}, shape[-1:]


def _global_avgpool_apply(layer, params, x):
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def _flatten_init(layer, key, shape, width):
    return {}, (math.prod(_single(layer, shape)),)


def _flatten_apply(layer, params, x):
    return x.reshape(x.shape[0], -1)


def _layernorm_apply(layer, params, x):
    over = getattr(layer, "over", "channels")
    spatial = tuple(range(1, x.ndim - 1))
    axes = {"all": spatial + (x.ndim - 1,), "space": spatial or (-1,)}.get(over, (-1,))
    centred = x - jnp.mean(x, axis=axes, keepdims=True)
    return centred / jnp.sqrt(jnp.mean(centred * centred, axis=axes, keepdims=True))


def _aggregate_init(layer, key, shape, width):
    shape = _single(layer, shape)
    if len(shape) != 2 or shape[0] != layer.nodes:
        raise ArchitectureError(f"{layer!r} needs (N, {layer.nodes}, C) inputs (nodes, "
                                f"channels), got (N, {', '.join(map(str, shape))})")
    return {}, shape


def _aggregate_apply(layer, params, x):
    return jnp.einsum("ij,njc->nic", jnp.asarray(layer.dense()), x)  # z_i = sum_j A_ij x_j


def _single_init(layer, key, shape, width):
    return {}, _single(layer, shape)


def _activation_apply(layer, params, x):
    return jax_activation(layer)(x)


def _identity_apply(layer, params, x):
    return x


def _fanout_init(layer, key, shape, width):
    return {}, _Branches((_single(layer, shape),) * int(layer.n))


def _fanout_apply(layer, params, x):
    return (x,) * int(layer.n)


def _branches_init(layer, key, shapes, width):
    if not isinstance(shapes, _Branches):
        raise ArchitectureError(f"{type(layer).__name__} joins branches: put FanOut(n) and "
                                "parallel(...) before it")
    if isinstance(layer, FanInSum):
        if len(set(shapes)) != 1:
            raise ArchitectureError(f"FanInSum needs branches of equal shapes, got "
                                    f"{list(shapes)}")
        return {}, shapes[0]
    if len({s[:-1] for s in shapes}) != 1:
        raise ArchitectureError(f"FanInConcat joins channels of branches with equal spatial "
                                f"shapes, got {list(shapes)}")
    return {}, shapes[0][:-1] + (sum(s[-1] for s in shapes),)


def _fanin_sum_apply(layer, params, xs):
    return sum(xs[1:], xs[0])


def _fanin_concat_apply(layer, params, xs):
    return jnp.concatenate(xs, axis=-1)


def _serial_init(layer, key, shape, width):
    params = []
    for child, k in zip(layer.children, jax.random.split(key, max(1, len(layer.children)))):
        p, shape = _init(child, k, shape, width)
        params.append(p)
    return params, shape


def _serial_apply(layer, params, x):
    for child, p in zip(layer.children, params):
        x = _apply(child, p, x)
    return x


def _parallel_init(layer, key, shapes, width):
    if not isinstance(shapes, _Branches) or len(shapes) != len(layer.children):
        got = len(shapes) if isinstance(shapes, _Branches) else 1
        raise ArchitectureError(f"parallel has {len(layer.children)} layers but gets {got} "
                                "branches")
    out = [_init(child, k, s, width) for child, k, s in
           zip(layer.children, jax.random.split(key, len(layer.children)), shapes)]
    return [p for p, _ in out], _Branches(s for _, s in out)


def _parallel_apply(layer, params, xs):
    return tuple(_apply(child, p, x) for child, p, x in zip(layer.children, params, xs))


#: {layer class: (init, apply)}; see the module docstring.
LAYERS = {
    Dense: (_dense_init, _dense_apply),
    Conv: (_conv_init, _conv_apply),
    AvgPool: (_avgpool_init, _avgpool_apply),
    GlobalAvgPool: (_global_avgpool_init, _global_avgpool_apply),
    Flatten: (_flatten_init, _flatten_apply),
    Aggregate: (_aggregate_init, _aggregate_apply),
    Activation: (_single_init, _activation_apply),
    LayerNorm: (_single_init, _layernorm_apply),
    Identity: (_single_init, _identity_apply),
    Dropout: (_single_init, _identity_apply),
    FanOut: (_fanout_init, _fanout_apply),
    FanInSum: (_branches_init, _fanin_sum_apply),
    FanInConcat: (_branches_init, _fanin_concat_apply),
    Serial: (_serial_init, _serial_apply),
    Parallel: (_parallel_init, _parallel_apply),
}


def _rules(layer):
    try:
        return LAYERS[type(layer)]
    except KeyError:
        raise ArchitectureError(f"{type(layer).__name__} has no finite network in "
                                "nngp_lut.montecarlo") from None


def _init(layer, key, shape, width):
    """(params, output shape) of ``layer`` for inputs of per-input ``shape`` (an int d is
    the shape (d,))."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    elif not isinstance(shape, _Branches):
        shape = tuple(int(v) for v in shape)
    return _rules(layer)[0](layer, key, shape, width)


def _apply(layer, params, x):
    return _rules(layer)[1](layer, params, x)


# --- estimates -----------------------------------------------------------------------------
def _layer_of(network):
    layer = network.layer if isinstance(network, Network) else network
    if not isinstance(layer, Layer):
        raise TypeError(f"expected a layer or a Network, got {type(network).__name__}")
    return layer


def with_width(network, width):
    """The network with ``width`` on every Dense and Conv that declares none (the widths
    (channels) of the finite network that :func:`empirical_kernels` samples; the infinite-width kernel
    depends on them only in the standard parameterisation)."""
    layer = _layer_of(network)
    if isinstance(layer, (Dense, Conv)):
        return layer if layer.width is not None else dataclasses.replace(layer, width=width)
    if isinstance(layer, (Serial, Parallel)):
        return dataclasses.replace(layer, children=tuple(with_width(c, width)
                                                         for c in layer.children))
    return layer


@functools.lru_cache(maxsize=16)
def _draw_function(layer, in_shape, width, kinds, ntk_units):
    """A jitted ``draw(key, x) -> (nngp, ntk)`` of one random network of this width (kept
    for the next call with the same arguments: layers are immutable and hashable)."""

    def draw(key, x):
        params, out_shape = _init(layer, key, in_shape, width)
        if isinstance(out_shape, _Branches):
            raise ArchitectureError("the network ends in branches: join them with "
                                    "FanInSum() or FanInConcat()")
        n = x.shape[0]
        f = _apply(layer, params, x)
        features = f.reshape(n, -1)  # positions x channels: the mean over both (Flatten's)
        nngp = features @ features.T / features.shape[1] if "nngp" in kinds else None
        if "ntk" not in kinds:
            return nngp, None
        if ntk_units > out_shape[-1]:
            raise ArchitectureError(f"ntk_units={ntk_units} is more than the network's "
                                    f"{out_shape[-1]} outputs")
        positions = math.prod(out_shape[:-1])
        ntk = jnp.zeros((n, n))
        for unit in range(ntk_units):
            def out(p, unit=unit):  # unit u at every output position: (n, positions)
                return _apply(layer, p, x)[..., unit].reshape(n, positions)
            _, pullback = jax.vjp(out, params)

            def row(index, out=out, pullback=pullback):
                a, position = index // positions, index % positions
                cotangent = jnp.zeros((n, positions)).at[a, position].set(1.0)
                (grad,) = pullback(cotangent)  # grad f_u(x_a) at one position
                # its products with the gradients of every input at that position
                return jax.jvp(out, (params,), (grad,))[1][:, position]

            rows = jax.lax.map(row, jnp.arange(n * positions))
            ntk = ntk + rows.reshape(n, positions, n).mean(axis=1)
        return nngp, ntk / ntk_units

    return jax.jit(draw)


def _inputs(x, name):
    """Inputs as a float64 array (n, d), (n, L, C) or (n, H, W, C): finite, not empty."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} is not numeric") from None
    if a.ndim <= 2:
        return validate_inputs(a, name)
    if 0 in a.shape:
        raise DataError(f"{name} is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} has a NaN or inf value (input "
                        f"{np.argwhere(~np.isfinite(a))[0][0]})")
    return np.ascontiguousarray(a)


def _per_draw(layer, x1, x2, width, draws, seed, kinds, ntk_units, progress):
    """Yield {kind: (n1, n2) kernel} of each random network in turn."""
    if int(width) != width or width < 1:
        raise ValueError(f"width must be a positive integer, got {width}")
    if int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws}")
    if int(ntk_units) != ntk_units or ntk_units < 1:
        raise ValueError(f"ntk_units must be a positive integer, got {ntk_units}")
    x1 = _inputs(x1, "x1")
    n1 = x1.shape[0]
    if x2 is not None:
        x2 = _inputs(x2, "x2")
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x1 has inputs of shape {x1.shape[1:]} but x2 has "
                             f"{x2.shape[1:]}")
    x = x1 if x2 is None else np.concatenate([x1, x2])
    cols = slice(None, n1) if x2 is None else slice(n1, None)
    if not -2**63 <= int(seed) < 2**63:
        raise ParameterError(f"seed must lie in [-2**63, 2**63), got {seed}")
    with _x64():
        _check_size(layer, x.shape[1:], int(width))
        draw = _draw_function(layer, x.shape[1:], int(width), kinds, int(ntk_units))
        xj = jnp.asarray(x, dtype=jnp.float64)
        root = _fold_in(jax.random.key(int(seed)), int(width))
        for d in range(int(draws)):
            values = dict(zip(KINDS, draw(jax.random.fold_in(root, d), xj)))
            yield {kind: np.asarray(values[kind], dtype=np.float64)[:n1, cols]
                   for kind in kinds}
            if progress:
                progress(d + 1, int(draws))


def _fold_in(key, value):
    """``jax.random.fold_in`` of a non-negative integer of any size, 32 bits at a time
    (fold_in takes uint32): a value below 2**32 gives the key it always gave."""
    key = jax.random.fold_in(key, value & 0xFFFFFFFF)
    while value >> 32:
        value >>= 32
        key = jax.random.fold_in(key, value & 0xFFFFFFFF)
    return key


#: Bytes per parameter of a sampled network in memory: the parameters, a gradient and a
#: tangent (the empirical NTK), float64, with room for the activations.
PARAMETER_BYTES = 4 * 8


def _check_size(layer, in_shape, width):
    """Refuse, before any array is made, a width whose network does not fit the memory
    available (its parameter shapes are traced, not allocated)."""
    from .linalg import available_memory

    shapes = jax.eval_shape(lambda key: _init(layer, key, in_shape, width)[0],
                            jax.random.key(0))
    need = PARAMETER_BYTES * sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes))
    have = available_memory()
    if need > have:
        raise MemoryBudgetError(f"a network of width {width} needs about {need / 1e9:.3g} GB "
                                f"(its {need // PARAMETER_BYTES} parameters, their gradients "
                                f"and tangents), more than the {have / 1e9:.3g} GB available; "
                                "choose smaller widths")


def _kinds(get):
    kinds = (get,) if isinstance(get, str) else tuple(get)
    if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        raise ValueError(f"get must be 'nngp', 'ntk' or both as a tuple, got {get!r}")
    return kinds


def empirical_kernels(network, x1, x2=None, *, width, draws, seed, get=KINDS, ntk_units=1,
                      progress=None):
    """The empirical NNGP and NTK of random finite networks of one width.

    Parameters
    ----------
    network : Layer or Network
        The architecture (its Dense layers without a declared ``width`` get ``width``
        units, the readout included).
    x1, x2 : array_like (n1, ...), (n2, ...)
        Inputs, (n, d) vectors, (n, L, C) or (n, H, W, C); ``x2=None`` pairs x1 with itself.
    width : int
        Units of every Dense, channels of every Conv, that declares none.
    draws : int
        Independent random networks to average over.
    seed : int
        Seed of the draws (see the module docstring).
    get : "nngp", "ntk" or a tuple of them
    ntk_units : int
        Output units whose NTK is averaged (each costs a vjp and a jvp per input).
    progress : callable, optional
        ``progress(done, draws)`` after each draw.

    Returns
    -------
    dict
        {"nngp": (n1, n2) array, "ntk": (n1, n2) array} for the kinds asked.
    """
    kinds = _kinds(get)
    total = None
    for k in _per_draw(_layer_of(network), x1, x2, width, draws, seed, kinds, ntk_units,
                       progress):
        total = k if total is None else {kind: total[kind] + k[kind] for kind in kinds}
    return {kind: total[kind] / draws for kind in kinds}


def relative_error(estimate, exact):
    """||estimate - exact||_F / ||exact||_F."""
    return float(np.linalg.norm(estimate - exact) / np.linalg.norm(exact))


def loglog_slope(widths, errors):
    """The least-squares slope of log(error) against log(width) (-1/2 for 1/sqrt(width))."""
    return float(np.polyfit(np.log(widths), np.log(errors), 1)[0])


def convergence(network, x, widths, draws, seed, *, get=KINDS, ntk_units=1,
                reference="kernel", progress=None):
    """The error of the empirical kernels against the infinite-width ones
    (``Network.kernel``) at each width, and the fitted log-log slopes.

    Two errors per kernel, both relative to ||K||_F (K the infinite-width kernel):

    * ``{kind}_error``: ||K_emp - K||_F, K_emp the mean over the ``draws`` networks (what
      :func:`empirical_kernels` returns);
    * ``{kind}_rms``: sqrt(mean_d ||K_d - K||_F^2 / draws), K_d the kernel of network d: the
      root-mean-square error that a mean of ``draws`` networks has, estimated from the
      spread of the draws.  Both fall like 1/sqrt(width); the first is one sample of a norm
      of a few dominant random modes (its spread is a large fraction of its value whatever
      the draws), the second averages over the draws, so its slope is the steadier figure.

    Parameters
    ----------
    network : Layer or Network
    x : array_like (n, d), (n, L, C) or (n, H, W, C)
        Inputs (used as they are: standardise them first if the network expects it).
    widths : sequence of int
        Widths of the finite networks (two or more for a slope).
    draws, seed, get, ntk_units
        As :func:`empirical_kernels`.
    reference : {"kernel", "layerwise"}
        The infinite-width kernel to compare with: the fused ``Network.kernel`` (the one
        every command uses) or its layer-by-layer reference ``Network.layerwise``.
    progress : callable, optional
        ``progress(done, total)`` in draws over all widths.

    Returns
    -------
    rows : list of dict
        Per width: ``width``, ``draws``, then ``{kind}_error`` and ``{kind}_rms`` for the
        kinds asked.
    slopes : dict
        ``{kind}_error`` and ``{kind}_rms``: the fitted slope of log error against log width
        (NaN for a single width).
    """
    layer = _layer_of(network)
    kinds = _kinds(get)
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1 or len(set(widths)) != len(widths):
        raise ValueError(f"widths must be distinct positive integers, got {widths}")
    if reference not in ("kernel", "layerwise"):
        raise ValueError(f"reference must be 'kernel' or 'layerwise', got {reference!r}")
    x = _inputs(x, "x")
    rows, total = [], len(widths) * int(draws)
    for i, width in enumerate(widths):
        sized = with_width(layer, width)
        exact = dict(zip(kinds, getattr(Network(sized), reference)(x, get=kinds)))
        step = progress and (lambda done, _n, i=i: progress(i * int(draws) + done, total))
        sums = {kind: 0.0 for kind in kinds}
        squares = {kind: 0.0 for kind in kinds}
        for k in _per_draw(sized, x, None, width, draws, seed, kinds, ntk_units, step):
            for kind in kinds:
                sums[kind] = sums[kind] + k[kind]
                squares[kind] += np.linalg.norm(k[kind] - exact[kind]) ** 2
        row = {"width": width, "draws": int(draws)}
        for kind in kinds:
            norm = np.linalg.norm(exact[kind])
            row[f"{kind}_error"] = relative_error(sums[kind] / draws, exact[kind])
            row[f"{kind}_rms"] = float(math.sqrt(squares[kind] / draws / draws) / norm)
        rows.append(row)
    slopes = {name: (loglog_slope(widths, [r[name] for r in rows]) if len(widths) > 1
                     else math.nan)
              for name in rows[0] if name.endswith(("_error", "_rms"))}
    return rows, slopes


__all__ = ["BUILTINS", "KINDS", "LAYERS", "convergence",
           "empirical_kernels", "jax_activation", "loglog_slope", "relative_error",
           "with_width"]
