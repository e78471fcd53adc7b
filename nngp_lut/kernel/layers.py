"""The layer algebra: each layer maps a kernel record to a new record.

A network is a tree of small immutable layer objects, in the spirit of neural-tangents'
``stax``.  Each layer owns its rule, written once.  Its class declares what it needs of
the record it gets (``needs_gaussian``, ``needs_full``, ``spatial``), gives its
infinite-width rule on a :class:`~nngp_lut.kernel.record.Kernels` record in
:meth:`~Layer.apply` (one shape-generic rule for vectors, diagonal maps and full spatial
covariances, for pairs and for the diagonal alone: the record's entries broadcast the same
way in all) and its ops for the fused engine in :meth:`~Layer.lower`
(:mod:`nngp_lut.kernel.compiler`).  Its finite-network twin is registered beside it in
:data:`nngp_lut.finite_network.LAYERS` (sampled by :mod:`nngp_lut.montecarlo`).  Adding a
layer is one class here, one entry there, and an engine op (``nngp_lut/_core/engine.py``)
only when no op expresses it.

Layers (NTK parameterisation unless a Dense says otherwise; ``weight_var = sigma_w^2``):

====================  ======================================================================
``Dense(w, b)``       K' = b + w K;  Theta' = K' + w Theta  (ntk) or
                      Theta' = n_in K + 1 + w Theta (standard, neural-tangents' definition)
``Activation(phi)``   K' = F_phi(q1, q2, rho);  Theta' = E[phi'(u) phi'(v)] Theta
``LayerNorm()``       K' = K / sqrt(q1 q2), the same for Theta (Gaussian, centred inputs)
``Identity()``,       unchanged
``Dropout(rate)``     (evaluation mode: the identity)
``FanOut(n)``         one record -> n copies (the branches of a residual block)
``FanInSum()``        the branches' kernels add (independent weights per branch)
``FanInConcat()``     the branches' kernels average (features concatenated, equal widths)
``serial(*layers)``   composition;  ``parallel(*layers)``: one layer per branch
``repeat(block, n)``  ``serial(block, ..., block)``
``Conv(w, b, ...)``   K'_{h,h'} = b + w mean_D K_{sh+D, sh'+D} (box sum over the filter)
``AvgPool(window)``   K'_{h,h'} = mean_{D,D'} K_{sh+D, sh'+D'} (full spatial covariance)
``GlobalAvgPool()``   K' = mean_{h,h'} K_{h,h'} (full spatial covariance)
``Flatten()``         K' = mean_h K_{h,h} (the spatially diagonal maps suffice)
``Aggregate(A)``      K' = A K A^T over the nodes of a graph
``SimpleRNN(phi)``    the recursion over the (t, s) map of two sequences (its docstring)
``GRU()``, ``LSTM()``   gated cells: randomised QMC over their history (NNGP only)
``BatchNorm(phi)``    K' = E[phi(BN(h)) phi(BN(h))^T] over the batch (NNGP only)
``LastStep()``        K' = K_{T,T'} (the last step of sequences aligned at their ends)
``SelfAttention(w)``  K' = b + w A_x K A_x'^T, softmax weights A_x at 1/n scaling;
                      scaling="1/sqrt(n)": K' = b + w E[A_x K A_x'^T] over Gaussian logits
                      (randomised QMC, NNGP only)
``PositionalEmbedding(b)``  K' = K + b I over the positions (a learned embedding)
====================  ======================================================================

Records with spatial axes (images, sequences, graphs) hold per pair of inputs either the
diagonal maps K_{h,h} (n1, n2, *S) or the full covariance K_{h,h'} (n1, n2, *S, *S): see
:mod:`nngp_lut.kernel.spatial`, whose helpers (window geometry, per-position factors) the
rules share.

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eq. (5).
Jacot et al., "Neural Tangent Kernel", NeurIPS 2018, Theorem 1 (the NTK recursion).
Novak et al., "Bayesian Deep Convolutional Networks with Many Channels are Gaussian
Processes", ICLR 2019, eq. (7) (Conv, pooling, Flatten); Garriga-Alonso et al., "Deep
Convolutional Networks as shallow Gaussian Processes", ICLR 2019; Arora et al., "On Exact
Computation with an Infinitely Wide Neural Net", NeurIPS 2019 (the convolutional NTK).
Novak et al., "Neural Tangents", ICLR 2020 (the layer algebra, the standard
parameterisation).  Yang, "Tensor Programs II/III", 2020 (the correspondence for any
architecture of these layers).
"""

import dataclasses
import math
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .._core import engine as _eng
from .._core import gated as _gated
from .._core.config import (ATTENTION_MAX_POINTS, ATTENTION_TOL, BATCHNORM_TOL,
                            GATED_MAX_BYTES, GATED_MAX_POINTS, GATED_MIN_POINTS, GATED_TOL)
from .._core.interp import correlations
from ..errors import ArchitectureError, DataError, NotFusable, ToleranceWarning
from ..expectation import RANDOMIZATIONS, Estimate, NormalPoints, interval_multiplier
from .spatial import (conv_mean, map_fields, pair_factors, pool_mean, positional,
                      require_full, require_spatial, self_factors, spatial_shape,
                      window_indices)

PARAMETERIZATIONS = ("ntk", "standard")


class Layer:
    """Base of every layer: ``apply(record) -> record`` (tuples of records for branches).

    A layer declares what its rule needs of the record it gets (class attributes), its rule
    (:meth:`apply`) and its lowering to the engine's ops (:meth:`lower`).
    """

    #: The rule needs jointly Gaussian units (``Kernels.is_gaussian``): an Activation's
    #: F(K) and a LayerNorm's mean square hold only for them.
    needs_gaussian = False
    #: The rule needs the covariance of every pair of positions (``full_spatial``), not
    #: only the spatially diagonal maps.
    needs_full = False
    #: The layer needs or makes spatial axes (images, sequences, graphs).
    spatial = False
    #: Spatial dimensions its window fixes (1 or 2), or None.
    window_rank = None
    #: Its ops read per-input vectors (variances, normalisers) that the compiler takes from
    #: the diagonal recursion.
    reads_variances = False
    #: It takes sequences padded to a common length (a record with masks): it acts on each
    #: step alone, or reads over time leaving the padding out.
    takes_padding = False
    #: The fused engine runs it (its :meth:`lower` emits ops).  A layer whose kernel comes
    #: from elsewhere (randomised QMC over a cell's history) sets False, and networks with
    #: it are computed layer by layer (:meth:`Network.kernel`, tiled all the same).
    fused = True
    #: The kernels its rule gives; a network with a layer that lacks one refuses to give it.
    kinds = ("nngp", "ntk")
    #: Its rule couples the inputs of a batch (BatchNorm): the record must hold the whole
    #: batch's kernel, so a network with it computes one batch at a time (Network).
    batch_coupled = False
    #: One finite network's empirical kernel converges to the rule's as the width grows.
    #: False: the layer keeps randomness that no width averages out (the logits of
    #: attention at 1/sqrt(n) scaling), and only the mean over networks converges: the
    #: Monte Carlo check (:func:`nngp_lut.montecarlo.mean_convergence`) compares that mean.
    self_averaging = True

    def apply(self, k):
        """The infinite-width rule: the record after the layer."""
        raise NotImplementedError

    def lower(self, comp, reg, d):
        """Emit the layer's engine ops on register(s) ``reg`` through the compiler ``comp``
        (:class:`nngp_lut.kernel.compiler.Compiler`), for the diagonal-only record(s) ``d``
        it gets; returns the register(s) and record(s) after it."""
        raise NotFusable(f"{type(self).__name__} has no engine op")

    def __call__(self, k):
        return self.apply(k)

    def layers(self):
        """The layers of its main chain, in order (itself for a plain layer)."""
        return (self,)

    def walk(self):
        """Every layer of the tree, depth first, this one included."""
        yield self
        for child in getattr(self, "children", ()):
            yield from child.walk()


def check_components(k):
    """Refuse a mixture record (:class:`~nngp_lut.kernel.record.Kernels`) before an
    elementwise nonlinearity, whose kernel is the mean of F over the mixture's groups."""
    if k.mixture:
        raise ArchitectureError(
            "an Activation here acts on features mixed from positions or branches of "
            "different covariances (Flatten() or FanInConcat(), then a layer such as "
            "LayerNorm() that does not commute with them), and its kernel would not be "
            "exact: apply the Activation before Flatten() or in each branch before "
            "FanInConcat()")


def single_input(layer, k, branches=tuple):
    """``k`` itself, when it is one input and not the ``branches`` of a FanOut (nor, for a
    layer without ``takes_padding``, a record of padded sequences)."""
    if isinstance(k, branches):
        raise ArchitectureError(f"{layer!r} takes one input but gets {len(k)} branches; "
                                "join them with FanInSum() or FanInConcat() first")
    if getattr(k, "mask1", None) is not None and not layer.takes_padding:
        raise ArchitectureError(
            f"{type(layer).__name__} does not take sequences of unequal length (padded with "
            "NaN steps): before LastStep() or GlobalAvgPool() use only Dense, SimpleRNN, "
            "GRU, LSTM, residual branches and Dropout, or give sequences of one length")
    return k


def with_tolerance(layer, tol):
    """The network with ``tol`` on every layer whose kernel is computed to a tolerance (the
    sampled layers outside the engine with a ``tol`` field: GRU, LSTM, BatchNorm, attention
    at 1/sqrt(n)), and how many there are."""
    if "tol" in getattr(type(layer), "__dataclass_fields__", {}) and not layer.fused:
        return dataclasses.replace(layer, tol=tol), 1
    children = getattr(layer, "children", ())
    if not children:
        return layer, 0
    pairs = [with_tolerance(child, tol) for child in children]
    return dataclasses.replace(layer, children=tuple(c for c, _ in pairs)), \
        sum(n for _, n in pairs)


def compiled_phi(layer):
    """A layer's ``phi`` as a compiled function (:class:`~nngp_lut.Activation`), for the
    layers that evaluate it on samples instead of through a table (GRU, LSTM, BatchNorm)."""
    from ..activations import Activation as Function, get_activation

    if isinstance(layer.phi, Function):
        return layer.phi
    if isinstance(layer.phi, str) and not layer.phi.endswith((".h5", ".hdf5")):
        return get_activation(layer.phi)
    raise ArchitectureError(f"{type(layer).__name__} phi must be an activation's name or an "
                            f"expression in x, got {layer.phi!r}")


def phi_repr(function):
    """How an architecture string names a compiled activation (parsed back the same)."""
    return repr(function.source if function.name.startswith("expr:") else function.name)


def not_given(layer, kind):
    """The one-line error for a kernel that ``layer`` does not give."""
    return (f"{type(layer).__name__} gives the {' and '.join(layer.kinds).upper()} only, not "
            f"the {kind.upper()}: ask for the {layer.kinds[0]} kernel (get='{layer.kinds[0]}',"
            f" --kernel {layer.kinds[0]})")


def _check_variances(layer, positive=(), nonnegative=(), optional=False):
    """Refuse a variance that is not a finite number > 0 (``positive`` fields) or >= 0
    (``nonnegative``; None too when ``optional``: no bias), a bool included."""
    name = type(layer).__name__
    for attr in positive + nonnegative:
        value = getattr(layer, attr)
        if value is None and optional and attr in nonnegative:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ArchitectureError(f"{name} {attr} must be a number, got {value!r}")
        strict = attr in positive
        if not (math.isfinite(value) and (value > 0 if strict else value >= 0)):
            raise ArchitectureError(f"{name} needs {attr} {'>' if strict else '>='} 0, got "
                                    f"{value}")


def _check_width(layer):
    """A declared width (units or channels of the finite network) is a positive integer."""
    if layer.width is not None and (int(layer.width) != layer.width or layer.width < 1):
        raise ArchitectureError(f"{type(layer).__name__} width must be a positive integer, "
                                f"got {layer.width}")


def _check_affine(layer):
    """The fields a Dense and a Conv share: weight_var, bias_var, parameterization, width."""
    _check_variances(layer, ("weight_var",), ("bias_var",), optional=True)
    if layer.parameterization not in PARAMETERIZATIONS:
        raise ArchitectureError(f"parameterization must be one of {PARAMETERIZATIONS}, "
                                f"got {layer.parameterization!r}")
    _check_width(layer)


@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer with weights of variance ``weight_var / fan_in`` and biases of
    variance ``bias_var`` (None: no bias).

    ``parameterization="ntk"`` (Jacot et al. 2018): z = sqrt(w / n) W x + sqrt(b) beta with
    W, beta ~ N(0, 1).  ``"standard"``: z = W x + beta with W ~ N(0, w / n), beta ~ N(0, b),
    whose NTK is n_in K + 1 + w Theta (neural-tangents' definition; n_in the input width,
    which the record must declare).  The NNGP is the same in both.  ``width`` is the number
    of output features of a finite network (None: chosen by the sampler; it matters for the
    infinite network only in the standard parameterisation).
    """

    weight_var: float
    bias_var: float | None = 0.0
    parameterization: str = "ntk"
    width: int | None = None

    takes_padding = True

    def __post_init__(self):
        _check_affine(self)

    @property
    def bias(self):
        return 0.0 if self.bias_var is None else self.bias_var

    def __repr__(self):
        extra = "".join(f", {f}={getattr(self, f)!r}" for f in ("parameterization", "width")
                        if getattr(self, f) != type(self).__dataclass_fields__[f].default)
        return f"Dense({self.weight_var!r}, {self.bias_var!r}{extra})"

    def ntk_coefficients(self, width_in):
        """(a, c) of the NTK rule Theta' = a K + c + w Theta."""
        return _ntk_coefficients(self, width_in, "input width of every Dense: give the "
                                 "previous Dense a width")

    def apply(self, k):
        k = single_input(self, k)
        return _affine_rule(self, k, lambda m, nb: m, self.ntk_coefficients)

    def lower(self, comp, reg, d):
        new = self.apply(d)
        a, c = self.ntk_coefficients(d.width) if comp.with_ntk else (0.0, 0.0)
        comp.affine(reg, d, (self.weight_var, self.bias, a, c))
        return reg, new


def _ntk_coefficients(layer, fan_in, needs):
    """(a, c) of a Dense's or Conv's NTK rule Theta' = a M(K) + c + w M(Theta): (w, b) in
    the NTK parameterisation, (fan_in, 1 or 0) in the standard one (neural-tangents'
    definition), which needs the fan-in."""
    if layer.parameterization == "ntk":
        return layer.weight_var, layer.bias
    if fan_in is None:
        raise ArchitectureError(f"the standard parameterisation's NTK needs the {needs}")
    return float(fan_in), (0.0 if layer.bias_var is None else 1.0)


def _affine_rule(layer, k, mean, ntk_coefficients):
    """K' = b + w M(K), Theta' = a M(K) + c + w M(Theta) for a Dense (M the identity) or a
    Conv (M the mean over the filter's offsets); ``mean(field, batch axes)`` is M."""
    w, b = layer.weight_var, layer.bias
    mk = None if k.nngp is None else mean(k.nngp, 2)
    one = one_input_set(k)
    mv1 = mean(k.var1, 1)
    mv2 = mv1 if one else mean(k.var2, 1)
    out = dict(var1=b + w * mv1, nngp=None if mk is None else b + w * mk, is_gaussian=True,
               mixture=False, width=layer.width)
    out["var2"] = out["var1"] if one else b + w * mv2
    if k.has_ntk:
        a, c = ntk_coefficients(k.width)
        out.update(ntk_var1=a * mv1 + c + w * mean(k.ntk_var1, 1),
                   ntk=None if mk is None else a * mk + c + w * mean(k.ntk, 2))
        out["ntk_var2"] = out["ntk_var1"] if one else a * mv2 + c + w * mean(k.ntk_var2, 1)
    return k.replace(**out)


def one_input_set(k):
    """The record's two input sets are one set (the diagonal records of the compiler's
    walk): each rule then computes its variances once, the same arrays for both."""
    return k.var2 is k.var1 and k.ntk_var2 is k.ntk_var1


@dataclass(frozen=True, eq=False)
class Activation(Layer):
    """Elementwise nonlinearity phi, through its table (built once and cached).

    ``phi`` is a built-in name, an expression in ``x``, an :class:`~nngp_lut.Activation`,
    a :class:`~nngp_lut.Table` or a table path.  Two Activation layers are equal when they
    name the same activation.
    """

    phi: object
    needs_gaussian = True
    reads_variances = True

    def __post_init__(self):
        self.key  # resolved once: a bad name or expression fails here, not later

    @cached_property
    def key(self):
        """What identifies the activation: its name and source."""
        t = self.phi
        if isinstance(t, str) and not t.endswith((".h5", ".hdf5")):
            from ..activations import get_activation

            t = get_activation(t)
        if hasattr(t, "activation_name"):
            return (t.activation_name, t.activation_source)
        if hasattr(t, "source"):
            return (t.name, t.source)
        return ("path", str(t))

    def __eq__(self, other):
        return isinstance(other, Activation) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        name, source = self.key  # expressions by their source, which parses back
        return f"Activation({source if name.startswith(('expr:', 'path')) else name!r})"

    @cached_property
    def table(self):
        from ..tables import as_table

        return as_table(self.phi)

    def apply(self, k):
        """F_phi at every pair of units (positions, for spatial records) with their own
        variances (Lee et al. 2018, eq. (5), applied entrywise); the NTK is multiplied by
        E[phi'(u) phi'(v)] (Jacot et al. 2018, Theorem 1)."""
        k = single_input(self, k)
        if not k.is_gaussian:
            raise ArchitectureError("an Activation needs Gaussian inputs: put a Dense or Conv "
                                    "before it (the network's inputs are not Gaussian)")
        check_components(k)
        t = self.table
        d1, d2 = positional(k.var1, k), positional(k.var2, k)

        def self_rule(var, d, fn, moment):
            if not k.full_spatial:  # the variances themselves: E[phi(u)^2]
                return moment(var)
            qa, qb = self_factors(d, k)  # pairs of positions of one input
            return fn(qa, qb, correlations(var, np.sqrt(qa * qb)))

        one = one_input_set(k)
        out = dict(var1=self_rule(k.var1, d1, t.F, t.second_moment), is_gaussian=False)
        out["var2"] = out["var1"] if one else self_rule(k.var2, d2, t.F, t.second_moment)
        if k.nngp is not None:
            q1, q2 = pair_factors(d1, d2, k)
            rho = correlations(k.nngp, np.sqrt(q1 * q2))
            out["nngp"] = t.F(q1, q2, rho)
        if k.has_ntk:
            out["ntk_var1"] = self_rule(k.var1, d1, t.dF, t.derivative_second_moment) * \
                k.ntk_var1
            out["ntk_var2"] = out["ntk_var1"] if one else self_rule(
                k.var2, d2, t.dF, t.derivative_second_moment) * k.ntk_var2
            if k.ntk is not None:
                out["ntk"] = t.dF(q1, q2, rho) * k.ntk
        return k.replace(**out)

    def lower(self, comp, reg, d):
        new = self.apply(d)
        comp.activation(self.table, reg, d)
        return reg, new


#: What a LayerNorm normalises over (images: per position over the channels, per channel
#: over the positions, or over both).
LAYERNORM_OVER = ("channels", "space", "all")


@dataclass(frozen=True)
class LayerNorm(Layer):
    """Per-example normalisation over the features: z / sqrt(mean_i z_i^2).

    In the infinite-width limit the features' mean is 0 and their mean square is K(x, x) for
    Gaussian, centred inputs (place it after a Dense or a sum of Dense outputs), so
    K' = K / sqrt(K(x,x) K(x',x')) and the NTK is scaled the same (neural-tangents'
    ``LayerNorm`` over the channel axis).

    ``over`` matters for records with spatial axes only (for vectors all three coincide):
    ``"channels"`` normalises each position by its own variance K_hh(x, x) (neural-tangents'
    ``axis=-1``); ``"all"`` by the mean over positions of K_hh(x, x) (``axis=(1, 2, 3)``);
    ``"space"`` (each channel over the positions alone) has no Gaussian infinite-width
    kernel, since a mean over finitely many positions does not concentrate, and is refused
    by the kernel as neural-tangents refuses it (a finite network still samples it).
    """

    over: str = "channels"
    needs_gaussian = True
    reads_variances = True

    def __post_init__(self):
        if self.over not in LAYERNORM_OVER:
            raise ArchitectureError(f"LayerNorm over must be one of {LAYERNORM_OVER}, "
                                    f"got {self.over!r}")

    def __repr__(self):
        return "LayerNorm()" if self.over == "channels" else f"LayerNorm(over={self.over!r})"

    def factors(self, k, var):
        """1 / sqrt of the mean square each unit is divided by, (n, *S) for a var field:
        each position's own variance (over="channels"), or their mean (over="all")."""
        d = positional(var, k)
        if self.over == "all" and k.axes:
            axes = tuple(range(1, 1 + len(k.axes)))
            return np.broadcast_to(normalisers(d.mean(axis=axes, keepdims=True)), d.shape)
        return normalisers(d)

    def apply(self, k):
        """K' = K / sqrt(K_hh(x, x) K_h'h'(x', x')) (or the mean variances), the NTK alike."""
        k = single_input(self, k)
        if self.over == "space" and k.axes:
            raise ArchitectureError("LayerNorm(over='space') normalises each channel over "
                                    "finitely many positions, whose mean square does not "
                                    "concentrate: it has no Gaussian infinite-width kernel; "
                                    "use over='channels' or over='all'")
        if not k.is_gaussian:
            raise ArchitectureError("LayerNorm needs Gaussian, centred inputs: put it after "
                                    "a Dense or Conv (or a sum of their outputs)")
        return _scale_positions(k, self.factors(k, k.var1), self.factors(k, k.var2))

    def lower(self, comp, reg, d):
        new = self.apply(d)
        factors = self.factors(d, d.var1)
        comp.emit(_eng.OP_NORMALIZE, reg, d, d,
                  vec=comp.vector(factors.reshape(factors.shape[0], -1)))
        return reg, new


def _scale_positions(k, s1, s2):
    """Every field times s_h(x) s_h'(x') for per-position factors s1 (n1, *S), s2 (n2, *S):
    what OP_NORMALIZE computes."""
    p1, p2 = pair_factors(s1, s2, k)
    a1, b1 = self_factors(s1, k)
    a2, b2 = self_factors(s2, k)
    out = dict(var1=k.var1 * a1 * b1, var2=k.var2 * a2 * b2)
    if k.nngp is not None:
        out["nngp"] = k.nngp * p1 * p2
    if k.has_ntk:
        out.update(ntk_var1=k.ntk_var1 * a1 * b1, ntk_var2=k.ntk_var2 * a2 * b2)
        if k.ntk is not None:
            out["ntk"] = k.ntk * p1 * p2
    return k.replace(**out)


def normalisers(var):
    """1 / sqrt(var) of a LayerNorm; a variance of 0 (an input or position whose features are
    all zero) has no normalisation and is a DataError."""
    if np.any(var <= 0.0):
        raise DataError("LayerNorm gets features that are all zero (an all-zero input, or a "
                        "zero-padded or zero-bordered position under a layer with "
                        "bias_var = 0), which cannot be normalised: give the layer before it "
                        "a bias (bias_var > 0), or normalise over='all'")
    return 1.0 / np.sqrt(var)


# --- spatial layers (images NHWC, sequences and graphs (N, L, C)) ---------------------------
#: Padding modes of Conv and AvgPool (neural-tangents' ``Padding``).
PADDINGS = ("SAME", "VALID", "CIRCULAR")


def _int_tuple(layer, name, value, length=None):
    """``value`` as a tuple of positive ints (a bare int is a tuple of one)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        out = tuple(int(v) for v in value)
        ok = all(int(v) == v and v >= 1 for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or not 1 <= len(out) <= 2:
        raise ArchitectureError(f"{layer} {name} must be 1 or 2 positive integers, "
                                f"got {value!r}")
    if length is not None and len(out) != length:
        raise ArchitectureError(f"{layer} {name} has {len(out)} entries but the window has "
                                f"{length}")
    return out


def _check_window(layer, field):
    """Normalise and check the window fields a Conv and an AvgPool share: the window's
    shape ``field``, ``strides`` and ``padding``."""
    name = type(layer).__name__
    shape = _int_tuple(name, field, getattr(layer, field))
    object.__setattr__(layer, field, shape)
    if layer.strides is not None:
        object.__setattr__(layer, "strides", _int_tuple(name, "strides", layer.strides,
                                                        len(shape)))
    if layer.padding not in PADDINGS:
        raise ArchitectureError(f"{name} padding must be one of {PADDINGS}, got "
                                f"{layer.padding!r}")


def _extra_repr(obj, names):
    fields = type(obj).__dataclass_fields__
    return "".join(f", {f}={getattr(obj, f)!r}" for f in names
                   if getattr(obj, f) != fields[f].default)


@dataclass(frozen=True)
class Conv(Layer):
    """Convolution over the spatial axes of (N, L, C) sequences (``filter_shape`` of one
    entry) or NHWC images (two), weights of variance ``weight_var / fan_in`` with fan_in =
    prod(filter_shape) * C_in, biases of variance ``bias_var`` (None: no bias).

    The NNGP of a pair of positions (h, h') is a box sum over the filter's offsets D
    (Novak et al. 2019, eq. (7); Garriga-Alonso et al. 2019):

        K'_{h,h'} = bias_var + weight_var / |D| * sum_D K_{s h + D, s h' + D},

    zero outside the image (``"SAME"``, ``"VALID"``) or wrapped around (``"CIRCULAR"``);
    the NTK is Theta' = K' + weight_var / |D| sum_D Theta (``"ntk"``) or
    C_in |D| box_mean(K) + 1 + weight_var box_mean(Theta) (``"standard"``, which needs C_in:
    the inputs' channels or the previous layer's ``width``).  As neural-tangents'
    ``stax.Conv(width, filter_shape, strides, padding, W_std=sqrt(weight_var),
    b_std=sqrt(bias_var), parameterization)``.  ``width`` is the number of output channels
    of a finite network.
    """

    weight_var: float
    bias_var: float | None = 0.0
    filter_shape: tuple = (3, 3)
    strides: tuple | None = None
    padding: str = "SAME"
    parameterization: str = "ntk"
    width: int | None = None

    def __post_init__(self):
        _check_affine(self)
        _check_window(self, "filter_shape")

    bias = Dense.bias
    spatial = True

    @property
    def window_rank(self):
        return len(self.filter_shape)

    @property
    def stride(self):
        """The strides, all 1 when not given."""
        return self.strides if self.strides is not None else (1,) * len(self.filter_shape)

    def ntk_coefficients(self, width_in):
        """(a, c) of the NTK rule Theta' = a box_mean(K) + c + w box_mean(Theta): the fan-in
        is the filter's size times the input channels."""
        fan_in = None if width_in is None else width_in * math.prod(self.filter_shape)
        return _ntk_coefficients(self, fan_in, "input channels of every Conv: give the "
                                 "previous layer a width")

    def __repr__(self):
        extra = _extra_repr(self, ("filter_shape", "strides", "padding", "parameterization",
                                   "width"))
        return f"Conv({self.weight_var!r}, {self.bias_var!r}{extra})"

    def apply(self, k):
        """The affine rule of a Dense on the mean over the filter's offsets of every field
        (Novak et al. 2019, eq. (7))."""
        k = single_input(self, k)
        require_spatial(self, k, len(self.filter_shape))
        idxs = window_indices(k, self.filter_shape, self.stride, self.padding)
        return _affine_rule(self, k, lambda m, nb: conv_mean(m, nb, k, idxs),
                            self.ntk_coefficients)

    def lower(self, comp, reg, d):
        new = self.apply(d)
        a, c = self.ntk_coefficients(d.width) if comp.with_ntk else (0.0, 0.0)
        comp.emit(_eng.OP_CONV, reg, d, new, params=(self.weight_var, self.bias, a, c),
                  windows=(self.filter_shape, self.stride, self.padding))
        return reg, new


@dataclass(frozen=True)
class AvgPool(Layer):
    """Average pooling over windows of ``window_shape`` positions (strides: the window),
    as neural-tangents' ``stax.AvgPool(window_shape, strides, padding,
    normalize_edges=False)``: a window that reaches past the edge (``"SAME"``) still divides
    by its full size.  The kernel needs the full spatial covariance:

        K'_{h,h'} = 1 / |W|^2 sum_{D, D'} K_{s h + D, s h' + D'}.
    """

    window_shape: tuple = (2, 2)
    strides: tuple | None = None
    padding: str = "VALID"

    spatial = True
    needs_full = True

    def __post_init__(self):
        _check_window(self, "window_shape")

    @property
    def window_rank(self):
        return len(self.window_shape)

    @property
    def stride(self):
        """The strides (the window's shape when not given)."""
        return self.strides if self.strides is not None else self.window_shape

    def __repr__(self):
        extra = _extra_repr(self, ("window_shape", "strides", "padding"))
        return f"AvgPool({extra[2:]})"

    def apply(self, k):
        """Both positions of every field averaged over their own windows
        (normalize_edges=False: divided by the full window everywhere)."""
        k = single_input(self, k)
        require_spatial(self, k, len(self.window_shape))
        require_full(self, k)
        idxs = window_indices(k, self.window_shape, self.stride, self.padding)
        return map_fields(k, lambda m, nb: pool_mean(m, nb, k, idxs))

    def lower(self, comp, reg, d):
        new = self.apply(d)
        comp.emit(_eng.OP_POOL, reg, d, new,
                  windows=(self.window_shape, self.stride, self.padding))
        return reg, new


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """The mean over all positions: K' = mean_{h, h'} K_{h,h'} (neural-tangents'
    ``GlobalAvgPool``; needs the full spatial covariance).  Gives a vector of C features."""

    spatial = True
    needs_full = True
    takes_padding = True

    @staticmethod
    def weights(mask):
        """Per-step factors (n, T) that leave padded steps out of the mean over T: 1 / the
        fraction of the steps that are the sequence's."""
        return mask * (mask.shape[1] / mask.sum(axis=1, keepdims=True))

    def apply(self, k):
        """The mean over every pair of positions (of the steps, for padded sequences)."""
        k = single_input(self, k)
        require_spatial(self, k)
        require_full(self, k)
        if k.mask1 is not None:
            k = _scale_positions(k, self.weights(k.mask1), self.weights(k.mask2))
        ns = len(k.axes)
        return map_fields(k, lambda m, nb: m.mean(axis=tuple(range(nb, nb + 2 * ns))),
                          axes=(), full_spatial=False, mask1=None, mask2=None)

    def lower(self, comp, reg, d):
        new = self.apply(d)
        if d.mask1 is not None:
            comp.emit(_eng.OP_NORMALIZE, reg, d, d, vec=comp.vector(self.weights(d.mask1)))
        comp.emit(_eng.OP_GLOBAL_POOL, reg, d, new)
        return reg, new


@dataclass(frozen=True)
class Flatten(Layer):
    """All positions' features as one vector of H W C features (neural-tangents'
    ``Flatten``): K' = mean_h K_{h,h}, the mean of the spatially diagonal covariance, so a
    following Dense (fan-in H W C) sees the average over positions.  Needs only the
    diagonal maps (H W per pair)."""

    spatial = True

    def apply(self, k):
        k = single_input(self, k)
        require_spatial(self, k)
        ns = len(k.axes)
        p = math.prod(spatial_shape(k))

        def trace(m, nb):
            if k.full_spatial:
                m = np.diagonal(m.reshape(m.shape[:nb] + (p, p)), axis1=-2, axis2=-1)
                return m.mean(axis=-1)
            return m.mean(axis=tuple(range(nb, nb + ns)))

        # Each feature follows one position: a mixture of the positions' Gaussians.
        return map_fields(k, trace, axes=(), full_spatial=False, mixture=k.mixture or p > 1,
                          width=None if k.width is None else k.width * p)

    def lower(self, comp, reg, d):
        new = self.apply(d)
        comp.emit(_eng.OP_FLATTEN, reg, d, new)
        return reg, new


@dataclass(frozen=True, eq=False)
class Aggregate(Layer):
    """Graph convolution over (N, nodes, C) inputs: z_i = sum_j A_ij x_j, with one fixed
    adjacency A shared by all examples (neural-tangents' ``stax.Aggregate`` with the same
    pattern for every example).  The kernel is K' = A K A^T over the nodes, the same for
    the NTK (no parameters); it needs the full covariance over the nodes.

    ``adjacency`` is a dense (nodes, nodes) array, a scipy.sparse matrix, or the path of a
    ``.npy`` file (dense) or ``.npz`` file (``scipy.sparse.save_npz``).  Only the path form
    has a repr that ``--arch`` parses back (``Aggregate('adj.npy')``); an array's repr
    summarises it.
    """

    adjacency: object
    spatial = True
    needs_full = True
    window_rank = 1

    def __post_init__(self):
        self.matrix  # loaded and validated once

    @cached_property
    def matrix(self):
        """The adjacency as a float64 array (dense) or scipy CSR matrix (sparse)."""
        a = self.adjacency
        if isinstance(a, str):
            a = _load_adjacency(a)
        if hasattr(a, "tocsr"):  # scipy.sparse
            a = a.tocsr().astype(np.float64)
            values = a.data
        else:
            try:
                a = np.asarray(a, dtype=np.float64)
            except (TypeError, ValueError):
                raise ArchitectureError("Aggregate needs a (nodes, nodes) adjacency array, "
                                        "a scipy.sparse matrix or a .npy/.npz path") from None
            values = a
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
            raise ArchitectureError(f"Aggregate needs a square (nodes, nodes) adjacency, got "
                                    f"shape {a.shape}")
        if not np.all(np.isfinite(values)):
            raise ArchitectureError("Aggregate's adjacency has NaN or infinite entries")
        return a

    @property
    def nodes(self):
        return self.matrix.shape[0]

    def dense(self):
        """The adjacency as a dense array."""
        a = self.matrix
        return a.toarray() if hasattr(a, "toarray") else a

    def __eq__(self, other):
        return (isinstance(other, Aggregate) and self.matrix.shape == other.matrix.shape
                and np.array_equal(self.dense(), other.dense()))

    def __hash__(self):
        return hash(("Aggregate", self.matrix.shape, float(abs(self.dense()).sum())))

    def __repr__(self):
        if isinstance(self.adjacency, str):
            return f"Aggregate({self.adjacency!r})"
        a = self.matrix
        kind = "sparse" if hasattr(a, "tocsr") else "dense"
        return f"Aggregate(<{kind} {a.shape[0]}x{a.shape[1]} adjacency>)"

    def apply(self, k):
        """K' = A K A^T over the nodes (both positions of the full covariance)."""
        k = single_input(self, k)
        require_spatial(self, k, 1)
        require_full(self, k)
        nodes = spatial_shape(k)[0]
        if nodes != self.nodes:
            raise ArchitectureError(f"Aggregate's adjacency has {self.nodes} nodes but its "
                                    f"inputs have {nodes}")
        a = self.dense()
        # optimize: two matrix products, not the naive loop over all four node indices
        return map_fields(k, lambda m, nb: np.einsum("hk,...kl,gl->...hg", a, m, a,
                                                     optimize=True))

    def lower(self, comp, reg, d):
        new = self.apply(d)
        comp.aggregate(self)
        comp.emit(_eng.OP_AGGREGATE, reg, d, new)
        return reg, new


def _load_adjacency(path):
    """A dense .npy (read as every data file is, :func:`nngp_lut.data.load_array`) or a
    scipy.sparse .npz adjacency file; any failure is one line naming the file."""
    from ..data import load_array, unreadable

    if path.endswith(".npy"):
        return load_array(path)
    if not path.endswith(".npz"):
        raise ArchitectureError(f"an adjacency is a dense .npy or a scipy.sparse .npz file; "
                                f"got {path!r}")
    import scipy.sparse

    try:
        return scipy.sparse.load_npz(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise unreadable(path, exc, "a scipy.sparse .npz file") from None


# --- sequences (N, T, C): the time axis --------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SimpleRNN(Layer):
    """Elman recurrent layer over the time axis of (N, T, C) sequences, its weights shared
    over time and the state h_0 = 0 (NTK parameterisation):

        g_t = sqrt(weight_var / n) W h_{t-1} + sqrt(input_var / C) U x_t + sqrt(bias_var) b,
        h_t = phi(g_t),

    with W, U, b ~ N(0, 1) and n = ``width`` units.  Its output is the sequence h_1 .. h_T
    (read it out with :class:`LastStep` or :class:`GlobalAvgPool`, the mean over time, or
    feed it to another SimpleRNN).  The kernel over pairs of steps (t, s) is the recursion
    of Yang, "Wide Feedforward or Recurrent Neural Networks of Any Architecture are Gaussian
    Processes" (Tensor Programs I, NeurIPS 2019; GP4A's simple RNN), for any activation
    through its table:

        K_g^{t,s} = weight_var F_phi(K_g^{t-1,t-1}(x, x), K_g^{s-1,s-1}(x', x'), K_g^{t-1,s-1})
                    + input_var K_in^{t,s} + bias_var      (the first term 0 at t = 1 or s = 1),
        K_h^{t,s} = F_phi(K_g^{t,t}(x, x), K_g^{s,s}(x', x'), K_g^{t,s}),

    and the NTK (Alemohammad et al., "The Recurrent Neural Tangent Kernel", ICLR 2021):

        Theta_g^{t,s} = K_g^{t,s} + weight_var Theta_h^{t-1,s-1} + input_var Theta_in^{t,s},
        Theta_h^{t,s} = E[phi'(u) phi'(v)] Theta_g^{t,s}.

    The record is the full (T, T') map of every pair of inputs; the fused engine runs it as
    one recursion op (OP_RECUR) over the rows t.
    """

    phi: object
    weight_var: float = 1.0
    input_var: float = 1.0
    bias_var: float = 0.0
    width: int | None = None

    spatial = True
    needs_full = True
    window_rank = 1
    reads_variances = True
    takes_padding = True  # the padding before a sequence leaves h_0 = 0 (masks)

    def __post_init__(self):
        _check_variances(self, ("weight_var", "input_var"), ("bias_var",))
        _check_width(self)
        self.activation  # a bad phi fails here

    @cached_property
    def activation(self):
        return Activation(self.phi)

    def _key(self):
        return (self.activation.key, self.weight_var, self.input_var, self.bias_var,
                self.width)

    def __eq__(self, other):
        return isinstance(other, SimpleRNN) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        phi = repr(self.activation)[len("Activation("):-1]
        width = "" if self.width is None else f", width={self.width!r}"
        return (f"SimpleRNN({phi}, {self.weight_var!r}, {self.input_var!r}, "
                f"{self.bias_var!r}{width})")

    def variances(self, d, mask=None):
        """K_g^{t,t}(x, x) of every step, (n, T), from the input's per-step variances d:
        q_t = weight_var E[phi^2](q_{t-1}) + input_var d_t + bias_var (no first term at the
        first step, nor after a padded step, whose state is h = 0)."""
        q = self.input_var * d + self.bias_var
        moment = self.activation.table.second_moment
        for t in range(1, q.shape[1]):
            carry = moment(q[:, t - 1])
            q[:, t] += self.weight_var * (carry if mask is None else mask[:, t - 1] * carry)
        return q

    def _recur(self, kin, tin, qa, qb, ma, mb):
        """The recursion on one field: kin (..., T, T') the input's map, tin its NTK (or
        None), qa (..., T, 1) and qb (..., 1, T') the steps' variances, ma and mb the masks
        alike (or None); returns K_h, Theta_h (0 at padded steps)."""
        table, w = self.activation.table, self.weight_var
        g = self.input_var * kin + self.bias_var
        theta = None if tin is None else g + self.input_var * tin
        h = np.empty_like(g)
        ht = None if tin is None else np.empty_like(g)
        qb_row = qb[..., 0, :]
        for t in range(g.shape[-2]):
            if t > 0:
                g[..., t, 1:] += w * h[..., t - 1, :-1]
                if theta is not None:
                    theta[..., t, 1:] += w * (h[..., t - 1, :-1] + ht[..., t - 1, :-1])
            q1, q2, row = np.broadcast_arrays(qa[..., t, :], qb_row, g[..., t, :])
            rho = correlations(row, np.sqrt(q1 * q2))
            mask = 1.0 if ma is None else ma[..., t, :] * mb[..., 0, :]
            h[..., t, :] = table.F(q1, q2, rho) * mask
            if theta is not None:
                ht[..., t, :] = table.dF(q1, q2, rho) * theta[..., t, :] * mask
        return h, ht

    def apply(self, k):
        k = single_input(self, k)
        require_spatial(self, k, 1)
        require_full(self, k)
        m1, m2 = k.mask1, k.mask2
        q1 = self.variances(positional(k.var1, k), m1)
        q2 = q1 if k.var2 is k.var1 else self.variances(positional(k.var2, k), m2)

        def rows(v):  # (n, T) against the first or the second step of a self map
            return None if v is None else v[:, :, None]

        def cols(v):
            return None if v is None else v[:, None, :]

        var1, ntk_var1 = self._recur(k.var1, k.ntk_var1, rows(q1), cols(q1), rows(m1),
                                     cols(m1))
        var2, ntk_var2 = (var1, ntk_var1) if k.var2 is k.var1 else \
            self._recur(k.var2, k.ntk_var2, rows(q2), cols(q2), rows(m2), cols(m2))
        nngp = ntk = None
        if k.nngp is not None:
            first = (slice(None), None, slice(None), None)  # (n1, 1, T, 1)
            second = (None, slice(None), None, slice(None))  # (1, n2, 1, T')
            nngp, ntk = self._recur(k.nngp, k.ntk, q1[first], q2[second],
                                    None if m1 is None else m1[first],
                                    None if m2 is None else m2[second])
        return k.replace(nngp=nngp, ntk=ntk, var1=var1, var2=var2, ntk_var1=ntk_var1,
                         ntk_var2=ntk_var2, is_gaussian=False, mixture=False,
                         width=self.width)

    def lower(self, comp, reg, d):
        new = self.apply(d)
        u, b, w = self.input_var, self.bias_var, self.weight_var
        comp.affine(reg, d, (u, b, u, b) if comp.with_ntk else (u, b, 0.0, 0.0))
        steps = self.variances(positional(d.var1, d), d.mask1)
        comp.activation(self.activation.table, reg, d.replace(var1=steps, full_spatial=False),
                        code=_eng.OP_RECUR, params=(w, 0.0, w if comp.with_ntk else 0.0, 0.0),
                        mask=d.mask1)
        return reg, new


def _unpadded(kin, mask_a, mask_b):
    """Input maps (..., T, T) for the gated core: contiguous, zero at padded steps (their
    values carry no meaning), and the first step of each sequence of the rows (0 without
    masks)."""
    kin = np.ascontiguousarray(kin, dtype=np.float64)
    steps = kin.shape[-1]
    if mask_a is None:
        return kin, np.zeros(kin.shape[0], dtype=np.int64)
    both = mask_a[:, None, :, None] * mask_b[None, :, None, :] if kin.ndim == 4 else \
        mask_a[:, :, None] * mask_b[:, None, :]
    first = (steps - mask_a.sum(axis=1)).astype(np.int64)
    return np.ascontiguousarray(np.where(both > 0, kin, 0.0)), first


@dataclass(frozen=True, eq=False)
class _GatedRecurrent(Layer):
    """A gated recurrent layer (GRU, LSTM) over the time axis of (N, T, C) sequences: the
    fields, checks and rule they share.  Its kernel over pairs of steps is an expectation
    over the cell's whole history, by randomised QMC over its Tensor Program
    (:mod:`nngp_lut._core.gated`); every entry of a pair's (T, T') map is within ``tol``
    (the 99 % interval over 16 randomisations) unless a ToleranceWarning says otherwise.
    NNGP only: the NTK of a gated cell is not built."""

    phi: object = "tanh"
    weight_var: float = 1.0
    input_var: float = 1.0
    bias_var: float = 0.0
    tol: float = GATED_TOL
    max_points: int = GATED_MAX_POINTS
    width: int | None = None

    spatial = True
    needs_full = True
    window_rank = 1
    fused = False
    kinds = ("nngp",)
    takes_padding = True  # a padded sequence's chain starts at its first step (h = c = 0)
    cell = None  # the cell code of nngp_lut._core.gated

    def __post_init__(self):
        _check_variances(self, ("weight_var", "input_var", "tol"), ("bias_var",))
        points = self.max_points
        if isinstance(points, bool) or int(points) != points or points < GATED_MIN_POINTS \
                or int(points) & (int(points) - 1):
            raise ArchitectureError(f"{type(self).__name__} max_points must be a power of 2 "
                                    f">= {GATED_MIN_POINTS}, got {points!r}")
        _check_width(self)
        self.function  # a bad phi fails here

    @cached_property
    def function(self):
        """phi as a compiled function: the cell evaluates it on its particles."""
        return compiled_phi(self)

    def _key(self):
        return (type(self), self.function.name, self.function.source, self.weight_var,
                self.input_var, self.bias_var, self.tol, self.max_points, self.width)

    def __eq__(self, other):
        return isinstance(other, _GatedRecurrent) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        phi = phi_repr(self.function)
        extra = _extra_repr(self, ("tol", "max_points", "width"))
        return (f"{type(self).__name__}({phi}, {self.weight_var!r}, {self.input_var!r}, "
                f"{self.bias_var!r}{extra})")

    def maps(self, kin1, kin2=None, kin12=None, mask1=None, mask2=None):
        """The kernel maps of the cell's states from its inputs' maps: kin1 (n1, T, T) and
        kin2 (n2, T, T) each input's own, kin12 (n1, n2, T, T) the pairs' (or None); mask1
        (n1, T) and mask2 (n2, T) of padded sequences (aligned at their last step: 0.0 at the
        padding before their steps), or None.

        Returns (var1, var2, nngp), each an :class:`~nngp_lut.expectation.Estimate` of the
        maps with their errors (the 99 % interval over the randomisations), each entry within
        ``tol`` where ``converged`` (var2 and nngp None when not asked).  A first round runs
        2^7 particles per randomisation; each later round recomputes the maps still above
        ``tol`` with at least twice the particles, as many as the error's 1/sqrt(m) fall
        predicts for the median of them, up to ``max_points``.
        """
        cell = self.cell
        phi = _gated.PHI_CODES.get(self.function.name, self.function.phi)  # cached if a code
        steps = kin1.shape[-1]
        dim = _gated.GATES[cell] * 2 * steps
        # The particles' normals are held three times over (uniforms, normals, their
        # transpose): within GATED_MAX_BYTES, whatever max_points asks.
        affordable = GATED_MAX_BYTES // (3 * 8 * RANDOMIZATIONS * dim)
        max_points = max(GATED_MIN_POINTS, min(self.max_points,
                                               2 ** int(math.log2(max(affordable, 1)))))
        points = NormalPoints(dim)
        multiplier = interval_multiplier(RANDOMIZATIONS)
        args = (cell, phi, self.weight_var, self.input_var, self.bias_var)
        kin1, first1 = _unpadded(kin1, mask1, mask1)
        if kin2 is not None:
            kin2, first2 = _unpadded(kin2, mask2, mask2)
        if kin12 is not None:
            kin12, _ = _unpadded(kin12, mask1, mask2)
            first2 = first1 if kin2 is None else first2
        sets = [kin1] + ([] if kin2 is None else [kin2])
        firsts = [first1] + ([] if kin2 is None else [first2])
        results = [np.zeros((2,) + kin.shape) for kin in sets]  # mean and error
        active = [np.ones(kin.shape[0], dtype=bool) for kin in sets]
        # One set with itself: the pairs j <= i only, the others their transposes (the
        # kernel exactly symmetric, at half the work).
        symmetric = kin12 is not None and kin2 is None
        if kin12 is not None:
            results.append(np.zeros((2,) + kin12.shape))
            active.append(np.tri(*kin12.shape[:2], dtype=bool) if symmetric else
                          np.ones(kin12.shape[:2], dtype=bool))
        spent = [np.zeros(a.shape, dtype=np.int64) for a in active]  # particles per map
        m = GATED_MIN_POINTS
        while True:
            x = points.first(m).reshape(RANDOMIZATIONS, m, 2 * steps, -1)
            xi = np.ascontiguousarray(x.transpose(0, 3, 2, 1))  # (R, gates, slots, m)
            for kin, first, res, act in zip(sets, firsts, results, active):
                idx = np.flatnonzero(act)
                if idx.size:
                    part = np.zeros((2, idx.size) + kin.shape[1:])
                    _gated.self_maps(*args, kin[idx], first[idx], xi, multiplier, part[0],
                                     part[1])
                    res[:, idx] = part
            if kin12 is not None and active[-1].any():
                _gated.pair_maps(*args, sets[0], sets[-1], kin12, first1, first2, xi,
                                 multiplier, active[-1], results[-1][0], results[-1][1])
            missing = []  # the errors of the maps still above tol
            for res, act, used in zip(results, active, spent):
                used[act] = RANDOMIZATIONS * m
                err = res[1].max(axis=(-2, -1))
                act &= err > self.tol
                missing.append(err[act])
            missing = np.concatenate(missing)
            if m >= max_points or not missing.size:
                break
            # The error falls about as 1/sqrt(m): jump to where the median map still above
            # tol meets it (the worst would hold every map to the hardest pair's cost).
            ratio = float(np.median(missing)) / self.tol
            m = min(max_points, max(2 * m, 2 ** math.ceil(math.log2(m * ratio ** 2))))
        missed = sum(int(a.sum()) for a in active)
        if missed:
            worst = max(float(r[1].max()) for r in results)
            capped = "" if max_points == self.max_points else \
                f" (max_points {self.max_points} capped by the memory budget)"
            warnings.warn(f"{type(self).__name__}: {missed} maps did not reach tol = "
                          f"{self.tol:g} within {max_points} particles per randomisation"
                          f"{capped} (largest error {worst:.3g}): raise max_points or tol",
                          ToleranceWarning, stacklevel=2)
        if symmetric:
            upper = np.triu_indices(kin12.shape[0], 1)
            res, lower = results[-1], upper[::-1]
            res[:, upper[0], upper[1]] = np.swapaxes(res[:, lower[0], lower[1]], -1, -2)
            active[-1][upper] = active[-1][lower]
            spent[-1][upper] = spent[-1][lower]
        est = [Estimate(res[0], res[1], used, ~act)
               for res, act, used in zip(results, active, spent)]
        return est[0], est[1] if kin2 is not None else None, \
            None if kin12 is None else est[-1]

    def apply(self, k):
        k = single_input(self, k)
        require_spatial(self, k, 1)
        require_full(self, k)
        if k.has_ntk:
            raise ArchitectureError(not_given(self, "ntk"))
        same = k.var2 is k.var1
        var1, var2, nngp = (None if e is None else e.value
                            for e in self.maps(k.var1, None if same else k.var2, k.nngp,
                                               k.mask1, k.mask2))
        return k.replace(nngp=nngp, var1=var1, var2=var1 if same else var2,
                         is_gaussian=False, mixture=False, width=self.width)

    def lower(self, comp, reg, d):
        raise NotFusable(f"{type(self).__name__}'s kernel comes from randomised QMC over its "
                         "history, not from engine ops")


@dataclass(frozen=True, eq=False, repr=False)
class GRU(_GatedRecurrent):
    """Gated recurrent unit over the time axis of (N, T, C) sequences (Cho et al. 2014, eqs.
    (5)-(8), the reset gate before the candidate's weights), weights shared over time, state
    h_0 = 0, NTK parameterisation (each pre-activation a = sqrt(weight_var / n) W h +
    sqrt(input_var / C) U x_t + sqrt(bias_var) b with its own W, U, b ~ N(0, 1)):

        z_t = sigmoid(a_z(h_{t-1})),  r_t = sigmoid(a_r(h_{t-1})),
        h_t = (1 - z_t) h_{t-1} + z_t phi(a_h(r_t * h_{t-1})).

    Its kernel is the NNGP of Yang's Tensor Programs I (its GRU example), computed by
    randomised QMC to ``tol`` (:class:`_GatedRecurrent`); NNGP only.  Read it out with
    :class:`LastStep` or :class:`GlobalAvgPool`; padded sequences as :class:`SimpleRNN`.
    """

    cell = _gated.CELL_GRU


@dataclass(frozen=True, eq=False, repr=False)
class LSTM(_GatedRecurrent):
    """Long short-term memory over the time axis of (N, T, C) sequences (Hochreiter &
    Schmidhuber 1997 with the forget gate of Gers et al. 2000, no peepholes), weights
    shared over time, h_0 = c_0 = 0, pre-activations as :class:`GRU`'s:

        f, i, o = sigmoid(a_f), sigmoid(a_i), sigmoid(a_o)  (each of h_{t-1} and x_t),
        c_t = f c_{t-1} + i phi(a_g),   h_t = o phi(c_t)

    (phi is tanh in the usual LSTM, and as Keras's ``activation`` it serves both places).
    Its kernel, derived in DESIGN.md section 3 from the Netsor master theorem, is computed by
    randomised QMC to ``tol`` (:class:`_GatedRecurrent`); NNGP only.
    """

    cell = _gated.CELL_LSTM


@dataclass(frozen=True, eq=False)
class BatchNorm(Layer):
    """Batch normalisation in training mode (Ioffe & Szegedy 2015, no epsilon, no affine
    part), then the activation ``phi`` (None: BN alone): each unit's values over the batch
    are centred and scaled to mean square 1, z = phi(sqrt(B) G h / |G h|), G = I - 1 1^T / B.

    Its kernel depends on the whole batch (:mod:`nngp_lut.kernel.batchnorm`): K' = E[z z^T]
    with h ~ N(0, K) over the batch, by the 1-D integral of Yang et al. 2019 for the identity
    and relu (to 1e-10) and by randomised QMC to ``tol`` for any other phi (a
    ToleranceWarning when not met).  The batch is every input of the call:
    ``Network.kernel(x)`` is the kernel of the batch x, ``kernel(x1, x2)`` the x1 x x2 block
    of the batch x1 and x2 together.  The activation is part of the layer because after BN
    the units are no longer Gaussian, and phi's kernel needs the whole batch's law.  NNGP
    only; vectors only (not images or sequences).  GP prediction, which needs one prior over
    the training and test inputs, is refused in this mode.

    **Inference mode with a reference set** (``Network(layer, reference=R)``, relu and the
    identity): R passes through the network as a batch of its own, and every input is
    normalised by R's statistics at each BatchNorm, BN_R(h)(x) = sqrt(B) (h(x) - mean_R h) /
    |G h_R|, as a trained network normalises test inputs by stored statistics.  The kernel
    is then a function of pairs (GP prediction works), by the same 1-D integral with each
    pair's covariance with R (:func:`nngp_lut.kernel.batchnorm.reference_kernel`); R needs
    at least 4 inputs of independent pre-activations.
    """

    phi: object = None
    tol: float = BATCHNORM_TOL

    needs_gaussian = True
    fused = False
    kinds = ("nngp",)
    batch_coupled = True

    def __post_init__(self):
        _check_variances(self, ("tol",))
        self.function  # a bad phi fails here

    @cached_property
    def function(self):
        """phi as a compiled function, or None for BN alone."""
        return None if self.phi is None else compiled_phi(self)

    def _key(self):
        f = self.function
        return (None if f is None else (f.name, f.source), self.tol)

    def __eq__(self, other):
        return isinstance(other, BatchNorm) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        phi = "" if self.function is None else phi_repr(self.function)
        extra = _extra_repr(self, ("tol",))
        return f"BatchNorm({phi}{extra if phi else extra[2:]})"

    def batch_kernel(self, cov):
        """K' over the batch from its pre-activation kernel ``cov`` (B, B)."""
        from . import batchnorm

        name = self.activation_name
        if name in batchnorm.HOMOGENEOUS:
            return batchnorm.homogeneous_kernel(cov, name)
        est = batchnorm.sampled_kernel(cov, self.function, self.tol)
        return (est.value + est.value.T) / 2

    def reference_kernel(self, k):
        """K' and its diagonals over two sets that start with the reference batch
        (:func:`nngp_lut.kernel.batchnorm.reference_kernel`)."""
        from . import batchnorm

        return batchnorm.reference_kernel(k.nngp, k.var1, k.var2, k.reference,
                                          self.activation_name)

    @property
    def activation_name(self):
        """phi's name ("identity" for BN alone)."""
        return "identity" if self.function is None else self.function.name

    def apply(self, k):
        k = single_input(self, k)
        if k.axes:
            raise ArchitectureError("BatchNorm normalises vectors over the batch: use it on "
                                    "features, not on images or sequences (Flatten() or "
                                    "GlobalAvgPool() first)")
        if k.has_ntk:
            raise ArchitectureError(not_given(self, "ntk"))
        if not k.is_gaussian or k.mixture:
            raise ArchitectureError("BatchNorm needs Gaussian pre-activations: put a Dense "
                                    "before it")
        if k.reference:  # inference mode: every input normalised by the reference's batch
            if k.nngp is None:
                raise ArchitectureError("BatchNorm with a reference set needs the pairs' "
                                        "record (Network computes it so)")
            new, var1, var2 = self.reference_kernel(k)
            return k.replace(nngp=new, var1=var1, var2=var2, is_gaussian=False,
                             mixture=False)
        batch = k.nngp is not None and k.nngp.shape[0] == k.nngp.shape[1] and \
            np.allclose(np.diagonal(k.nngp), k.var1, rtol=1e-12, atol=0) and \
            np.allclose(k.var1, k.var2, rtol=1e-12, atol=0)
        if not batch:  # the pairs of one set with itself
            raise ArchitectureError("BatchNorm couples the inputs of a batch: its record must "
                                    "hold the whole batch (Network computes it so)")
        new = self.batch_kernel(k.nngp)
        diag = np.diagonal(new).copy()
        return k.replace(nngp=new, var1=diag, var2=diag, is_gaussian=False, mixture=False)


#: The logit scalings of SelfAttention: 1/n (Tensor Programs, GP4A) and the standard 1/sqrt(n).
SCALINGS = ("1/n", "1/sqrt(n)")


@dataclass(frozen=True)
class SelfAttention(Layer):
    """Scaled dot-product self-attention over the positions of (N, T, C) sequences, NTK
    parameterisation, in one of two scalings of its logits (``scaling``).

    With n = ``width`` units per head and every weight ~ N(0, 1),
    q = h W_q / sqrt(C), k = h W_k / sqrt(C), v = h W_v / sqrt(C) per head, and

        z_i = sum_j softmax_j(logits)_ij sqrt(weight_var) v_j + sqrt(bias_var) b

    (``heads`` > 1: each head has its own W_q, W_k, W_v; the heads' outputs are
    concatenated and mapped back to n units by W_O / sqrt(heads n), so the kernel is the mean
    over heads).

    **scaling="1/n"** (Yang's Tensor Programs, GP4A's transformer):
    logits_ij = logit_var / n <q_i, k_j>.  As n grows the logits concentrate, so each input
    x has fixed attention weights A_x:

    * ``tied=True`` (W_k = W_q, as GP4A's transformer): logits -> logit_var K(x, x)_{ij},
      the input's own covariance of positions i and j;
    * ``tied=False`` (independent W_q and W_k): logits -> 0, and attention is uniform.

    The kernel is K' = bias_var + weight_var A_x K A_x'^T and the NTK Theta' = K' +
    weight_var A_x Theta A_x'^T (the query and key weights' gradients vanish at this
    scaling).  Every head has this same limit.  The engine applies A_x K A_x'^T as a mixing
    op (OP_MIX), the matrices stored with the per-input vectors.

    **scaling="1/sqrt(n)"** (the standard one of Vaswani et al. 2017, eq. (1)):
    logits_ij = sqrt(logit_var / n) <q_i, k_j>, with independent W_q and W_k
    (``tied=False``, required).  The logits do not concentrate: they are a Gaussian process
    with Cov(G_ij(x), G_kl(y)) = logit_var K(x_i, y_k) K(x_j, y_l), and the kernel is

        K'(x_i, y_k) = bias_var + weight_var E[softmax(G_i(x))^T K(x, y) softmax(G_k(y))]

    (Hron et al. 2020, section 3), a 2T-dimensional Gaussian expectation per pair of
    positions, computed by randomised QMC (:mod:`nngp_lut.kernel.attention`) to ``tol``:
    every entry of the map after the layer is within ``tol`` (the 99 % interval over 16
    randomisations) unless a ToleranceWarning says otherwise; :meth:`mixing` returns the
    expectations with their errors.  The cost grows as T^4 per pair of sequences times the
    points, so keep T small.  Caveats, stated because they decide what a finite network
    checks:

    * the kernel is the limit of width *and heads* to infinity (Hron et al. 2020, Theorem
      3).  With finitely many heads the logits of each head stay random at every width, so
      one network's kernel does not converge: only the mean over networks and heads does
      (``nngp-lut mc`` reports it, not a width slope).  After such a layer the features are
      a Gaussian mixture; layers that act linearly on them (Dense, residual sums,
      GlobalAvgPool, LastStep) keep the mean kernel exact, nonlinear ones (Activation,
      LayerNorm) see it only as the heads grow (a bias O(1/heads) on a finite network);
    * ``tied=True`` is refused: tied weights give logits of mean sqrt(n) logit_var K(x, x)
      that grow with the width (hard attention in the limit);
    * NNGP only: the NTK at this scaling (the query and key weights' gradients do not
      vanish) is not built, and get="ntk" is refused;
    * the fused engine has no op for it: networks with it are computed layer by layer.

    References
    ----------
    Yang, "Tensor Programs I" (NeurIPS 2019) and "II" (2020), the attention examples;
    Hron, Bahri, Sohl-Dickstein & Novak, "Infinite attention: NNGP and NTK for deep attention
    networks", ICML 2020, section 3 and Theorem 3 (the d^{-1/2} scaling, heads -> infinity);
    Vaswani et al., "Attention is all you need", NeurIPS 2017, eq. (1) and section 3.2.2.
    """

    weight_var: float = 1.0
    bias_var: float = 0.0
    logit_var: float = 1.0
    tied: bool = True
    width: int | None = None
    scaling: str = "1/n"
    heads: int = 1
    tol: float = ATTENTION_TOL
    max_points: int = ATTENTION_MAX_POINTS

    spatial = True
    needs_full = True
    window_rank = 1
    reads_variances = True

    def __post_init__(self):
        _check_variances(self, ("weight_var", "tol"), ("bias_var", "logit_var"))
        if not isinstance(self.tied, bool):
            raise ArchitectureError(f"SelfAttention tied must be True or False, got "
                                    f"{self.tied!r}")
        if self.scaling not in SCALINGS:
            raise ArchitectureError(f"SelfAttention scaling must be one of {SCALINGS}, got "
                                    f"{self.scaling!r}")
        if self.scaling == "1/sqrt(n)" and self.tied:
            raise ArchitectureError("SelfAttention(scaling='1/sqrt(n)') needs tied=False: tied "
                                    "query and key weights give logits of mean sqrt(n) "
                                    "logit_var K(x, x), which grow with the width (hard "
                                    "attention in the limit, no Gaussian kernel)")
        for name, least in (("heads", 1), ("max_points", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < least or (name == "max_points" and value & (value - 1)):
                want = "a power of 2 >= 2" if name == "max_points" else "a positive integer"
                raise ArchitectureError(f"SelfAttention {name} must be {want}, got {value!r}")
        _check_width(self)

    def __repr__(self):
        extra = _extra_repr(self, ("logit_var", "tied", "width", "scaling", "heads", "tol",
                                   "max_points"))
        return f"SelfAttention({self.weight_var!r}, {self.bias_var!r}{extra})"

    @property
    def fused(self):
        """The engine runs the 1/n scaling (OP_MIX); 1/sqrt(n) goes layer by layer."""
        return self.scaling == "1/n"

    @property
    def kinds(self):
        """NNGP and NTK at 1/n; the NNGP only at 1/sqrt(n)."""
        return ("nngp", "ntk") if self.scaling == "1/n" else ("nngp",)

    @property
    def self_averaging(self):
        """At 1/sqrt(n) each head's logits stay random at every width."""
        return self.scaling == "1/n"

    def weights(self, var):
        """The attention weights A_x (n, T, T) from each input's own covariance (n, T, T),
        at 1/n scaling."""
        if not self.tied:
            return np.full(var.shape, 1.0 / var.shape[-1])
        z = self.logit_var * var
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def mixing(self, kx, ky, kxy):
        """At 1/sqrt(n) scaling, E[softmax(G_i(x))^T K(x, y) softmax(G_k(y))] for every pair
        of positions (i, k), with its error: an :class:`~nngp_lut.expectation.Estimate` of
        shape (..., T, T) from :func:`~nngp_lut.kernel.attention.softmax_mixing`.

        kx, ky (..., T, T) are each input's own kernel over its positions, kxy (..., T, T)
        the kernel between them.  The entries of the kernel after the layer are bias_var +
        weight_var times its values, their errors weight_var times its errors (within
        ``tol`` where ``converged``)."""
        from .attention import softmax_mixing

        return softmax_mixing(kx, ky, kxy, self.logit_var, tol=self.tol / self.weight_var,
                              max_points=self.max_points)

    def apply(self, k):
        k = single_input(self, k)
        require_spatial(self, k, 1)
        require_full(self, k)
        if self.scaling == "1/sqrt(n)":
            return self._apply_sqrt(k)
        a1 = self.weights(k.var1)
        a2 = a1 if k.var2 is k.var1 else self.weights(k.var2)
        w, b = self.weight_var, self.bias_var

        def own(a, m):
            return np.einsum("ihk,ikl,igl->ihg", a, m, a)

        def pair(m):
            return np.einsum("ihk,ijkl,jgl->ijhg", a1, m, a2)

        out = dict(var1=b + w * own(a1, k.var1), var2=b + w * own(a2, k.var2),
                   nngp=None if k.nngp is None else b + w * pair(k.nngp), is_gaussian=True,
                   mixture=False, width=self.width)
        if k.has_ntk:
            out.update(ntk_var1=out["var1"] + w * own(a1, k.ntk_var1),
                       ntk_var2=out["var2"] + w * own(a2, k.ntk_var2),
                       ntk=None if k.ntk is None else out["nngp"] + w * pair(k.ntk))
        return k.replace(**out)

    def _apply_sqrt(self, k):
        """The 1/sqrt(n) rule: one expectation per pair of inputs (and per input for its own
        map), all in one batch; the same input set's pairs once each (the kernel is
        symmetric)."""
        if k.has_ntk:
            raise ArchitectureError(not_given(self, "ntk") + " (its NTK at scaling "
                                    "'1/sqrt(n)' is not built)")
        same = k.var2 is k.var1
        n1, n2 = k.var1.shape[0], k.var2.shape[0]
        parts = [(k.var1, k.var1, k.var1)]
        if not same:
            parts.append((k.var2, k.var2, k.var2))
        if k.nngp is not None:
            if same:
                ia, ib = np.triu_indices(n1, 1)
            else:
                ia, ib = (v.ravel() for v in np.indices((n1, n2)))
            parts.append((k.var1[ia], k.var2[ib], k.nngp[ia, ib]))
        sizes = np.cumsum([p[0].shape[0] for p in parts])[:-1]
        est = self.mixing(*(np.concatenate(v) for v in zip(*parts)))
        missed = int((~est.converged).sum())
        if missed:
            warnings.warn(f"{self!r}: {missed} of {est.converged.size} maps did not reach tol "
                          f"= {self.tol:g} within max_points = {self.max_points} points per "
                          f"randomisation (largest error {self.weight_var * est.error.max():.3g}"
                          "): raise max_points or tol", ToleranceWarning, stacklevel=3)
        w, b = self.weight_var, self.bias_var
        values = np.split(b + w * est.value, sizes)
        var1 = values[0]
        var2 = var1 if same else values[1]
        nngp = None
        if k.nngp is not None:
            if same:
                nngp = np.empty_like(k.nngp)
                nngp[ia, ib] = values[-1]
                nngp[ib, ia] = np.swapaxes(values[-1], -1, -2)
                nngp[np.arange(n1), np.arange(n1)] = var1
            else:
                nngp = values[-1].reshape(k.nngp.shape)
        return k.replace(nngp=nngp, var1=var1, var2=var2, is_gaussian=True, mixture=False,
                         width=self.width)

    def lower(self, comp, reg, d):
        if self.scaling != "1/n":
            raise NotFusable("SelfAttention at scaling '1/sqrt(n)' takes expectations per pair "
                             "of inputs, which no engine op computes")
        new = self.apply(d)
        a = self.weights(d.var1)
        comp.emit(_eng.OP_MIX, reg, d, d, vec=comp.vector(a.reshape(a.shape[0], -1)))
        w, b = self.weight_var, self.bias_var
        comp.affine(reg, d, (w, b, w, b) if comp.with_ntk else (w, b, 0.0, 0.0))
        return reg, new


@dataclass(frozen=True)
class PositionalEmbedding(Layer):
    """A learned positional embedding added to every input: z_t = h_t + sqrt(bias_var) P_t,
    P ~ N(0, 1) of shape (T, C), the same for every input (as a transformer's embedding at
    initialisation).  Being shared by all inputs and independent across positions, it adds
    the bias bias_var I over the positions (a map-valued bias) to the kernel and, as a
    trained parameter, to the NTK (NTK parameterisation):

        K'_{t,s} = K_{t,s} + bias_var [t = s],   Theta'_{t,s} = Theta_{t,s} + bias_var [t = s].

    The engine adds it as OP_DIAGONAL_BIAS.
    """

    bias_var: float = 1.0

    spatial = True
    window_rank = 1

    def __post_init__(self):
        _check_variances(self, nonnegative=("bias_var",))

    def apply(self, k):
        k = single_input(self, k)
        require_spatial(self, k, 1)
        steps = spatial_shape(k)[0]
        bias = self.bias_var * (np.eye(steps) if k.full_spatial else np.ones(steps))
        return map_fields(k, lambda m, nb: m + bias)

    def lower(self, comp, reg, d):
        new = self.apply(d)
        comp.emit(_eng.OP_DIAGONAL_BIAS, reg, d, d, params=(self.bias_var, 0.0, 0.0, 0.0))
        return reg, new


@dataclass(frozen=True)
class LastStep(Layer):
    """The last time step of a sequence, h_T: K' = K^{T,T'} (a sequence-to-one readout;
    :class:`GlobalAvgPool` is the mean over time)."""

    spatial = True
    window_rank = 1
    takes_padding = True  # padded sequences end at the last step

    def apply(self, k):
        k = single_input(self, k)
        require_spatial(self, k, 1)
        pick = (-1, -1) if k.full_spatial else (-1,)
        return map_fields(k, lambda m, nb: m[(slice(None),) * nb + pick], axes=(),
                          full_spatial=False, mask1=None, mask2=None)

    def lower(self, comp, reg, d):
        new = self.apply(d)
        comp.emit(_eng.OP_PICK, reg, d, new, b=spatial_shape(d)[0] - 1)
        return reg, new


@dataclass(frozen=True)
class Identity(Layer):
    """The identity."""

    takes_padding = True

    def apply(self, k):
        return k

    def lower(self, comp, reg, d):
        return reg, d


@dataclass(frozen=True)
class Dropout(Layer):
    """Dropout of probability ``rate``: at evaluation (where the GP lives) the identity."""

    rate: float = 0.5
    takes_padding = True

    def __post_init__(self):
        if not 0.0 <= self.rate < 1.0:
            raise ArchitectureError(f"Dropout rate must lie in [0, 1), got {self.rate}")

    def apply(self, k):
        return k

    lower = Identity.lower


@dataclass(frozen=True)
class FanOut(Layer):
    """One input to ``n`` identical branches."""

    n: int
    takes_padding = True

    def __post_init__(self):
        if int(self.n) != self.n or self.n < 1:
            raise ArchitectureError(f"FanOut needs a positive integer, got {self.n}")

    def apply(self, k):
        return (single_input(self, k),) * int(self.n)

    def lower(self, comp, reg, d):
        new = self.apply(d)
        regs = [reg] + [comp.register() for _ in range(int(self.n) - 1)]
        for r in regs[1:]:
            comp.emit(_eng.OP_COPY, reg, d, d, b=r)
        return tuple(regs), new


def _branches(layer, k):
    if not isinstance(k, tuple):
        raise ArchitectureError(f"{type(layer).__name__} joins branches: put FanOut(n) and "
                                "parallel(...) before it")
    return k


def _shape_of(k):
    """A record's feature layout, for messages: its spatial shape or "a vector"."""
    if not k.axes:
        return "a vector"
    shape = k.var1.shape[1:1 + len(k.axes)]
    return "x".join(map(str, shape)) + " positions"


def _combine(layer, ks, weights, **changes):
    """Weighted sum of records field by field (the branches' weights are independent);
    branches of different shapes are an ArchitectureError."""
    shapes = [_shape_of(k) for k in ks]
    if len(set(shapes)) > 1 or len({k.full_spatial for k in ks}) > 1:
        raise ArchitectureError(
            f"{type(layer).__name__}() joins branches of different shapes "
            f"({', '.join(shapes)}): give every branch the same spatial shape (the same "
            "strides, padding and pooling, or Flatten() in each)")

    def total(name):
        vals = [getattr(k, name) for k in ks]
        return None if vals[0] is None else sum(w * v for w, v in zip(weights, vals))
    first = ks[0]
    return first.replace(**{f: total(f) for f in ("nngp", "ntk", "var1", "var2", "ntk_var1",
                                                   "ntk_var2")},
                         **{"is_gaussian": all(k.is_gaussian for k in ks),
                            "mixture": any(k.mixture for k in ks), **changes})


class _FanIn(Layer):
    """What FanInSum and FanInConcat share: a weighted sum of the branches' records."""

    takes_padding = True

    def lower(self, comp, reg, d):
        new = self.apply(d)
        head, rest = reg[0], reg[1:]
        for r, weight in zip(reg, self.weights(d)):
            if weight != 1.0:
                comp.emit(_eng.OP_SCALE, r, d[0], d[0], params=(weight, 0.0, 0.0, 0.0))
        for r in rest:
            comp.emit(_eng.OP_ADD, r, d[0], d[0], b=head)
        comp.release(rest)
        return head, new


@dataclass(frozen=True)
class FanInSum(_FanIn):
    """The branches' features add: their kernels add (Novak et al. 2020, FanInSum).

    The rule holds for branches independent given the inputs, as in a residual block where
    one branch has its own Dense (neural-tangents' convention).  Two branches without
    weights of their own (two Identity branches of one FanOut: the same features, whose sum
    has 4 K, not 2 K) are refused by :func:`exact_form`, which every Network applies."""

    @staticmethod
    def weights(ks):
        """Each branch's factor in the sum of kernels: 1."""
        return [1.0] * len(ks)

    def apply(self, k):
        ks = _branches(self, k)
        widths = {b.width for b in ks}
        return _combine(self, ks, self.weights(ks),
                        width=widths.pop() if len(widths) == 1 else None)


@dataclass(frozen=True)
class FanInConcat(_FanIn):
    """The branches' features are concatenated: the kernels average, weighted by the
    branches' widths where every branch declares one (a following Dense sums over all
    features), else equally (the sampler gives every undeclared layer the same width).

    The result is a mixture (each feature follows one branch), exact for a following Dense
    or LayerNorm; an Activation after it acts on each branch (:func:`exact_form`)."""

    @staticmethod
    def weights(ks):
        """Each branch's share of the features."""
        widths = [b.width for b in ks]
        if None in widths:
            return [1.0 / len(ks)] * len(ks)
        return [w / sum(widths) for w in widths]

    def apply(self, k):
        ks = _branches(self, k)
        widths = [b.width for b in ks]
        mixed = len(ks) > 1 or ks[0].mixture
        return _combine(self, ks, self.weights(ks), mixture=mixed,
                        width=None if None in widths else sum(widths))


@dataclass(frozen=True)
class Serial(Layer):
    """Layers applied one after another."""

    children: tuple = field(default=())

    def apply(self, k):
        for layer in self.children:
            k = layer.apply(k)
        return k

    def lower(self, comp, reg, d):
        for layer in self.children:
            reg, d = layer.lower(comp, reg, d)
        return reg, d

    def layers(self):
        return tuple(x for layer in self.children for x in layer.layers())

    def __repr__(self):  # the --arch syntax, which parses back to an equal network
        return f"serial({', '.join(map(repr, self.children))})"


@dataclass(frozen=True)
class Parallel(Layer):
    """Branch i goes through layer i."""

    children: tuple = field(default=())

    def apply(self, k):
        ks = _branches(self, k)
        if len(ks) != len(self.children):
            raise ArchitectureError(f"parallel has {len(self.children)} layers but gets "
                                    f"{len(ks)} branches")
        return tuple(layer.apply(b) for layer, b in zip(self.children, ks))

    def lower(self, comp, reg, d):
        if not isinstance(reg, tuple) or len(reg) != len(self.children):
            self.apply(d)  # raises the ArchitectureError that says what is wrong
        out = [layer.lower(comp, r, x) for layer, r, x in zip(self.children, reg, d)]
        return tuple(r for r, _ in out), tuple(x for _, x in out)

    def __repr__(self):
        return f"parallel({', '.join(map(repr, self.children))})"


def _check_layers(layers):
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ArchitectureError(f"{layer!r} is not a layer")
    return tuple(layers)


def serial(*layers: Layer) -> Serial:
    """The composition of ``layers`` (the first is applied first)."""
    return Serial(_check_layers(layers))


def parallel(*layers: Layer) -> Parallel:
    """One layer per branch of a FanOut."""
    return Parallel(_check_layers(layers))


def repeat(block: Layer, n: int) -> Serial:
    """``block`` applied ``n`` times (n >= 0)."""
    if int(n) != n or n < 0:
        raise ArchitectureError(f"repeat needs a non-negative integer, got {n}")
    return Serial((_check_layers([block])[0],) * int(n))


def deep_network(phi: object, depth: int, weight_var: float, bias_var: float) -> Serial:
    """The fully connected network of ``depth`` hidden layers (DESIGN.md section 1):
    Dense, then ``depth`` times (Activation, Dense)."""
    if int(depth) != depth or depth < 0:
        raise ArchitectureError("depth must be a non-negative integer")
    dense = Dense(float(weight_var), float(bias_var))
    return serial(dense, repeat(serial(Activation(phi), dense), int(depth)))


# --- what a network needs ---------------------------------------------------------------------
def spatial_rank(network: Layer) -> int | None:
    """Spatial dimensions the network's inputs have: 0 for a network of vectors (no spatial
    layer), 1 or 2 when a window (Conv, AvgPool, Aggregate) fixes it, None when only Flatten
    or GlobalAvgPool appear (the inputs decide)."""
    nodes = list(network.walk())
    ranks = {node.window_rank for node in nodes if node.window_rank is not None}
    if len(ranks) > 1:
        raise ArchitectureError("the network mixes 1-D and 2-D windows (filter and window "
                                "shapes must all have the same length)")
    if ranks:
        return ranks.pop()
    return None if any(node.spatial for node in nodes) else 0


def needs_full(network: Layer) -> bool:
    """True when some layer needs the covariance of every pair of positions (pooling,
    aggregation); otherwise the spatially diagonal maps suffice."""
    return any(node.needs_full for node in network.walk())


# --- exact semantics of mixtures -------------------------------------------------------------
#: Layers that act on each feature alone (they commute with Flatten and FanInConcat).
ELEMENTWISE = (Activation, Identity, Dropout)
#: Layers that act on each channel alone (they commute with channel concatenation).
PER_CHANNEL = (AvgPool, GlobalAvgPool, Aggregate, Flatten, LastStep, Identity, Dropout)


def exact_form(network: Layer) -> Layer:
    """The same network with every Activation moved before the Flatten or FanInConcat it
    follows, where the kernel rule F(K) holds.

    After Flatten the features are a mixture over positions and after FanInConcat a mixture
    over branches, so E[phi(u) phi(v)] is the mean of F over the mixture's groups (mean_h
    F(K_hh); (F(K_a) + F(K_b)) / 2), not F of their mean covariance.  An elementwise layer
    commutes with both, so the rewrite computes exactly that:

    * ``Flatten(), Activation`` -> ``Activation, Flatten()``;
    * ``Flatten(), LayerNorm()`` -> ``LayerNorm(over="all"), Flatten()`` (its normaliser
      is the mean square over every position and channel);
    * ``parallel(a, b), FanInConcat(), P..., Activation`` -> ``parallel(serial(a, P...,
      Activation), serial(b, P..., Activation)), FanInConcat()`` for per-channel layers P
      (pooling, aggregation, Flatten), and likewise after a bare ``FanOut(n)``.

    The finite network is the same function (the features are only permuted), so its
    Monte Carlo kernel is the oracle of the rewrite.  What cannot be moved (an Activation
    after ``FanInConcat(), LayerNorm()``) stays, and the record's ``mixture`` flag makes the
    Activation refuse it.
    """
    if isinstance(network, Parallel):
        return Parallel(tuple(exact_form(child) for child in network.children))
    if not isinstance(network, Serial):
        return network
    chain = []
    for layer in network.layers():
        _place(chain, exact_form(layer))
    return Serial(tuple(chain))


def _fan(chain, end):
    """Index of the FanOut or parallel that made the branches reaching ``chain[end]`` (past
    Identity and Dropout), or -1."""
    i = end - 1
    while i >= 0 and isinstance(chain[i], (Identity, Dropout)):
        i -= 1
    return i if i >= 0 and isinstance(chain[i], (Parallel, FanOut)) else -1


def _check_independent(chain):
    """FanInSum's rule K_a + K_b holds for branches independent given their inputs: at most
    one branch may lack weights of its own (a Dense, Conv or SelfAttention), as in a
    residual block.  Two
    such branches carry functions of the same features, whose sum has cross terms."""
    fan = _fan(chain, len(chain))
    if fan < 0:
        return
    fan = chain[fan]
    branches = fan.children if isinstance(fan, Parallel) else (Identity(),) * int(fan.n)
    # Layers whose output is a zero-mean random linear map of their input (attention's
    # value weights); a SimpleRNN's features (phi of them) have a mean, so not it.
    shared = sum(not any(isinstance(node, (Dense, Conv, SelfAttention))
                         for node in branch.walk())
                 for branch in branches)
    if shared > 1:
        raise ArchitectureError(
            f"FanInSum() adds {shared} branches with no Dense or Conv of their own: they "
            "are functions of the same features, correlated, and the sum of their kernels "
            "is not the kernel of their sum; give all but one branch its own Dense or Conv")


def _place(chain, layer):
    """Append ``layer`` to the rewritten ``chain``, moving an Activation or a LayerNorm
    past the mixing layers before it (:func:`exact_form`), and refusing a FanInSum of
    dependent branches."""
    if isinstance(layer, FanInSum):
        _check_independent(chain)
    if not isinstance(layer, (Activation, LayerNorm)):
        chain.append(layer)
        return
    if chain and isinstance(chain[-1], Flatten):
        flatten = chain.pop()
        _place(chain, LayerNorm("all") if isinstance(layer, LayerNorm) else layer)
        chain.append(flatten)
        return
    concat = len(chain) - 1  # the FanInConcat before a run of per-channel layers
    while concat >= 0 and isinstance(chain[concat], PER_CHANNEL):
        concat -= 1
    fan = _fan(chain, concat) if concat >= 0 else -1
    if isinstance(layer, Activation) and fan >= 0 and isinstance(chain[concat], FanInConcat):
        moved = chain[concat + 1:] + [layer]
        join = chain[concat]
        del chain[concat:]
        if isinstance(chain[fan], Parallel):
            branches = chain[fan].children
        else:
            branches = (Identity(),) * int(chain[fan].n)
            fan = len(chain)
            chain.append(None)
        chain[fan] = Parallel(tuple(exact_form(Serial((b, *moved))) for b in branches))
        chain.append(join)
        return
    chain.append(layer)


def readout_points(network: Layer) -> tuple[tuple, list[int]]:
    """Where the kernel is read out along the network's main chain (the top-level serial,
    nested serials flattened): after each Dense, and at the end.  ``all_depths`` returns
    one kernel per point; depth l is the l-th (for ``deep_network``, the pre-activations of
    hidden layer l, l = 0..L).  A Dense before the chain's last Flatten or GlobalAvgPool
    acts per position (its kernel still has spatial axes) and is not a readout.  Returns
    the chain and the indices of its readout layers."""
    chain = network.layers()
    if not chain:
        raise ArchitectureError("the network has no layers")
    first = 1 + max((i for i, layer in enumerate(chain)
                     if isinstance(layer, (Flatten, GlobalAvgPool, LastStep))), default=-1)
    points = [i for i, layer in enumerate(chain) if i >= first and isinstance(layer, Dense)]
    if not points or points[-1] != len(chain) - 1:
        points.append(len(chain) - 1)
    return chain, points


def check_readout(record, depth: int) -> None:
    """Raise the ArchitectureError that says why the kernel cannot be read out at ``depth``:
    branches not joined, or spatial axes left (``record`` is a record or a tuple of them)."""
    if isinstance(record, tuple):
        raise ArchitectureError("the network ends in branches: join them with FanInSum() or "
                                "FanInConcat()")
    if record.axes:
        raise ArchitectureError(
            f"the kernel at depth {depth} has spatial axes {record.axes}: read a "
            "convolutional network out after Flatten() or GlobalAvgPool(), a recurrent one "
            "after LastStep() or GlobalAvgPool()")
