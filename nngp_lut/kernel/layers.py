"""The layer algebra: each layer maps a kernel record to a new record.

A network is a tree of small immutable layer objects, in the spirit of neural-tangents'
``stax``.  Each layer's :meth:`~Layer.apply` is its infinite-width rule on a
:class:`~nngp_lut.kernel.record.Kernels` record, written once for full matrices and for the
diagonal alone (the record's entries broadcast the same way in both).  The same description
is compiled into a program for the fused tile executor (:mod:`nngp_lut.kernel.program`) and
sampled as a finite random network (:mod:`nngp_lut.montecarlo`).

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
====================  ======================================================================

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eq. (5).
Jacot et al., "Neural Tangent Kernel", NeurIPS 2018, Theorem 1 (the NTK recursion).
Novak et al., "Neural Tangents", ICLR 2020 (the layer algebra, the standard
parameterisation).  Yang, "Tensor Programs II/III", 2020 (the correspondence for any
architecture of these layers).
"""

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import ParameterError

PARAMETERIZATIONS = ("ntk", "standard")


class ArchitectureError(ParameterError):
    """A network description that cannot be evaluated (a layer in the wrong place)."""


class Layer:
    """Base of every layer: ``apply(record) -> record`` (tuples of records for branches)."""

    #: Records taken and given: 1, or None for "a tuple of any length" (branches).
    def apply(self, k):
        raise NotImplementedError

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


def _single(layer, k):
    if isinstance(k, tuple):
        raise ArchitectureError(f"{layer!r} takes one input but gets {len(k)} branches; "
                                "join them with FanInSum() or FanInConcat() first")
    return k


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

    def __post_init__(self):
        if not (math.isfinite(self.weight_var) and self.weight_var > 0):
            raise ArchitectureError(f"Dense needs weight_var > 0, got {self.weight_var}")
        if self.bias_var is not None and not (math.isfinite(self.bias_var)
                                              and self.bias_var >= 0):
            raise ArchitectureError(f"Dense needs bias_var >= 0, got {self.bias_var}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ArchitectureError(f"parameterization must be one of {PARAMETERIZATIONS}, "
                                    f"got {self.parameterization!r}")
        if self.width is not None and (int(self.width) != self.width or self.width < 1):
            raise ArchitectureError(f"Dense width must be a positive integer, got {self.width}")

    @property
    def bias(self):
        return 0.0 if self.bias_var is None else self.bias_var

    def __repr__(self):
        extra = "".join(f", {f}={getattr(self, f)!r}" for f in ("parameterization", "width")
                        if getattr(self, f) != type(self).__dataclass_fields__[f].default)
        return f"Dense({self.weight_var!r}, {self.bias_var!r}{extra})"

    def ntk_coefficients(self, width_in):
        """(a, c) of the NTK rule Theta' = a K + c + w Theta."""
        if self.parameterization == "ntk":
            return self.weight_var, self.bias
        if width_in is None:
            raise ArchitectureError("the standard parameterisation's NTK needs the input "
                                    "width of every Dense: give the previous Dense a width")
        return float(width_in), (0.0 if self.bias_var is None else 1.0)

    def apply(self, k):
        k = _single(self, k)
        w, b = self.weight_var, self.bias
        out = dict(var1=b + w * k.var1, var2=b + w * k.var2, is_gaussian=True,
                   width=self.width, nngp=None if k.nngp is None else b + w * k.nngp)
        if k.has_ntk:
            a, c = self.ntk_coefficients(k.width)
            out.update(ntk_var1=a * k.var1 + c + w * k.ntk_var1,
                       ntk_var2=a * k.var2 + c + w * k.ntk_var2,
                       ntk=None if k.ntk is None else a * k.nngp + c + w * k.ntk)
        return k.replace(**out)


@dataclass(frozen=True, eq=False)
class Activation(Layer):
    """Elementwise nonlinearity phi, through its table (built once and cached).

    ``phi`` is a built-in name, an expression in ``x``, an :class:`~nngp_lut.Activation`,
    a :class:`~nngp_lut.Table` or a table path.  Two Activation layers are equal when they
    name the same activation.
    """

    phi: object

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
        k = _single(self, k)
        if not k.is_gaussian:
            raise ArchitectureError("an Activation needs Gaussian inputs: put a Dense before "
                                    "it (the network's inputs are not Gaussian)")
        t = self.table
        out = dict(var1=t.second_moment(k.var1), var2=t.second_moment(k.var2),
                   is_gaussian=False)
        if k.nngp is not None:
            q1, q2 = k.var1[:, None], k.var2[None, :]
            rho = np.clip(k.nngp / np.sqrt(q1 * q2), -1.0, 1.0)
            out["nngp"] = t.F(q1, q2, rho)
        if k.has_ntk:
            out.update(ntk_var1=t.derivative_second_moment(k.var1) * k.ntk_var1,
                       ntk_var2=t.derivative_second_moment(k.var2) * k.ntk_var2)
            if k.ntk is not None:
                out["ntk"] = t.dF(q1, q2, rho) * k.ntk
        return k.replace(**out)


@dataclass(frozen=True)
class LayerNorm(Layer):
    """Per-example normalisation over the features: z / sqrt(mean_i z_i^2).

    In the infinite-width limit the features' mean is 0 and their mean square is K(x, x) for
    Gaussian, centred inputs (place it after a Dense or a sum of Dense outputs), so
    K' = K / sqrt(K(x,x) K(x',x')) and the NTK is scaled the same (neural-tangents'
    ``LayerNorm`` over the channel axis).
    """

    def apply(self, k):
        k = _single(self, k)
        if not k.is_gaussian:
            raise ArchitectureError("LayerNorm needs Gaussian, centred inputs: put it after "
                                    "a Dense (or a sum of Dense outputs)")
        out = dict(var1=np.ones_like(k.var1), var2=np.ones_like(k.var2))
        s1, s2 = 1.0 / np.sqrt(k.var1), 1.0 / np.sqrt(k.var2)
        if k.nngp is not None:
            out["nngp"] = k.nngp * k.outer(s1, s2)
        if k.has_ntk:
            out.update(ntk_var1=k.ntk_var1 * s1 * s1, ntk_var2=k.ntk_var2 * s2 * s2)
            if k.ntk is not None:
                out["ntk"] = k.ntk * k.outer(s1, s2)
        return k.replace(**out)


@dataclass(frozen=True)
class Identity(Layer):
    """The identity."""

    def apply(self, k):
        return k


@dataclass(frozen=True)
class Dropout(Layer):
    """Dropout of probability ``rate``: at evaluation (where the GP lives) the identity."""

    rate: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.rate < 1.0:
            raise ArchitectureError(f"Dropout rate must lie in [0, 1), got {self.rate}")

    def apply(self, k):
        return k


@dataclass(frozen=True)
class FanOut(Layer):
    """One input to ``n`` identical branches."""

    n: int

    def __post_init__(self):
        if int(self.n) != self.n or self.n < 1:
            raise ArchitectureError(f"FanOut needs a positive integer, got {self.n}")

    def apply(self, k):
        return (_single(self, k),) * int(self.n)


def _branches(layer, k):
    if not isinstance(k, tuple):
        raise ArchitectureError(f"{type(layer).__name__} joins branches: put FanOut(n) and "
                                "parallel(...) before it")
    return k


def _combine(ks, weights):
    """Weighted sum of records field by field (the branches' weights are independent)."""
    def total(name):
        vals = [getattr(k, name) for k in ks]
        return None if vals[0] is None else sum(w * v for w, v in zip(weights, vals))
    first = ks[0]
    return first.replace(**{f: total(f) for f in ("nngp", "ntk", "var1", "var2", "ntk_var1",
                                                   "ntk_var2")},
                         is_gaussian=all(k.is_gaussian for k in ks))


@dataclass(frozen=True)
class FanInSum(Layer):
    """The branches' features add: their kernels add (Novak et al. 2020, FanInSum).

    The rule assumes the branches independent given the inputs, as in a residual block where
    one branch has its own Dense (neural-tangents' convention too): two Identity branches of
    one FanOut are the same features, whose sum has 4 K, not the 2 K the rule gives."""

    def apply(self, k):
        ks = _branches(self, k)
        widths = {b.width for b in ks}
        return _combine(ks, [1.0] * len(ks)).replace(
            width=widths.pop() if len(widths) == 1 else None)


@dataclass(frozen=True)
class FanInConcat(Layer):
    """The branches' features are concatenated: for equal widths the kernels average."""

    def apply(self, k):
        ks = _branches(self, k)
        widths = [b.width for b in ks]
        return _combine(ks, [1.0 / len(ks)] * len(ks)).replace(
            width=None if None in widths else sum(widths))


@dataclass(frozen=True)
class Serial(Layer):
    """Layers applied one after another."""

    children: tuple = field(default=())

    def apply(self, k):
        for layer in self.children:
            k = layer.apply(k)
        return k

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


def readout_points(network: Layer) -> tuple[tuple, list[int]]:
    """Where the kernel is read out along the network's main chain (the top-level serial,
    nested serials flattened): after each Dense, and at the end.  ``all_depths`` returns
    one kernel per point; depth l is the l-th (for ``deep_network``, the pre-activations of
    hidden layer l, l = 0..L).  Returns the chain and the indices of its readout layers."""
    chain = network.layers()
    if not chain:
        raise ArchitectureError("the network has no layers")
    points = [i for i, layer in enumerate(chain) if isinstance(layer, Dense)]
    if not points or points[-1] != len(chain) - 1:
        points.append(len(chain) - 1)
    return chain, points
