"""The finite network of an architecture, in JAX: one builder for sampling and training.

A network of the layer algebra (:mod:`nngp_lut.kernel.layers`) describes a random finite
network as well as its infinite-width limit.  :func:`finite_network` makes that finite
network in float64 with JAX (an optional dependency: ``pip install "nngp-lut[finite]"``) as
a pair of functions, in the manner of neural-tangents' ``stax``: ``init(key, in_shape) ->
(params, out_shape)`` draws its parameters, ``apply(params, x)`` maps a batch of inputs
(n, d) vectors, (n, L, C) sequences or graphs, or (n, H, W, C) images.  The Monte Carlo
(:mod:`nngp_lut.montecarlo`, ``nngp-lut mc``) samples it, the training
(:mod:`nngp_lut.finite`, ``nngp-lut compare``) starts from the same draw: draw ``d`` of
seed ``s`` at width ``w`` has the key :func:`draw_key` ``(s, w, d)``,
``fold_in(fold_in(key(s), w), d)``.

Each layer type has one small pair of functions in :data:`LAYERS`, keyed by the layer's
class: ``init(layer, key, shape) -> (params, out_shape)`` draws the parameters for inputs
of per-input ``shape`` (a tuple of them for branches), ``apply(layer, params, x)`` maps a
batch.  As the layers' docstrings define them:

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
* ``SimpleRNN``: h_t = phi(sqrt(w / n) W h_{t-1} + sqrt(u / C) U x_t + sqrt(b) beta) over
  the time axis of (n, T, C) sequences (``lax.scan``), h_0 = 0, W, U, beta ~ N(0, 1);
  ``GRU`` and ``LSTM``: their layers' docstrings, one W, U, beta per gate (``lax.scan``);
* ``BatchNorm``: each unit centred and scaled over the batch (the inputs of one call), then
  phi;
  ``LastStep``: h_T; ``SelfAttention``: softmax(logit_var / n q k^T) v over the positions
  (q = k for tied weights), or softmax(sqrt(logit_var / n) q k^T) v at scaling "1/sqrt(n)",
  per head, several heads concatenated and mapped back by W_O / sqrt(heads n) (its layer's
  docstring); ``PositionalEmbedding``: x + sqrt(b) P
  with P ~ N(0, 1) per position and channel, shared by every input;
* ``Activation``: phi in jax.numpy, built-ins by name and expressions translated from the
  same whitelisted syntax tree as :mod:`nngp_lut.activations` (phi' by autodiff);
* ``LayerNorm``: (z - mean(z)) / sqrt(var(z)) over the features of each example (the
  infinite-width rule K / sqrt(q1 q2) is its limit: the features' mean tends to 0 and their
  mean square to K(x, x)); over the channels of each position, over all positions and
  channels (``over="all"``) or over the positions of each channel (``"space"``, which has
  no Gaussian limit: sampled, but ``Network.kernel`` refuses it);
* ``Dropout`` (evaluation mode) and ``Identity``: the identity;
* ``FanOut``, ``parallel``, ``FanInSum``, ``FanInConcat``: branches, summed or concatenated.

Everything runs under JAX's 64-bit mode, switched on only inside :func:`x64`.

References
----------
Novak et al., "Neural Tangents", ICLR 2020 (``stax``: init and apply functions; LayerNorm).
Novak et al., "Bayesian Deep Convolutional Networks with Many Channels are Gaussian
Processes", ICLR 2019 (the finite CNNs); Du et al., "Graph Neural Tangent Kernel", NeurIPS
2019 (aggregation).
"""

import ast
import contextlib
import dataclasses
import math

import numpy as np

try:
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jsp_special
except ImportError as exc:  # the infinite-width engine never needs JAX
    raise ImportError('nngp_lut.finite_network needs JAX: pip install "nngp-lut[finite]" '
                      f'(import failed: {exc})') from exc

from .activations import _FUNCTIONS, _to_source
from .data import validate_inputs
from .errors import DataError, ParameterError
from .kernel import Network
from .kernel.layers import (GRU, LSTM, Activation, Aggregate, ArchitectureError, AvgPool,
                            BatchNorm, Conv, Dense, Dropout, FanInConcat, FanInSum, FanOut,
                            Flatten, GlobalAvgPool, Identity, LastStep, Layer, LayerNorm,
                            Parallel, PositionalEmbedding, SelfAttention, Serial, SimpleRNN,
                            single_input)

__all__ = ["BUILTINS", "LAYERS", "FiniteNetwork", "as_inputs", "as_layer", "draw_key",
           "finite_network", "jax_activation", "with_width", "x64"]


@contextlib.contextmanager
def x64():
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
    return single_input(layer, shape, _Branches)


def _width(layer):
    """The declared width of a Dense or Conv (finite_network's ``width`` fills it in)."""
    if layer.width is None:
        raise ArchitectureError(f"{layer!r} has no width: give finite_network a width")
    return int(layer.width)


def _dense_init(layer, key, shape):
    if isinstance(shape, _Branches):
        raise ArchitectureError(f"{layer!r} gets {len(shape)} branches; join them first")
    n_in, n_out = shape[-1], _width(layer)  # on the channels, as stax.Dense
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


def _conv_init(layer, key, shape):
    sizes = _spatial(layer, shape, len(layer.filter_shape), "filter")
    c_in, c_out = shape[-1], _width(layer)
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


def _avgpool_init(layer, key, shape):
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


def _global_avgpool_init(layer, key, shape):
    if len(_single(layer, shape)) < 2:
        raise ArchitectureError("GlobalAvgPool needs inputs with spatial axes, (N, L, C) or "
                                f"(N, H, W, C); got (N, {shape[0]})")
    return {}, shape[-1:]


def _global_avgpool_apply(layer, params, x):
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def _flatten_init(layer, key, shape):
    return {}, (math.prod(_single(layer, shape)),)


def _flatten_apply(layer, params, x):
    return x.reshape(x.shape[0], -1)


def _layernorm_apply(layer, params, x):
    over = getattr(layer, "over", "channels")
    spatial = tuple(range(1, x.ndim - 1))
    axes = {"all": spatial + (x.ndim - 1,), "space": spatial or (-1,)}.get(over, (-1,))
    centred = x - jnp.mean(x, axis=axes, keepdims=True)
    return centred / jnp.sqrt(jnp.mean(centred * centred, axis=axes, keepdims=True))


def _aggregate_init(layer, key, shape):
    shape = _single(layer, shape)
    if len(shape) != 2 or shape[0] != layer.nodes:
        raise ArchitectureError(f"{layer!r} needs (N, {layer.nodes}, C) inputs (nodes, "
                                f"channels), got (N, {', '.join(map(str, shape))})")
    return {}, shape


def _aggregate_apply(layer, params, x):
    return jnp.einsum("ij,njc->nic", jnp.asarray(layer.dense()), x)  # z_i = sum_j A_ij x_j


def _rnn_init(layer, key, shape):
    steps, c_in = _spatial(layer, shape, 1, "time axis")[0], shape[-1]
    n = _width(layer)
    kw, ku, kb = jax.random.split(key, 3)
    return {"W": jax.random.normal(kw, (n, n), jnp.float64),
            "U": jax.random.normal(ku, (c_in, n), jnp.float64),
            "b": jax.random.normal(kb, (n,), jnp.float64)}, (steps, n)


def _rnn_apply(layer, params, x):
    phi = jax_activation(layer.activation)
    n = params["W"].shape[0]
    w, u = math.sqrt(layer.weight_var / n), math.sqrt(layer.input_var / x.shape[-1])
    inputs = u * (x @ params["U"]) + math.sqrt(layer.bias_var) * params["b"]

    def step(h, z):  # z: the input part of g_t for the whole batch
        h = phi(w * (h @ params["W"]) + z)
        return h, h

    h0 = jnp.zeros((x.shape[0], n), x.dtype)
    _, hs = jax.lax.scan(step, h0, jnp.swapaxes(inputs, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


def _gated_init(layer, key, shape):
    """One W (n, n), U (C, n) and b (n,) per gate, stacked: GRU z, r, candidate; LSTM
    forget, input, output, candidate (the order of nngp_lut._core.gated)."""
    steps, c_in = _spatial(layer, shape, 1, "time axis")[0], shape[-1]
    n, gates = _width(layer), (3 if isinstance(layer, GRU) else 4)
    kw, ku, kb = jax.random.split(key, 3)
    return {"W": jax.random.normal(kw, (gates, n, n), jnp.float64),
            "U": jax.random.normal(ku, (gates, c_in, n), jnp.float64),
            "b": jax.random.normal(kb, (gates, n), jnp.float64)}, (steps, n)


def _gated_apply(layer, params, x):
    phi = jax_activation(Activation(layer.phi))
    n = params["W"].shape[-1]
    w, u = math.sqrt(layer.weight_var / n), math.sqrt(layer.input_var / x.shape[-1])
    # the input parts of every gate and step: (T, gates, batch, n)
    inputs = u * jnp.einsum("btc,gcn->tgbn", x, params["U"]) \
        + math.sqrt(layer.bias_var) * params["b"][None, :, None, :]
    W, sig = params["W"], jax.nn.sigmoid

    def gru(h, z):
        update, reset = sig(w * h @ W[0] + z[0]), sig(w * h @ W[1] + z[1])
        h = (1.0 - update) * h + update * phi(w * (reset * h) @ W[2] + z[2])
        return h, h

    def lstm(state, z):
        h, c = state
        c = sig(w * h @ W[0] + z[0]) * c + sig(w * h @ W[1] + z[1]) * phi(w * h @ W[3] + z[3])
        h = sig(w * h @ W[2] + z[2]) * phi(c)
        return (h, c), h

    h0 = jnp.zeros((x.shape[0], n), x.dtype)
    if isinstance(layer, GRU):
        _, hs = jax.lax.scan(gru, h0, inputs)
    else:
        _, hs = jax.lax.scan(lstm, (h0, h0), inputs)
    return jnp.swapaxes(hs, 0, 1)


def _batchnorm_apply(layer, params, x):
    """Training mode over the batch (the first axis): each unit centred and scaled to mean
    square 1 (no epsilon, no affine part), then phi."""
    z = x - x.mean(axis=0)
    z = z / jnp.sqrt((z * z).mean(axis=0))
    return z if layer.phi is None else jax_activation(Activation(layer.phi))(z)


def _attention_init(layer, key, shape):
    """Per head W_q, W_k (unless tied), W_v (C, n); with several heads they are stacked
    (heads, C, n) and W_O (heads n, n) maps the concatenated heads back to n units."""
    steps, c_in = _spatial(layer, shape, 1, "position axis")[0], shape[-1]
    n, heads = _width(layer), int(layer.heads)
    keys = jax.random.split(key, 4 if heads == 1 else 5)
    size = (c_in, n) if heads == 1 else (heads, c_in, n)
    params = {"Wq": jax.random.normal(keys[0], size, jnp.float64),
              "Wv": jax.random.normal(keys[2], size, jnp.float64),
              "b": jax.random.normal(keys[3], (n,), jnp.float64)}
    if not layer.tied:
        params["Wk"] = jax.random.normal(keys[1], size, jnp.float64)
    if heads > 1:
        params["Wo"] = jax.random.normal(keys[4], (heads * n, n), jnp.float64)
    return params, (steps, n)


def _attention_apply(layer, params, x):
    """softmax(logits) v per head, logits logit_var / n q k^T (scaling "1/n") or
    sqrt(logit_var / n) q k^T ("1/sqrt(n)"); several heads concatenated, times
    W_O / sqrt(heads n)."""
    def heads(w):  # (heads, C, n), one head's (C, n) as a stack of one
        return w[None] if w.ndim == 2 else w

    wq = heads(params["Wq"])
    n, scale = wq.shape[-1], 1.0 / math.sqrt(x.shape[-1])
    q = scale * jnp.einsum("btc,hcn->bhtn", x, wq)
    k = q if layer.tied else scale * jnp.einsum("btc,hcn->bhtn", x, heads(params["Wk"]))
    factor = layer.logit_var / n if layer.scaling == "1/n" else math.sqrt(layer.logit_var / n)
    a = jax.nn.softmax(factor * jnp.einsum("bhtn,bhsn->bhts", q, k), axis=-1)
    v = math.sqrt(layer.weight_var) * scale * jnp.einsum("btc,hcn->bhtn", x, heads(params["Wv"]))
    z = jnp.einsum("bhts,bhsn->bhtn", a, v)
    if "Wo" in params:
        z = jnp.swapaxes(z, 1, 2).reshape(x.shape[0], x.shape[1], -1)  # heads concatenated
        z = z @ params["Wo"] / math.sqrt(params["Wo"].shape[0])
    else:
        z = z[:, 0]
    return z + math.sqrt(layer.bias_var) * params["b"]


def _positional_init(layer, key, shape):
    shape = _single(layer, shape)
    _spatial(layer, shape, 1, "position axis")
    return {"P": jax.random.normal(key, shape, jnp.float64)}, shape


def _positional_apply(layer, params, x):
    return x + math.sqrt(layer.bias_var) * params["P"]


def _last_step_init(layer, key, shape):
    return {}, _spatial(layer, shape, 1, "time axis")[1:] + shape[-1:]


def _last_step_apply(layer, params, x):
    return x[:, -1]


def _single_init(layer, key, shape):
    return {}, _single(layer, shape)


def _activation_apply(layer, params, x):
    return jax_activation(layer)(x)


def _identity_apply(layer, params, x):
    return x


def _fanout_init(layer, key, shape):
    return {}, _Branches((_single(layer, shape),) * int(layer.n))


def _fanout_apply(layer, params, x):
    return (x,) * int(layer.n)


def _branches_init(layer, key, shapes):
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


def _serial_init(layer, key, shape):
    params = []
    for child, k in zip(layer.children, jax.random.split(key, max(1, len(layer.children)))):
        p, shape = _init(child, k, shape)
        params.append(p)
    return params, shape


def _serial_apply(layer, params, x):
    for child, p in zip(layer.children, params):
        x = _apply(child, p, x)
    return x


def _parallel_init(layer, key, shapes):
    if not isinstance(shapes, _Branches) or len(shapes) != len(layer.children):
        got = len(shapes) if isinstance(shapes, _Branches) else 1
        raise ArchitectureError(f"parallel has {len(layer.children)} layers but gets {got} "
                                "branches")
    out = [_init(child, k, s) for child, k, s in
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
    SimpleRNN: (_rnn_init, _rnn_apply),
    GRU: (_gated_init, _gated_apply),
    LSTM: (_gated_init, _gated_apply),
    BatchNorm: (_single_init, _batchnorm_apply),
    SelfAttention: (_attention_init, _attention_apply),
    PositionalEmbedding: (_positional_init, _positional_apply),
    LastStep: (_last_step_init, _last_step_apply),
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
                                "nngp_lut.finite_network") from None


def _init(layer, key, shape):
    """(params, output shape) of ``layer`` for inputs of per-input ``shape`` (an int d is
    the shape (d,))."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    elif not isinstance(shape, _Branches):
        shape = tuple(int(v) for v in shape)
    return _rules(layer)[0](layer, key, shape)


def _apply(layer, params, x):
    return _rules(layer)[1](layer, params, x)


def as_layer(network):
    """The Layer of a Layer or a Network."""
    layer = network.layer if isinstance(network, Network) else network
    if not isinstance(layer, Layer):
        raise TypeError(f"expected a layer or a Network, got {type(network).__name__}")
    return layer


def with_width(network, width):
    """The network with ``width`` on every Dense and Conv that declares none (the widths
    (channels) of its finite network; the infinite-width kernel depends on them only in
    the standard parameterisation)."""
    layer = as_layer(network)
    if isinstance(layer, (Dense, Conv, SimpleRNN, GRU, LSTM, SelfAttention)):
        return layer if layer.width is not None else dataclasses.replace(layer, width=width)
    if isinstance(layer, (Serial, Parallel)):
        return dataclasses.replace(layer, children=tuple(with_width(c, width)
                                                         for c in layer.children))
    return layer


def as_inputs(x, name):
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


def _readout_sized(layer, outputs):
    """The network with ``outputs`` units on its final Dense, when that Dense declares none."""
    if isinstance(layer, Dense) and layer.width is None:
        return dataclasses.replace(layer, width=int(outputs))
    if isinstance(layer, Serial) and layer.children:
        last = _readout_sized(layer.children[-1], outputs)
        return dataclasses.replace(layer, children=layer.children[:-1] + (last,))
    return layer


@dataclasses.dataclass(frozen=True)
class FiniteNetwork:
    """A finite network of the layer algebra with every width declared (hashable: jitted
    functions are kept per network).

    Attributes
    ----------
    layer : Layer
        The architecture, every Dense and Conv with its ``width``.
    """

    layer: Layer

    def init(self, key, in_shape):
        """(params, out_shape): the parameters drawn from ``key`` for inputs of one
        input's shape ``in_shape`` (an int d is (d,)), and one output's shape."""
        params, out_shape = _init(self.layer, key, in_shape)
        if isinstance(out_shape, _Branches):
            raise ArchitectureError("the network ends in branches: join them with "
                                    "FanInSum() or FanInConcat()")
        return params, out_shape

    def apply(self, params, x):
        """The outputs of the batch ``x`` (n, ...) (inside :func:`x64` for float64)."""
        return _apply(self.layer, params, x)


def finite_network(network, width=None, *, outputs=None):
    """The finite network of an architecture: the one ``nngp-lut mc`` samples and
    ``nngp-lut compare`` trains.

    Parameters
    ----------
    network : Layer or Network
    width : int, optional
        Units of every Dense, channels of every Conv, that declares none (needed when one
        does).
    outputs : int, optional
        Units of the final readout Dense when it declares none (the training's one unit per
        target); None: ``width`` units, as every other Dense.

    Returns
    -------
    FiniteNetwork
    """
    layer = as_layer(network)
    if outputs is not None:
        layer = _readout_sized(layer, outputs)
    return FiniteNetwork(layer if width is None else with_width(layer, width))


def draw_key(seed, width, draw=0):
    """The key of random network ``draw`` of ``seed`` at ``width``:
    ``fold_in(fold_in(key(seed), width), draw)`` (a run with more draws extends one with
    fewer; training starts from draw 0).  A width of 2**32 or more is folded in 32 bits at a
    time (fold_in takes uint32; smaller widths keep the keys they always had)."""
    if not -2**63 <= int(seed) < 2**63:
        raise ParameterError(f"seed must lie in [-2**63, 2**63), got {seed}")
    value = int(width)
    key = jax.random.fold_in(jax.random.key(int(seed)), value & 0xFFFFFFFF)
    while value >> 32:
        value >>= 32
        key = jax.random.fold_in(key, value & 0xFFFFFFFF)
    return jax.random.fold_in(key, int(draw))
