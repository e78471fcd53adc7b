"""Kernel records with spatial axes: their inputs, shapes and window geometry.

Images are NHWC arrays (n, H, W, C) ((n, H, W): one channel), sequences and graphs
(n, L, C).  The input record is the channel dot product over C at every pair of positions,
K_{h,h'}(x, x') = <x_h, x'_h'> / C.  A record stores per pair of inputs either

* the spatially diagonal maps K_{h,h}(x, x'), shape (n1, n2, *S): enough for Conv,
  Dense (per position), Activation, LayerNorm and a Flatten readout (H W per pair), or
* the full covariance K_{h,h'}(x, x'), shape (n1, n2, *S, *S): what AvgPool,
  GlobalAvgPool and Aggregate need ((H W)^2 per pair).

:func:`needs_full` makes the choice from the network, as neural-tangents does, and the
executor states its cost.  The functions below are what the layers' rules
(:mod:`nngp_lut.kernel.layers`, each layer's ``apply``) share: the input record, the
per-position factors, and the box sums of windows, in numpy (NNGP, NTK and the
diagonal-only records alike); the fused engine (``nngp_lut/_core/engine.py``) is tested
against them.

Convolution of a covariance map is a box sum over the filter's offsets D, the same offset
on both positions (Novak et al. 2019, eq. (7)):

    K'_{h,h'} = bias_var + weight_var / |D| sum_D K_{s h + D - p, s h' + D - p},

with entries outside the image zero (SAME, VALID) or wrapped around (CIRCULAR), p the
padding before the first position (SAME: half the total, as XLA pads).  The sum is
separable over the spatial axes.  Pooling sums each position over its own window:
K'_{h,h'} = 1 / |W|^2 sum_{D, D'} K_{s h + D - p, s h' + D' - p}.

References
----------
Novak et al., "Bayesian Deep Convolutional Networks with Many Channels are Gaussian
Processes", ICLR 2019, eqs. (7)-(9); Garriga-Alonso et al., "Deep Convolutional Networks as
shallow Gaussian Processes", ICLR 2019; Arora et al., "On Exact Computation with an
Infinitely Wide Neural Net", NeurIPS 2019, section 4 (the CNTK); Du et al., "Graph Neural
Tangent Kernel", NeurIPS 2019 (aggregation).
"""

import math

import numpy as np

from ..errors import ArchitectureError, DataError
from .record import Kernels, input_kernels

#: Names of the spatial axes of a record, by the number of spatial dimensions.
AXES = {1: ("length",), 2: ("height", "width")}


# --- inputs ------------------------------------------------------------------------------------
def as_spatial_inputs(x, rank, name="x", padded=False):
    """Validated float64 inputs with spatial axes: (n, H, W, C) for rank 2 ((n, H, W) gets
    one channel), (n, L, C) for rank 1; rank None takes 3-D arrays as (n, L, C) and 4-D as
    NHWC.  Returns the array and its rank.

    ``padded`` (networks with a recurrent layer) accepts sequences of unequal length: the
    steps whose channels are all NaN are padding, before or after the sequence's steps.
    They are returned aligned at the last step (the padding first, still NaN), which is
    where :func:`time_mask` finds them."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} is not numeric") from None
    if rank == 2 and a.ndim == 3:
        a = a[..., None]
    want = {1: "(n, L, C) sequences or graphs", 2: "(n, H, W, C) or (n, H, W) images",
            None: "(n, L, C) or (n, H, W, C)"}[rank]
    ndim_ok = a.ndim == 4 if rank == 2 else (a.ndim == 3 if rank == 1 else a.ndim in (3, 4))
    if not ndim_ok:
        hint = " (flattened images: give their shape, --shape H,W,C)" if a.ndim == 2 else ""
        raise DataError(f"{name} must be {want} for this convolutional network; got shape "
                        f"{a.shape}{hint}")
    if min(a.shape) == 0:
        raise DataError(f"{name} is empty (shape {a.shape})")
    if padded and a.ndim == 3 and np.isnan(a).any():
        return _align_padding(a, name), 1
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} has a NaN or inf value")
    return np.ascontiguousarray(a), a.ndim - 2


def _align_padding(a, name):
    """(n, T, C) sequences padded with all-NaN steps, aligned at their last step."""
    pad = np.isnan(a).all(axis=2)
    if not np.all(np.isfinite(a[~pad])):
        raise DataError(f"{name} has a NaN or inf value inside a step (a padded step of a "
                        "sequence has every channel NaN)")
    lengths = (~pad).sum(axis=1)
    if np.any(lengths == 0):
        raise DataError(f"{name} has a sequence with no steps (all NaN): input "
                        f"{int(np.argmin(lengths))}")
    first = np.argmax(~pad, axis=1)
    step = np.arange(a.shape[1])
    inside = (step >= first[:, None]) & (step < (first + lengths)[:, None])
    if not np.array_equal(inside, ~pad):
        raise DataError(f"{name} has NaN steps between a sequence's steps: pad sequences "
                        "only before or after their steps")
    out = np.full_like(a, np.nan)
    for i, (start, length) in enumerate(zip(first, lengths)):
        out[i, a.shape[1] - length:] = a[i, start:start + length]
    return out


def time_mask(x):
    """The mask (n, T) of the steps of (n, T, C) inputs (1.0; 0.0 at NaN padding) and the
    inputs with zeros there."""
    valid = ~np.isnan(x[:, :, 0])
    return np.where(valid[:, :, None], x, 0.0), valid.astype(np.float64)


def reshape_inputs(x, shape, name="x"):
    """Flattened (n, H*W*C) rows as (n, H, W, C) images (``shape`` = (H, W, C), or (L, C)
    for sequences), in the row-major (NHWC) order of the flattening."""
    a = np.asarray(x)
    shape = tuple(int(s) for s in shape)
    if a.ndim < 2:
        raise DataError(f"{name} must hold one input per row; got shape {a.shape}")
    if a.shape[1:] == shape:
        return a
    if a.ndim != 2 or a.shape[1] != math.prod(shape):
        raise DataError(f"{name} has rows of shape {a.shape[1:]}, which do not hold images "
                        f"of shape {shape} ({math.prod(shape)} values each)")
    return a.reshape((a.shape[0],) + shape)


# --- records -----------------------------------------------------------------------------------
def input_record(x1, x2=None, *, ntk=True, pairs=True, full=False, masked=False):
    """The record of the inputs: K_{h,h'}(x, x') = <x_h, x'_h'> / C for spatial inputs (all
    pairs of positions when ``full``, else h = h' only), <x, x'> / d for (n, d) vectors;
    NTK 0.  Arguments as :func:`nngp_lut.kernel.record.input_kernels`; ``masked``: (n, T, C)
    sequences padded with NaN steps (:func:`as_spatial_inputs`), whose record carries their
    masks (all ones for a sequence without padding)."""
    if x1.ndim == 2:
        return input_kernels(x1, x2, ntk=ntk, pairs=pairs)
    mask1 = mask2 = None
    if masked:
        x1, mask1 = time_mask(x1)
    ns = x1.ndim - 2
    c = x1.shape[-1]

    def cov(a, b, batch):
        fa, fb = a.reshape(a.shape[0], -1, c), b.reshape(b.shape[0], -1, c)
        sa, sb = a.shape[1:-1], b.shape[1:-1]
        if batch:  # one input with itself
            if full:
                return np.einsum("ihc,igc->ihg", fa, fb).reshape((a.shape[0],) + sa + sb) / c
            return np.einsum("ihc,ihc->ih", fa, fb).reshape((a.shape[0],) + sa) / c
        if full:
            return np.einsum("ihc,jgc->ijhg", fa, fb).reshape(
                (a.shape[0], b.shape[0]) + sa + sb) / c
        return np.einsum("ihc,jhc->ijh", fa, fb).reshape((a.shape[0], b.shape[0]) + sa) / c

    var1 = cov(x1, x1, True)
    meta = dict(width=c, axes=AXES[ns], full_spatial=full)
    if not pairs:
        zero = np.zeros_like(var1) if ntk else None
        return Kernels(None, None, var1, var1, zero, zero, **meta, mask1=mask1, mask2=mask1)
    same = x2 is None
    if same:
        x2, mask2 = x1, mask1
    elif masked:
        x2, mask2 = time_mask(x2)
    meta.update(mask1=mask1, mask2=mask2)
    var2 = var1 if same else cov(x2, x2, True)
    nngp = cov(x1, x2, False)
    zeros = (np.zeros_like(nngp), np.zeros_like(var1), np.zeros_like(var2)) if ntk else \
        (None, None, None)
    return Kernels(nngp, zeros[0], var1, var2, zeros[1], zeros[2], **meta)


def spatial_shape(k):
    """The spatial shape S of a record."""
    ns = len(k.axes)
    return k.var1.shape[1:1 + ns]


def positional(var, k):
    """Per-input variances K_{h,h}(x, x) at every position, (n, *S), from a var field."""
    if not k.full_spatial:
        return var
    ns = len(k.axes)
    s = var.shape[1:1 + ns]
    p = math.prod(s)
    flat = var.reshape(var.shape[0], p, p)
    return np.diagonal(flat, axis1=1, axis2=2).reshape((var.shape[0],) + s)


def pair_factors(v1, v2, k):
    """Per-position factors v1 (n1, *S) and v2 (n2, *S) arranged to broadcast against the
    pair fields (n1, n2, *S) or (n1, n2, *S, *S)."""
    ns = len(k.axes)
    if not k.full_spatial:
        return v1[:, None], v2[None, :]
    one = (1,) * ns
    return (v1.reshape((v1.shape[0], 1) + v1.shape[1:] + one),
            v2.reshape((1, v2.shape[0]) + one + v2.shape[1:]))


def self_factors(v, k):
    """v (n, *S) arranged against a var field: itself (diagonal maps) or the two positions
    (n, *S, 1..) and (n, 1.., *S) of the full covariance."""
    ns = len(k.axes)
    if not k.full_spatial:
        return v, v
    one = (1,) * ns
    return v.reshape(v.shape + one), v.reshape((v.shape[0],) + one + v.shape[1:])


def require_spatial(layer, k, rank=None):
    """Check that ``layer`` gets a record with spatial axes (of ``rank`` dimensions)."""
    name = type(layer).__name__
    if not k.axes:
        raise ArchitectureError(f"{name} needs inputs with spatial axes (images, sequences "
                                "or graphs) and gets a vector of features: put it before "
                                "Flatten() / GlobalAvgPool()")
    if rank is not None and len(k.axes) != rank:
        raise ArchitectureError(f"{name} has a {rank}-D window but its inputs have "
                                f"{len(k.axes)} spatial dimensions")
    return len(k.axes)


def require_full(layer, k):
    if not k.full_spatial:
        raise ArchitectureError(f"{type(layer).__name__} needs the covariance of every pair "
                                "of positions: make the input record with full=True "
                                "(Network does so when the network pools or aggregates)")


# --- windows -----------------------------------------------------------------------------------
def window_geometry(size, window, stride, padding):
    """(output size, padding before the first position) of a window sliding over ``size``
    positions, as XLA's SAME/VALID (CIRCULAR: SAME's geometry, wrapped)."""
    if padding == "VALID":
        out = (size - window) // stride + 1
        if out < 1:
            raise ArchitectureError(f"a window of {window} does not fit in {size} positions "
                                    "with VALID padding")
        return out, 0
    out = -(-size // stride)
    return out, max((out - 1) * stride + window - size, 0) // 2


def window_index(size, window, stride, padding):
    """(out, window) input position of each output position and offset; -1 where the
    window reaches past the edge (a zero of SAME/VALID padding)."""
    out, lo = window_geometry(size, window, stride, padding)
    idx = np.arange(out)[:, None] * stride + np.arange(window)[None, :] - lo
    if padding == "CIRCULAR":
        return idx % size
    return np.where((idx >= 0) & (idx < size), idx, -1)


def plain_pad(idx):
    """pad when the window table reads input o + t - pad at output o and offset t, and
    zeros (-1) exactly where that falls outside an input as long as the output (stride 1,
    zero padding); else -1."""
    n, k = idx.shape
    o, t = np.nonzero(idx >= 0)
    if o.size == 0:
        return -1
    pads = np.unique(o + t - idx[o, t])
    if pads.size != 1 or not 0 <= pads[0] <= k - 1:
        return -1
    pad = int(pads[0])
    shifted = np.arange(n)[:, None] + np.arange(k)[None, :] - pad
    return pad if np.array_equal(idx, np.where((shifted >= 0) & (shifted < n), shifted, -1)) \
        else -1


def _box(m, axes, idx):
    """sum_t m[..., idx[o1, t], ..., idx[o2, t], ...]: the axes in ``axes`` shifted jointly
    by the same offset t (index -1 reads a zero appended to each axis; a plain table,
    :func:`plain_pad`, adds shifted slices in place: the same sums)."""
    n, k = idx.shape
    pad = plain_pad(idx)
    if pad >= 0 and all(m.shape[ax] == n for ax in axes):
        total = np.zeros(m.shape)  # + each tap in order, in place: the same sums
        for t in range(k):
            shift = t - pad
            dst, src = [slice(None)] * m.ndim, [slice(None)] * m.ndim
            for ax in axes:
                lo, hi = max(0, -shift), min(n, n - shift)
                dst[ax], src[ax] = slice(lo, hi), slice(lo + shift, hi + shift)
            total[tuple(dst)] += m[tuple(src)]
        return total
    for ax in axes:
        widths = [(0, 0)] * m.ndim
        widths[ax] = (0, 1)
        m = np.pad(m, widths)
    total = 0.0
    for t in range(k):
        part = m
        for ax in axes:
            part = np.take(part, idx[:, t], axis=ax)
        total = total + part
    return total


def conv_mean(m, nb, k, idxs):
    """The mean over the filter's offsets of field ``m`` (nb batch axes)."""
    if m is None:
        return None
    ns = len(k.axes)
    for a, idx in enumerate(idxs):
        m = _box(m, (nb + a, nb + ns + a) if k.full_spatial else (nb + a,), idx)
    return m / math.prod(i.shape[1] for i in idxs)


def pool_mean(m, nb, k, idxs):
    """The mean over each position's own window (both positions independently)."""
    if m is None:
        return None
    ns = len(k.axes)
    for a, idx in enumerate(idxs):
        m = _box(m, (nb + a,), idx)
        m = _box(m, (nb + ns + a,), idx)
    return m / math.prod(i.shape[1] for i in idxs) ** 2


def window_indices(k, window, stride, padding):
    """The window tables of every spatial axis of a record."""
    return [window_index(n, w, s, padding)
            for n, w, s in zip(spatial_shape(k), window, stride)]


def map_fields(k, fn, **changes):
    """Apply fn(field, batch axes) to every array field of a record."""
    out = {f: (None if getattr(k, f) is None else fn(getattr(k, f), nb))
           for f, nb in (("nngp", 2), ("ntk", 2), ("var1", 1), ("var2", 1),
                         ("ntk_var1", 1), ("ntk_var2", 1))}
    return k.replace(**out, **changes)
