"""Networks: NNGP and NTK kernels of any composition of layers, fused or layer by layer.

:class:`Network` wraps a layer of the algebra (nngp_lut/kernel/layers.py).  Its
:meth:`~Network.kernel` compiles the layers into a program (compiler.py) that one Numba tile
loop interprets (``_core/engine.py``), for vectors after BLAS has written the input Gram
X1 X2^T into the result; the tiling, the memory budget and HDF5 streaming come from
executor.py.  :meth:`~Network.layerwise` applies the layers to full matrices one after
another: the readable reference that the fused path is tested against.

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eq. (5).
Jacot et al., "Neural Tangent Kernel", NeurIPS 2018, Theorem 1.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from .._core.config import GRAM_DIAG_ROWS, KERNEL_TILE_ROWS
from ..data import standardize_rows, validate_inputs
from ..errors import (ArchitectureError, DataError, LayerwiseWarning, NonFiniteKernel,
                      ParameterError)
from . import executor
from .batchnorm import HOMOGENEOUS
from .compiler import NotFusable, compile_network, engine_inputs, run
from .layers import (GRU, LSTM, Layer, SimpleRNN, check_readout, exact_form, needs_full,
                     not_given, readout_points, spatial_rank)
from .layers import deep_network as _deep_layers
from .spatial import as_spatial_inputs, input_record

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import ArrayLike

    from .._typing import PathLike, PhiLike

#: Default memory budget for a kernel matrix kept in RAM.
DEFAULT_MEMORY = "4GB"
#: The kernels a network gives.
KINDS = ("nngp", "ntk")
#: Inputs per call of the diagonal of a network with a BatchNorm reference set (each chunk's
#: pairs are computed with the reference, the diagonal kept).
REFERENCE_DIAGONAL_CHUNK = 256


def _kinds(get):
    kinds = (get,) if isinstance(get, str) else tuple(get)
    if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        raise ParameterError(f"get must be 'nngp', 'ntk' or both as a tuple, got {get!r}")
    return kinds


class Network:
    """The NNGP and NTK of a network of layers.

    Parameters
    ----------
    layer : Layer
        The network (usually a ``serial(...)``); its *depths* are the Dense layers of its
        main chain, numbered from 0 (for ``deep_network`` depth l is the l-th hidden layer's
        pre-activation, l = 0..L).
    reference : array_like (B, ...), optional
        For a network with BatchNorm: the reference batch whose statistics normalise every
        input (inference mode; relu and the identity).  Without it each call's inputs are
        the batch (training mode), and the kernel is not a function of pairs.
    """

    def __init__(self, layer, *, reference=None):
        if not isinstance(layer, Layer):
            raise TypeError(f"expected a layer, got {type(layer).__name__}")
        self.layer = layer
        #: What the kernels are computed from: the same network with activations moved
        #: where their rule is exact (layers.exact_form).
        self.exact_layer = exact_form(layer)
        self.depth = len(readout_points(layer)[1]) - 1
        #: Spatial dimensions of the inputs (0: vectors; None: 1 or 2, the inputs decide).
        self.rank = spatial_rank(layer)
        #: Whether the records hold every pair of positions (pooling, aggregation) or only
        #: the spatially diagonal maps (spatial.py).
        self.full_spatial = self.rank != 0 and needs_full(layer)
        #: Whether it has a recurrent layer (its inputs may be padded sequences, which the
        #: layers with ``takes_padding`` accept).
        self.recurrent = any(isinstance(node, (SimpleRNN, GRU, LSTM)) for node in layer.walk())
        #: Whether the fused engine runs it (else kernel() goes layer by layer, tiled).
        self.fused = all(node.fused for node in layer.walk())
        #: Whether a layer couples the inputs of a batch (BatchNorm): the batch is every
        #: input of a call, computed in one block.
        self.batch_coupled = any(node.batch_coupled for node in layer.walk())
        #: The reference batch of BatchNorm in inference mode (validated inputs), or None.
        self.reference = None if reference is None else self._reference(reference)
        #: The kernels it gives (a GRU or LSTM gives the NNGP only).
        self.kinds = tuple(k for k in KINDS if all(k in node.kinds for node in layer.walk()))
        #: Whether one finite network's kernel converges to it as the width grows (False:
        #: only the mean over networks does; see ``Layer.self_averaging``).
        self.self_averaging = all(node.self_averaging for node in layer.walk())

    def __repr__(self):
        extra = "" if self.reference is None else \
            f", reference=<{self.reference.shape[0]} inputs>"
        return f"Network({self.layer!r}{extra})"

    def _reference(self, reference):
        """The validated reference batch; the network no longer couples a call's inputs."""
        norms = [n for n in self.layer.walk() if n.batch_coupled]
        if not norms:
            raise ParameterError("reference= is the batch that normalises every input at a "
                                 "BatchNorm: this network has none")
        for node in norms:
            if node.activation_name not in HOMOGENEOUS:
                raise ArchitectureError(f"{node!r} with a reference set is built for relu and "
                                        "the identity only (the 1-D integral); use it in "
                                        "training mode (no reference) for other activations")
        self.batch_coupled = False  # every input normalised by the same batch: pairs again
        return validate_inputs(reference, "reference") if self.rank == 0 else \
            self._prepare(reference, None)[0]

    def _kinds(self, get):
        """The kinds of ``get``, refused in one line if a layer does not give one."""
        kinds = _kinds(get)
        for kind in set(kinds) - set(self.kinds):
            node = next(n for n in self.layer.walk() if kind not in n.kinds)
            raise ArchitectureError(not_given(node, kind))
        return kinds

    # -- the layer-by-layer reference --------------------------------------------------------
    def storage(self, shape):
        """What a pair of inputs of ``shape`` (one input's, e.g. (28, 28, 1)) carries through
        the layers: a sentence for progress bars and logs."""
        if self.rank == 0:
            return "vectors: 1 entry per pair"
        rank = self.rank or max(1, len(shape) - 1)  # (H, W) images have no channel axis
        p = math.prod(shape[:rank])
        if self.full_spatial:
            return (f"full spatial covariance: {p * p} entries per pair (pooling, aggregation, "
                    "recurrence and attention need it)")
        return f"diagonal spatial maps: {p} entries per pair"

    def _prepare(self, x1, x2):
        """Validated inputs (vectors, or images / sequences for a spatial network).  A
        recurrent network takes sequences of unequal length, padded with NaN steps
        (:func:`~nngp_lut.kernel.spatial.as_spatial_inputs`); two sets of different
        lengths are padded to the longer."""
        if self.rank == 0:
            return _inputs(x1, x2)
        x1, rank = as_spatial_inputs(x1, self.rank, "x1", padded=self.recurrent)
        if x2 is None:
            return x1, x1, True
        x2, _ = as_spatial_inputs(x2, rank, "x2", padded=self.recurrent)
        if self.recurrent and x1.shape[2:] == x2.shape[2:] and x1.shape[1] != x2.shape[1]:
            steps = max(x1.shape[1], x2.shape[1])
            x1, x2 = (np.pad(x, ((0, 0), (steps - x.shape[1], 0), (0, 0)),
                             constant_values=np.nan) for x in (x1, x2))
        if x2.shape[1:] != x1.shape[1:]:
            raise DataError(f"x1 has inputs of shape {x1.shape[1:]} but x2 {x2.shape[1:]}")
        return x1, x2, False

    def _masked(self, x1, x2):
        """Whether the inputs are padded sequences (whose records carry masks)."""
        return self.recurrent and any(np.isnan(x[:, :, 0]).any() for x in (x1, x2))

    def _record(self, x1, x2, ntk, pairs, masked):
        return input_record(x1, x2, ntk=ntk, pairs=pairs, full=self.full_spatial,
                            masked=masked)

    def _walk(self, k, kinds, all_depths, pairs):
        chain, points = readout_points(self.exact_layer)
        outs = []
        for index, layer in enumerate(chain):
            k = layer.apply(k)
            if index in points and (all_depths or index == points[-1]):
                check_readout(k, len(outs))
                outs.append(k)
        field = {"nngp": "nngp", "ntk": "ntk"} if pairs else {"nngp": "var1", "ntk": "ntk_var1"}
        res = tuple(np.stack([getattr(o, field[kind]) for o in outs]) for kind in kinds)
        res = res if all_depths else tuple(r[0] for r in res)
        return _finite(res)

    def layerwise(self, x1, x2=None, *, get="nngp", all_depths=False):
        """The kernel step by step on full matrices (the reference of :meth:`kernel`).

        Returns one array per kind of ``get`` (a tuple when ``get`` is a tuple); with
        ``all_depths`` each is stacked over the depths, shape (depth + 1, n1, n2).
        """
        kinds = self._kinds(get)
        x1, x2, same = self._prepare(x1, x2)
        if self.reference is not None:  # the reference batch leads both sets
            b = self.reference.shape[0]
            z1 = np.concatenate([self.reference, x1])
            z2 = None if same else np.concatenate([self.reference, x2])
            k = self._record(z1, z2, "ntk" in kinds, True, self._masked(z1, z1 if same else z2))
            res = tuple(r[..., b:, b:] for r in self._walk(k.replace(reference=b), kinds,
                                                           all_depths, True))
            return res[0] if isinstance(get, str) else res
        if self.batch_coupled and not same:  # the batch is x1 and x2 together
            n1 = x1.shape[0]
            res = self.layerwise(np.concatenate([x1, x2]), get=kinds, all_depths=all_depths)
            res = tuple(r[..., :n1, n1:] for r in res)
            return res[0] if isinstance(get, str) else res
        k = self._record(x1, None if same else x2, "ntk" in kinds, True,
                         self._masked(x1, x2))
        res = self._walk(k, kinds, all_depths, True)
        return res[0] if isinstance(get, str) else res

    def maps(self, x1, x2=None, *, get="nngp"):
        """Sequence-to-sequence (and image-to-image) kernels: the NNGP or NTK over every
        pair of positions of the network's output, layer by layer, for a network whose
        output keeps its spatial axes (no LastStep, GlobalAvgPool or Flatten at the end).

        Returns (n1, n2, T, T') arrays (full maps: a network with a SimpleRNN, attention
        or pooling) or (n1, n2, *S) (the diagonal maps K_{h,h}).  Sequences padded with NaN
        steps are aligned at their last step (position -1 is every sequence's last step)
        and the entries at their padding are NaN.
        """
        kinds = self._kinds(get)
        x1, x2, same = self._prepare(x1, x2)
        k = self._record(x1, None if same else x2, "ntk" in kinds, True,
                         self._masked(x1, x2))
        k = self.exact_layer.apply(k)
        if isinstance(k, tuple) or not k.axes:
            raise ArchitectureError("maps() is for networks whose output keeps its positions"
                                    " (no LastStep, GlobalAvgPool or Flatten at the end, "
                                    "branches joined); use kernel() for the others")
        res = tuple(getattr(k, kind).copy() for kind in kinds)
        if k.mask1 is not None:
            padding = k.mask1[:, None, :, None] * k.mask2[None, :, None, :] == 0
            for m in res:
                m[padding] = np.nan
        return res[0] if isinstance(get, str) else res

    def diagonal(self, x, *, get="nngp", all_depths=False):
        """K(x, x) (or the NTK's Theta(x, x)) of each input, by the diagonal recursion."""
        kinds = self._kinds(get)
        if self.batch_coupled or self.reference is not None:
            # the diagonal of the pairs' kernel: of the batch x, or of chunks of x with the
            # reference batch
            step = len(x) if self.batch_coupled else REFERENCE_DIAGONAL_CHUNK
            parts = [self.layerwise(x[i:i + step], get=kinds, all_depths=all_depths)
                     for i in range(0, len(x), step)]
            res = tuple(np.concatenate([np.diagonal(p[j], axis1=-2, axis2=-1) for p in parts],
                                       axis=-1) for j in range(len(kinds)))
            return res[0] if isinstance(get, str) else res
        x = validate_inputs(x, "x") if self.rank == 0 else self._prepare(x, None)[0]
        k = self._record(x, None, "ntk" in kinds, False, self._masked(x, x))
        res = self._walk(k, kinds, all_depths, False)
        return res[0] if isinstance(get, str) else res

    # -- fused --------------------------------------------------------------------------------
    def kernel(self, x1, x2=None, *, get="nngp", all_depths=False, depths=None,
               memory=DEFAULT_MEMORY, out=None, tile_rows=KERNEL_TILE_ROWS, gram=None,
               progress=None):
        """The kernel(s) of x1 against x2, fused over layers.

        Parameters
        ----------
        x1, x2 : array_like (n1, d), (n2, d)
            Inputs; ``x2=None`` is the symmetric case (each pair computed once).
        get : {"nngp", "ntk"} or tuple of them
            Which kernels; both come from one pass that shares the table look-ups.
        all_depths : bool
            Every depth 0..depth stacked, shape (depth + 1, n1, n2), from one pass.
        depths : sequence of int, optional
            Only these depths, stacked in this order, from one pass.
        memory : int or str
            Budget for the result in RAM ("4GB", "500MB", bytes); a larger result is
            streamed tile by tile into the HDF5 dataset ``kernel`` of ``out`` (one kind).
        out : path, optional
            HDF5 file for a result above the budget (then required).
        tile_rows : int
            Rows per tile.
        gram : array (n1, n2), optional
            The input Gram x1 x2^T, when the caller has it already (a hyper-parameter
            search reuses it for every setting).
        progress : callable, optional
            ``progress(done, total)``, in rows (each row counts once per phase).

        Returns
        -------
        numpy.ndarray, tuple of them, or str
            One array per kind of ``get`` (a tuple when ``get`` is a tuple), or the path of
            the HDF5 file the result was streamed to.
        """
        kinds = self._kinds(get)
        stacked = all_depths or depths is not None
        wanted = list(range(self.depth + 1)) if all_depths else (
            [self.depth] if depths is None else [int(l) for l in depths])
        if not wanted or min(wanted) < 0 or max(wanted) > self.depth:
            raise ParameterError(f"depths must lie in 0..{self.depth}")
        if len(set(wanted)) != len(wanted):
            raise ParameterError("depths must not repeat")
        x1, x2, same = self._prepare(x1, x2)
        n1, n2 = x1.shape[0], x2.shape[0]
        if self.batch_coupled:
            return self._batch_kernel(x1, None if same else x2, kinds, wanted, get, stacked,
                                      out)
        if gram is not None and np.shape(gram) != (n1, n2):
            raise DataError(f"gram has shape {np.shape(gram)}, expected {(n1, n2)}")
        if out is not None and len(kinds) > 1:
            raise ParameterError("stream one kernel at a time to HDF5 (get='nngp' or 'ntk')")
        n_layers = len(wanted) * len(kinds)
        slot = {depth: tuple(s * len(kinds) + kinds.index(k) if k in kinds else -1
                             for k in KINDS) for s, depth in enumerate(wanted)}
        prog = None
        if self.fused:  # else a layer's kernel comes from elsewhere: layer by layer, silently
            try:
                prog = compile_network(self.exact_layer, x1, None if same else x2, slot,
                                       "ntk" in kinds, self.full_spatial, self._masked(x1, x2))
            except NotFusable as exc:
                warnings.warn(f"the fused engine cannot run this network ({exc}): computing "
                              "it layer by layer (the same kernel, slower)", LayerwiseWarning,
                              stacklevel=2)
        if prog is None:
            phases = [self._layerwise_phase(x1, x2, kinds, wanted, same)]
        else:
            phases = [self._engine_phase(prog, x1, x2, same, kinds, wanted)]
            if prog.gram:  # BLAS writes X1 X2^T where the program's input op reads it
                phases.insert(0, self._gram_phase(x1, x2, same, gram))
        return self._finish(phases, n_layers, n1, n2, same, memory, out, tile_rows, progress,
                            get, stacked)

    def _batch_kernel(self, x1, x2, kinds, wanted, get, stacked, out):
        """A batch-coupled network's kernel: the whole batch (x1, and x2 with it) in one
        block, layer by layer, in RAM."""
        if out is not None:
            raise ParameterError("a network with BatchNorm computes its batch in one block "
                                 "in RAM: drop out= (and --memory), or use a smaller batch")
        res = self.layerwise(x1, x2, get=kinds, all_depths=True)
        res = tuple(r[wanted] for r in res)
        res = res if stacked else tuple(r[0] for r in res)
        return res[0] if isinstance(get, str) else res

    @staticmethod
    def _finish(phases, n_layers, n1, n2, same, memory, out, tile_rows, progress, get,
                stacked):
        kinds = _kinds(get)
        result = executor.tiled(phases, n_layers, n1, n2, same, memory=memory, out=out,
                                tile_rows=tile_rows, progress=progress)
        if isinstance(result, str):
            return result
        res = tuple(result[kinds.index(k)::len(kinds)] for k in kinds)
        res = res if stacked else tuple(r[0] for r in res)
        return res[0] if isinstance(get, str) else res

    @staticmethod
    def _gram_phase(x1, x2, same, gram):
        def phase(block, row0, r0, r1):
            c1 = r1 if same else x2.shape[0]  # symmetric: the lower panel only
            dest = block[0, row0:row0 + r1 - r0, :c1]
            if gram is None:
                _gram_into(dest, x1, x2, r0, r1, c1, same)
            else:
                dest[...] = gram[r0:r1, :c1]
        return phase

    @staticmethod
    def _engine_phase(prog, x1, x2, same, kinds, wanted):
        inputs = engine_inputs(prog, x1, x2)
        # The diagonal of a symmetric result from the diagonal recursion, when the program
        # has it (else the pairs (x, x) computed it).
        diag = [prog.diag1[depth][0 if k == "nngp" else 1] for depth in wanted
                for k in kinds] if same and prog.diag1 is not None else None

        def phase(block, row0, r0, r1):
            if run(prog, block, row0, r0, r1 - r0, inputs, r0 if same else -1):
                raise _nonfinite(r0, r1)
            if diag is not None:
                idx = np.arange(r1 - r0)
                for layer, values in enumerate(diag):
                    block[layer, row0 + idx, r0 + idx] = values[r0:r1]
        return phase

    def _layerwise_phase(self, x1, x2, kinds, wanted, same=False):
        def phase(block, row0, r0, r1):
            if same:  # the lower panel only (columns < r1); the first panel symmetric, so
                # that a layer whose rule costs per pair (attention at 1/sqrt(n)) makes each
                # pair once
                cols = r1
                res = self.layerwise(x1[:r1], get=kinds, all_depths=True) if r0 == 0 else \
                    self.layerwise(x1[r0:r1], x1[:r1], get=kinds, all_depths=True)
            else:
                cols = block.shape[2]
                res = self.layerwise(x1[r0:r1], x2, get=kinds, all_depths=True)
            for s, depth in enumerate(wanted):
                for i, kind in enumerate(kinds):
                    block[s * len(kinds) + i, row0:row0 + r1 - r0, :cols] = \
                        res[i][depth][:, :cols]
        return phase


def deep_network(phi: PhiLike, depth: int, weight_var: float, bias_var: float) -> Network:
    """The fully connected network of ``depth`` hidden layers (DESIGN.md section 1) as a
    :class:`Network`; ``phi`` is an activation, a :class:`~nngp_lut.Table` or a path."""
    return Network(_deep_layers(phi, depth, weight_var, bias_var))


def _network(network, phi, depth, weight_var, bias_var):
    if network is not None:
        if any(v is not None for v in (depth, weight_var, bias_var)):
            raise ParameterError("give either network= or depth/weight_var/bias_var, not both")
        return network if isinstance(network, Network) else Network(network)
    if None in (depth, weight_var, bias_var):
        raise ParameterError("give network=, or depth, weight_var and bias_var")
    return deep_network(phi, depth, weight_var, bias_var)


def nngp_kernel(x1: ArrayLike, x2: ArrayLike | None = None, *, phi: PhiLike = "relu",
                depth: int | None = None, weight_var: float | None = None,
                bias_var: float | None = None, network: Network | Layer | None = None,
                get: str | tuple = "nngp", standardize: bool = False, all_depths: bool = False,
                memory: int | str = DEFAULT_MEMORY, out: PathLike | None = None,
                progress: Callable | None = None) -> np.ndarray | tuple | str:
    """The NNGP kernel K(x1, x2) of a deep fully connected network, or of any ``network``.

    Parameters
    ----------
    x1, x2 : array_like (n, d)
        Inputs; ``x2=None`` computes the symmetric kernel of x1 with itself.
    phi : str, Activation, Table or path
        The activation, or its table (the fully connected network).
    depth : int
        Hidden layers L (0: the linear model on the inputs).
    weight_var, bias_var : float
        sigma_w^2 and sigma_b^2.
    network : Network or Layer, optional
        Any network of the layer algebra instead of the fully connected one.
    get : {"nngp", "ntk"} or tuple
        The kernel(s) to return (:func:`ntk_kernel` is ``get="ntk"``).
    standardize : bool
        Standardise each input across its features first (subtract its mean, divide by its
        standard deviation), as the paper's code does; off by default.
    all_depths, memory, out, progress
        See :meth:`Network.kernel`.

    References
    ----------
    Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eq. (5).
    """
    net = _network(network, phi, depth, weight_var, bias_var)
    if standardize:
        x1 = standardize_rows(x1, "x1", net.recurrent)
        x2 = None if x2 is None else standardize_rows(x2, "x2", net.recurrent)
    return net.kernel(x1, x2, get=get, all_depths=all_depths, memory=memory, out=out,
                      progress=progress)


def ntk_kernel(x1: ArrayLike, x2: ArrayLike | None = None, **kwargs) -> np.ndarray | str:
    """The neural tangent kernel Theta(x1, x2) (NTK parameterisation unless the network's
    Dense layers say otherwise); arguments as :func:`nngp_kernel`.

    References
    ----------
    Jacot et al., "Neural Tangent Kernel", NeurIPS 2018, Theorem 1:
    Theta^l = K^l + weight_var * E[phi'(u) phi'(v)] * Theta^{l-1}.
    """
    return nngp_kernel(x1, x2, get="ntk", **kwargs)


def nngp_diag(x: ArrayLike, *, phi: PhiLike = "relu", depth: int | None = None,
              weight_var: float | None = None, bias_var: float | None = None,
              network: Network | Layer | None = None, get: str = "nngp",
              standardize: bool = False) -> np.ndarray:
    """K(x, x) for each input (the diagonal of :func:`nngp_kernel`; ``get="ntk"`` for the
    NTK's)."""
    net = _network(network, phi, depth, weight_var, bias_var)
    if standardize:
        x = standardize_rows(x, "x", net.recurrent)
    return net.diagonal(x, get=get)


# --- plumbing ----------------------------------------------------------------------------------
def _inputs(x1, x2):
    x1 = validate_inputs(x1, "x1")
    if x2 is None:
        return x1, x1, True
    x2 = validate_inputs(x2, "x2")
    if x2.shape[1] != x1.shape[1]:
        raise DataError(f"x1 has {x1.shape[1]} features but x2 has {x2.shape[1]}")
    return x1, x2, False


def _nonfinite(r0=None, r1=None):
    rows = "" if r0 is None else f" (rows {r0}..{r1 - 1})"
    return NonFiniteKernel(f"the kernel has NaN or infinite entries{rows}: its variances "
                           "overflow float64; scale the inputs down (standardize them), or "
                           "lower weight_var, bias_var or the depth")


def _finite(arrays):
    """``arrays`` (a tuple of kernels), refused with a NonFiniteKernel if any entry is NaN
    or infinite."""
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise _nonfinite()
    return arrays


def _gram_into(dest, x1, x2, r0, r1, c1, same):
    """dest = x1[r0:r1] x2[:c1]^T by BLAS, written in place (no temporary).  Symmetric
    panels make only the lower triangle of their diagonal block, in strips of
    GRAM_DIAG_ROWS rows (the upper triangle is mirrored later)."""
    if not same:
        np.matmul(x1[r0:r1], x2[:c1].T, out=dest)
        return
    if r0:
        np.matmul(x1[r0:r1], x1[:r0].T, out=dest[:, :r0])
    for a in range(r0, r1, GRAM_DIAG_ROWS):
        e = min(r1, a + GRAM_DIAG_ROWS)
        np.matmul(x1[a:e], x1[r0:e].T, out=dest[a - r0:e - r0, r0:e])


__all__ = ["DEFAULT_MEMORY", "Network", "deep_network", "nngp_diag",
           "nngp_kernel", "ntk_kernel"]
