"""The kernel record: what every layer maps to a new one.

A record describes the joint Gaussian process of one layer's units (an infinitely wide set
of features) over two input sets, in the spirit of neural-tangents' ``Kernel``: the NNGP
covariance between the sets, the NTK between them, and both diagonals of each.  The same
record type serves three uses, which is what lets one layer description define all of them:

* pairs: ``nngp`` and ``ntk`` are (n1, n2) matrices, ``var1``/``ntk_var1`` (n1,) and
  ``var2``/``ntk_var2`` (n2,) the diagonals of each input set;
* diagonal only: ``nngp`` and ``ntk`` are None and only the per-input variances flow
  through the layers (the one-dimensional recursion K^l(x, x));
* without the NTK: ``ntk`` and the ``ntk_var`` fields are None, and no layer computes them.

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eq. (5); Jacot et al.,
"Neural Tangent Kernel", NeurIPS 2018, Theorem 1; Yang, "Tensor Programs II", 2020.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Kernels:
    """NNGP and NTK of one layer's features over two input sets; see the module docstring.

    Attributes
    ----------
    nngp, ntk : ndarray (n1, n2) or None
        Covariance E[z(x) z(x')] of a unit's value, and the neural tangent kernel.
    var1, var2 : ndarray (n1,), (n2,)
        Diagonals of the NNGP: K(x, x) for each input of either set.
    ntk_var1, ntk_var2 : ndarray or None
        Diagonals of the NTK.
    is_gaussian : bool
        The units are jointly Gaussian (after a Dense, a sum of Dense outputs or a
        normalisation); an activation or a layer norm needs Gaussian inputs.
    mixture : bool
        The units are a mixture of Gaussian groups with different covariances: the
        positions of a Flatten, the branches of a FanInConcat.  The record's kernel (their
        mean) is exact for a following Dense or LayerNorm, but an activation's kernel is the
        mean of F over the groups, not F of the mean, so an Activation refuses such a record
        (:func:`nngp_lut.kernel.layers.exact_form` moves activations before the mixing
        layer, where they act on each group).
    width : int or None
        Number of features, where it is declared (the inputs' dimension, a Dense's
        ``width``); the standard parameterisation's NTK needs it.
    axes : tuple of str
        Named spatial axes beside the batch one: ``("height", "width")`` for images,
        ``("length",)`` for sequences and graphs (the nodes); empty for a vector of
        features.  With axes, ``nngp``/``ntk`` are (n1, n2, *S) maps of the spatially
        diagonal covariances K_{h,h}(x, x') and ``var1`` (n1, *S), or, when
        ``full_spatial``, (n1, n2, *S, *S) covariances K_{h,h'}(x, x') of every pair of
        positions and ``var1`` (n1, *S, *S) (see :mod:`nngp_lut.kernel.spatial`).
    full_spatial : bool
        The record holds every pair of positions (pooling and graph aggregation need it),
        not only the diagonal maps (enough up to a Flatten readout).
    mask1, mask2 : ndarray (n1, T), (n2, T) or None
        For sequences of unequal length (``axes == ("length",)``): 1.0 at each input's
        steps, 0.0 at the padding before them (sequences are aligned at their last step,
        :func:`nngp_lut.kernel.spatial.as_spatial_inputs`).  Entries at padded steps carry
        no meaning; only layers with ``takes_padding`` accept such a record, and the layers
        that read over time (SimpleRNN, GlobalAvgPool) leave the padding out.
    reference : int
        BatchNorm in inference mode: both sets start with the same ``reference`` inputs,
        the batch whose statistics normalise every input (``Network(reference=...)``);
        0 for none.
    """

    nngp: np.ndarray | None
    ntk: np.ndarray | None
    var1: np.ndarray
    var2: np.ndarray
    ntk_var1: np.ndarray | None
    ntk_var2: np.ndarray | None
    is_gaussian: bool = False
    mixture: bool = False
    width: int | None = None
    axes: tuple = ()
    full_spatial: bool = False
    mask1: np.ndarray | None = None
    mask2: np.ndarray | None = None
    reference: int = 0

    @property
    def has_ntk(self):
        return self.ntk_var1 is not None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def outer(self, v1, v2):
        """v1_i v2_j as an (n1, n2) matrix: the per-input factors of a pairwise entry."""
        return np.multiply.outer(v1, v2)


def input_kernels(x1, x2=None, *, ntk=True, pairs=True):
    """The record of the inputs themselves: <x, x'> / d, NTK 0 (nothing trained yet).

    Parameters
    ----------
    x1, x2 : ndarray (n1, d), (n2, d)
        Validated inputs; ``x2=None`` pairs x1 with itself.
    ntk : bool
        Carry the NTK fields.
    pairs : bool
        The pairwise record; False gives the diagonal-only one (``x2`` ignored).
    """
    d = x1.shape[1]
    var1 = np.einsum("ij,ij->i", x1, x1) / d
    if not pairs:
        zero = np.zeros_like(var1) if ntk else None
        return Kernels(None, None, var1, var1, zero, zero, width=d)
    same = x2 is None
    x2 = x1 if same else x2
    var2 = var1 if same else np.einsum("ij,ij->i", x2, x2) / d
    nngp = x1 @ x2.T / d
    zeros = (np.zeros_like(nngp), np.zeros_like(var1), np.zeros_like(var2)) if ntk else \
        (None, None, None)
    return Kernels(nngp, zeros[0], var1, var2, zeros[1], zeros[2], width=d)
