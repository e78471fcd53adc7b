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

Not every network's kernel converges per network: attention at 1/sqrt(n) scaling keeps each
head's logits random at every width (Hron et al. 2020), so one network's kernel stays
random and only the mean over networks (and heads) converges, with a standard error
~ 1/sqrt(draws x heads).  Such a network (a layer with ``self_averaging = False``) has no
width slope: :func:`convergence` refuses it in one line and :func:`mean_convergence`
compares the mean of the draws with the infinite-width kernel in standard errors.

The finite network is :func:`nngp_lut.finite_network.finite_network`'s (the layers as
neural-tangents' ``stax`` has them; the one ``nngp-lut compare`` trains).  Every draw has its
own key, :func:`~nngp_lut.finite_network.draw_key` ``(seed, width, draw)``: a run is
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
Hron, Bahri, Sohl-Dickstein & Novak, "Infinite attention: NNGP and NTK for deep attention
networks", ICML 2020, Theorem 3 (attention at 1/sqrt(d): the GP limit needs the heads).
Novak et al., "Bayesian Deep Convolutional Networks with Many Channels are Gaussian
Processes", ICLR 2019 (the finite CNNs whose NNGP is the convolutional one, their Fig. 1
Monte Carlo); Garriga-Alonso et al., ICLR 2019; Du et al., "Graph Neural Tangent Kernel",
NeurIPS 2019 (aggregation).
"""

import functools
import math

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # the infinite-width engine never needs JAX
    raise ImportError('nngp_lut.montecarlo needs JAX: pip install "nngp-lut[finite]" '
                      f'(import failed: {exc})') from exc

# BUILTINS, LAYERS, jax_activation and with_width are finite_network's, kept here by name.
from .errors import MemoryBudgetError
from .finite_network import (BUILTINS, LAYERS, as_inputs, as_layer, draw_key,
                             finite_network, jax_activation, with_width, x64)
from .kernel import Network
from .kernel.layers import ArchitectureError

#: The kernels an estimate can give.
KINDS = ("nngp", "ntk")


# --- estimates -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _draw_function(net, in_shape, kinds, ntk_units):
    """A jitted ``draw(key, x) -> (nngp, ntk)`` of one random network ``net`` (a
    FiniteNetwork, kept for the next call with the same arguments: it is hashable)."""

    def draw(key, x):
        params, out_shape = net.init(key, in_shape)
        n = x.shape[0]
        f = net.apply(params, x)
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
                return net.apply(p, x)[..., unit].reshape(n, positions)
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


def _per_draw(layer, x1, x2, width, draws, seed, kinds, ntk_units, progress):
    """Yield {kind: (n1, n2) kernel} of each random network in turn."""
    if int(width) != width or width < 1:
        raise ValueError(f"width must be a positive integer, got {width}")
    if int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws}")
    if int(ntk_units) != ntk_units or ntk_units < 1:
        raise ValueError(f"ntk_units must be a positive integer, got {ntk_units}")
    x1 = as_inputs(x1, "x1")
    n1 = x1.shape[0]
    if x2 is not None:
        x2 = as_inputs(x2, "x2")
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x1 has inputs of shape {x1.shape[1:]} but x2 has "
                             f"{x2.shape[1:]}")
    x = x1 if x2 is None else np.concatenate([x1, x2])
    cols = slice(None, n1) if x2 is None else slice(n1, None)
    with x64():
        draw_key(seed, width)  # a seed outside int64 fails here, before any work
        net = finite_network(layer, int(width))
        _check_size(net, x.shape[1:], int(width))
        draw = _draw_function(net, x.shape[1:], kinds, int(ntk_units))
        xj = jnp.asarray(x, dtype=jnp.float64)
        for d in range(int(draws)):
            values = dict(zip(KINDS, draw(draw_key(seed, width, d), xj)))
            yield {kind: np.asarray(values[kind], dtype=np.float64)[:n1, cols]
                   for kind in kinds}
            if progress:
                progress(d + 1, int(draws))


#: Bytes per parameter of a sampled network in memory: the parameters, a gradient and a
#: tangent (the empirical NTK), float64, with room for the activations.
PARAMETER_BYTES = 4 * 8


def _check_size(net, in_shape, width):
    """Refuse, before any array is made, a width whose network does not fit the memory
    available (its parameter shapes are traced, not allocated)."""
    from .linalg import available_memory

    shapes = jax.eval_shape(lambda key: net.init(key, in_shape)[0], jax.random.key(0))
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
    for k in _per_draw(as_layer(network), x1, x2, width, draws, seed, kinds, ntk_units,
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
    layer = as_layer(network)
    kinds = _kinds(get)
    random = _not_self_averaging(layer)
    if random is not None:
        raise ArchitectureError(
            f"one network's kernel does not converge with width here ({random!r} keeps "
            "random logits at every width), so a width slope would mean nothing: use "
            "mean_convergence(), the mean over draws and heads against the infinite-width "
            "kernel")
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1 or len(set(widths)) != len(widths):
        raise ValueError(f"widths must be distinct positive integers, got {widths}")
    if reference not in ("kernel", "layerwise"):
        raise ValueError(f"reference must be 'kernel' or 'layerwise', got {reference!r}")
    x = as_inputs(x, "x")
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


def _not_self_averaging(layer):
    """The first layer whose finite network's kernel does not converge with width, or
    None."""
    return next((node for node in layer.walk() if not node.self_averaging), None)


def heads_of(network):
    """The fewest heads of the layers that are not self-averaging (each network's kernel
    averages that many independent draws of their logits), 1 for a network without them."""
    return min((int(getattr(node, "heads", 1)) for node in as_layer(network).walk()
                if not node.self_averaging), default=1)


def mean_convergence(network, x, width, draws, seed, *, get=None, reference="kernel",
                     progress=None):
    """The mean kernel of random finite networks against the infinite-width one, as the
    draws grow: the check for networks whose kernel does not converge per network.

    Attention at 1/sqrt(n) scaling keeps each head's logits random at every width
    (Hron et al. 2020), so one network's empirical kernel stays random, and only the mean
    over networks and heads converges to the infinite-width kernel, with a standard error
    ~ 1/sqrt(draws x heads) (when the heads' spread dominates the finite-width one).  This
    function samples ``draws`` networks of one ``width`` and, for the first d of them
    (d = draws, draws / 2, ... down to 4, or 2 for fewer than 8 draws), reports per kernel
    kind:

    * ``{kind}_error``: ||M_d - K||_F / ||K||_F, M_d the mean of the d networks' kernels;
    * ``{kind}_se``: sqrt(sum SE^2) / ||K||_F, the standard error of that mean from the
      spread of the draws (SE per entry: std / sqrt(d)): the error a mean of d networks has
      when it is unbiased;
    * ``{kind}_sigmas``: ||M_d - K||_F / sqrt(sum SE^2), the error in standard errors
      (about 1 when M_d is unbiased; within 3 is the check);
    * ``{kind}_max_z``: the largest |M_d - K| / SE over the entries.

    Parameters
    ----------
    network : Layer or Network
    x : array_like (n, ...)
        Inputs.
    width : int
        Width of the finite networks (every Dense and attention layer without one).
    draws : int
        Networks to sample (>= 2).
    seed : int
        Seed of the draws (:func:`~nngp_lut.finite_network.draw_key`).
    get : "nngp", "ntk", tuple or None
        Kinds to compare; None: every kind the network gives.
    reference : {"kernel", "layerwise"}
        As :func:`convergence`.
    progress : callable, optional
        ``progress(done, draws)``.

    Returns
    -------
    rows : list of dict
        Per d (ascending): ``draws``, ``draws_heads`` (d x :func:`heads_of`), then the
        figures above.
    slopes : dict
        ``{kind}_error`` and ``{kind}_se``: fitted slopes of log figure against
        log(draws x heads) (-1/2 expected; NaN for a single row).

    References
    ----------
    Hron et al., "Infinite attention: NNGP and NTK for deep attention networks", ICML 2020,
    Theorem 3 (the GP limit of the 1/sqrt(d) scaling needs the heads to grow).
    """
    layer = as_layer(network)
    if int(draws) != draws or draws < 2:
        raise ValueError(f"draws must be an integer >= 2 (the standard error needs two), got "
                         f"{draws}")
    if reference not in ("kernel", "layerwise"):
        raise ValueError(f"reference must be 'kernel' or 'layerwise', got {reference!r}")
    x = as_inputs(x, "x")
    sized = with_width(layer, int(width))
    net = Network(sized)
    kinds = net.kinds if get is None else _kinds(get)
    exact = dict(zip(kinds, getattr(net, reference)(x, get=kinds)))
    kernels = {kind: [] for kind in kinds}
    for k in _per_draw(sized, x, None, width, draws, seed, kinds, 1, progress):
        for kind in kinds:
            kernels[kind].append(k[kind])
    heads = heads_of(layer)
    least = 4 if draws >= 8 else 2  # the spread of 2 or 3 draws is a poor standard error
    counts = sorted({int(draws) // 2 ** i for i in range(int(math.log2(draws)) + 1)
                     if int(draws) // 2 ** i >= least})
    rows = []
    for d in counts:
        row = {"draws": d, "draws_heads": d * heads}
        for kind in kinds:
            a = np.stack(kernels[kind][:d])
            diff = a.mean(0) - exact[kind]
            se = a.std(0, ddof=1) / math.sqrt(d)
            norm = np.linalg.norm(exact[kind])
            total = float(np.sqrt(np.sum(se ** 2)))
            z = np.abs(diff) / np.where(se > 0, se, np.inf)
            row[f"{kind}_error"] = float(np.linalg.norm(diff) / norm)
            row[f"{kind}_se"] = float(total / norm)
            row[f"{kind}_sigmas"] = float(np.linalg.norm(diff) / total) if total > 0 else \
                math.inf
            row[f"{kind}_max_z"] = float(z.max())
        rows.append(row)
    n_heads = [r["draws_heads"] for r in rows]
    slopes = {f"{kind}_{what}": (loglog_slope(n_heads, [r[f"{kind}_{what}"] for r in rows])
                                 if len(rows) > 1 else math.nan)
              for kind in kinds for what in ("error", "se")}
    return rows, slopes


__all__ = ["BUILTINS", "KINDS", "LAYERS", "convergence", "heads_of", "mean_convergence",
           "empirical_kernels", "jax_activation", "loglog_slope", "relative_error",
           "with_width"]
