"""Gated recurrent cells (GRU, LSTM): their Tensor Program simulated on quasi-random particles.

A gated cell's kernel is no bivariate expectation: the state h_{t-1} is a nonlinear function
of every gate pre-activation before it, and h_t multiplies gates by it.  By the Netsor master
theorem (Yang, "Tensor Programs I", NeurIPS 2019, Theorem 5.4) each unit of an infinitely
wide cell is one draw of the same random program: every pre-activation of one input at one
step is a Gaussian ("slot") jointly Gaussian with the others of the same weight matrix, with

    Cov(g_t(x), g_s(y)) = weight_var E[v_t(x) v_s(y)] + input_var K_in(x_t, y_s) + bias_var,

where v is the vector the matrix multiplies (h_{t-1}, or r_t * h_{t-1} for a GRU's
candidate), and gates of different matrices are independent.  A pair of sequences (x, y)
is thus one integral over 2 T slots per matrix, nested: each slot's covariance is an
expectation over the slots before it.  We evaluate it on m particles (the unit's draws),
slot by slot: the covariance row of a new slot with the earlier ones is the particles' mean
of the products v v', its Cholesky row gives the slot as a combination of standard normals
(the particles' coordinates), and the cell's update runs on every particle.  The
coordinates are scrambled Sobol' points (nngp_lut/expectation.py), R independent
scramblings give R independent estimates and their spread the error.  The first T slots are
x's chain, the last T y's, conditioned on x's; a row of pairs shares x's chain, and blocks
of chains run together, so that their products with the particles are matrix products.

Padded sequences (aligned at their last step) start their chain at step ``first``: the
slots before it are zero (a zero Cholesky row: the marginal law of the other slots is
unchanged) and the state stays h = c = 0 there, as before a sequence starts.

References
----------
Yang, "Wide Feedforward or Recurrent Neural Networks of Any Architecture are Gaussian
Processes" (Tensor Programs I), NeurIPS 2019, sections 4-5 (the GRU is its example).
Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder", EMNLP 2014, eqs.
(5)-(8) (the GRU); Hochreiter & Schmidhuber, "Long Short-Term Memory", 1997, with the
forget gate of Gers, Schmidhuber & Cummins 2000 (the LSTM).
"""

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..activations import _erf, _identity, _relu, _tanh
from ..activations import _sigmoid as _sigmoid_phi
from .config import GATED_PIVOT_RTOL, JIT, JIT_PARALLEL

#: Cell codes.
CELL_GRU, CELL_LSTM = 0, 1
#: Gates of each cell (standard normals per slot): GRU update, reset and candidate; LSTM
#: forget, input, output and candidate.
GATES = (3, 4)
#: Weight matrices whose products need a covariance of their own: a GRU's candidate
#: multiplies r * h, every other gate h.
GROUPS = (2, 1)
#: Chains that run together (a block of columns, or of inputs), so that their products with
#: the conditioning slots and with the particles' normals are matrix products.
PAIR_BLOCK = 16


@njit(**JIT)
def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


#: Activations the kernels take by a code: with an integer in place of a compiled function
#: their compiled code is cached on disk (a function argument is compiled anew in every
#: process, numba#9237: ~50 s for a GRU).  Any other phi is passed as its function.
PHI_CODES = {"tanh": 0, "erf": 1, "sigmoid": 2, "relu": 3, "identity": 4}


def _phi(phi, x):
    """phi(x) for phi a code of PHI_CODES or a compiled function (typed by the overload)."""
    raise NotImplementedError("only called from compiled code")


@overload(_phi, jit_options=JIT)
def _phi_typed(phi, x):
    if isinstance(phi, types.Integer):
        def by_code(phi, x):
            if phi == 0:
                return _tanh(x)
            if phi == 1:
                return _erf(x)
            if phi == 2:
                return _sigmoid_phi(x)
            if phi == 3:
                return _relu(x)
            return _identity(x)
        return by_code
    return lambda phi, x: phi(x)


@njit(**JIT)
def _summarise(est, multiplier, mean, error):
    """The mean of the R estimates est (R, T, T) and the half-width multiplier * sd / sqrt(R)
    of their Student-t interval."""
    n_rand = est.shape[0]
    mean[:] = 0.0
    for r in range(n_rand):
        mean += est[r]
    mean /= n_rand
    error[:] = 0.0
    for r in range(n_rand):
        error += (est[r] - mean) ** 2
    error[:] = multiplier * np.sqrt(error / (n_rand - 1) / n_rand)


@njit(**JIT)
def _cholesky_rows(c, Lx, Ly, s):
    """Rows of slot s of a block of chains: c (B, k0 + s + 1) their covariances with the k0
    slots they are conditioned on and with their own earlier ones; Lx (k0, k0) the Cholesky
    factor of the former; Ly (B, T, k0 + T) the chains' earlier rows, row s written here.  A
    slot dependent on earlier ones (a pair (x, x)) gets a zero pivot, which later rows skip."""
    k0 = Lx.shape[0]
    k = k0 + s
    for b in range(c.shape[0]):
        row = Ly[b, s]
        for j in range(k):
            acc = c[b, j]
            for i in range(j):
                acc -= row[i] * (Lx[j, i] if j < k0 else Ly[b, j - k0, i])
            pivot = Lx[j, j] if j < k0 else Ly[b, j - k0, j]
            row[j] = acc / pivot if pivot > 0.0 else 0.0
        d = c[b, k]
        for i in range(k):
            d -= row[i] * row[i]
        row[k] = math.sqrt(d) if d > GATED_PIVOT_RTOL * c[b, k] else 0.0


@njit(**JIT)
def _block_slot(Vx, Lx, Vy, Ly, s, v, kin_x, kin_y, w, u, b, first, rows):
    """Slot s of one weight matrix for a block of chains: store their vectors v (B, m), their
    covariances with the k0 conditioning slots by one matrix product (the particles' mean)
    and with their own earlier slots chain by chain, then their Cholesky rows; ``rows``
    (B, k0 + s + 1) gets them contiguous, ready for the combination.  kin_x (B, k0),
    kin_y (B, s + 1): the input covariances of the slot; a chain with s < first (B,) is in
    its padding: its slot is zero."""
    k0, m = Vx.shape[0], v.shape[1]
    Vy[:, s] = v
    c = np.empty((v.shape[0], k0 + s + 1))
    if k0:
        c[:, :k0] = np.dot(v, Vx.T)
    for col in range(v.shape[0]):
        c[col, k0:] = np.dot(Vy[col, :s + 1], v[col])
    c *= w / m
    c[:, :k0] += u * kin_x + b
    c[:, k0:] += u * kin_y + b
    for col in range(v.shape[0]):
        if s < first[col]:
            c[col] = 0.0
    _cholesky_rows(c, Lx, Ly, s)
    rows[:] = Ly[:, s, :k0 + s + 1]


@njit(**JIT)
def _block_chain(cell, phi, Vx, Lx, xi, kin_x, kin_y, w, u, b, first, Vy, Ly, H):
    """The chains of a block of B inputs, each on slots k0 .. k0 + T - 1, conditioned on the
    k0 slots of another input's chain (Vx, Lx: (groups, k0, m), (groups, k0, k0); k0 = 0 for
    chains of their own).  kin_x (B, T, k0): the inputs' covariances with that input (their
    steps by its), kin_y (B, T, T) their own, first (B,) their first steps (0 unless
    padded).  Writes their vectors Vy (groups, B, T, m), Cholesky rows Ly (groups, B, T,
    k0 + T) and states H (B, T, m)."""
    n_cols, steps, m = H.shape[0], H.shape[1], H.shape[2]
    k0 = Vx.shape[1]
    h_prev = np.zeros((n_cols, m))
    cell_state = np.zeros((n_cols, m))
    a, a2 = np.empty((n_cols, m)), np.empty((n_cols, m))
    for s in range(steps):
        k = k0 + s + 1
        rows = np.empty((n_cols, k))
        kx, ky = kin_x[:, s], kin_y[:, s, :s + 1]
        _block_slot(Vx[0], Lx[0], Vy[0], Ly[0], s, h_prev, kx, ky, w, u, b, first, rows)
        if cell == CELL_GRU:
            a[:] = np.dot(rows, xi[0, :k])  # update gate z
            a2[:] = np.dot(rows, xi[1, :k])  # reset gate r
            for col in range(n_cols):
                for p in range(m):
                    a[col, p] = _sigmoid(a[col, p])
                    a2[col, p] = _sigmoid(a2[col, p]) * h_prev[col, p]
            # the candidate's W multiplies r h: a covariance of its own
            _block_slot(Vx[1], Lx[1], Vy[1], Ly[1], s, a2, kx, ky, w, u, b, first, rows)
            a2[:] = np.dot(rows, xi[2, :k])
            for col in range(n_cols):
                for p in range(m):
                    H[col, s, p] = (1.0 - a[col, p]) * h_prev[col, p] \
                        + a[col, p] * _phi(phi, a2[col, p])
        else:
            a[:] = np.dot(rows, xi[0, :k])  # forget gate
            a2[:] = np.dot(rows, xi[3, :k])  # candidate
            for col in range(n_cols):
                for p in range(m):
                    cell_state[col, p] *= _sigmoid(a[col, p])
            a[:] = np.dot(rows, xi[1, :k])  # input gate
            for col in range(n_cols):
                for p in range(m):
                    cell_state[col, p] += _sigmoid(a[col, p]) * _phi(phi, a2[col, p])
            a[:] = np.dot(rows, xi[2, :k])  # output gate
            for col in range(n_cols):
                for p in range(m):
                    H[col, s, p] = _sigmoid(a[col, p]) * _phi(phi, cell_state[col, p])
        for col in range(n_cols):
            if s < first[col]:  # padding: no step yet
                H[col, s] = 0.0
                cell_state[col] = 0.0
        h_prev[:] = H[:, s]


@njit(**JIT)
def _own_chains(cell, phi, kin, xi, w, u, b, first, Vy, Ly, H):
    """Chains of their own (no conditioning) of a block of inputs, kin (B, T, T)."""
    groups, m = Vy.shape[0], H.shape[2]
    _block_chain(cell, phi, np.empty((groups, 0, m)), np.empty((groups, 0, 0)), xi,
                 np.empty((kin.shape[0], kin.shape[1], 0)), kin, w, u, b, first, Vy, Ly, H)


@njit(**JIT_PARALLEL)
def self_maps(cell, phi, w, u, b, kin, first, xi, multiplier, mean, error):
    """mean[i], error[i] = E[h_t(x_i) h_s(x_i)] (T, T) and its error, from each input's own
    chain, PAIR_BLOCK inputs together.  kin (n, T, T) the inputs' own covariances, first
    (n,) their first steps; xi (R, gates, 2 T, m) the particles' standard normals (the first
    T slots are used)."""
    n, steps = kin.shape[0], kin.shape[1]
    n_rand, m = xi.shape[0], xi.shape[3]
    groups = GROUPS[cell]
    for start in prange((n + PAIR_BLOCK - 1) // PAIR_BLOCK):
        lo = start * PAIR_BLOCK
        hi = min(n, lo + PAIR_BLOCK)
        Vy = np.empty((groups, hi - lo, steps, m))
        Ly = np.zeros((groups, hi - lo, steps, steps))
        H = np.empty((hi - lo, steps, m))
        est = np.empty((hi - lo, n_rand, steps, steps))
        for r in range(n_rand):
            _own_chains(cell, phi, kin[lo:hi], xi[r], w, u, b, first[lo:hi], Vy, Ly, H)
            for col in range(hi - lo):
                est[col, r] = np.dot(H[col], H[col].T) / m
        for col in range(hi - lo):
            _summarise(est[col], multiplier, mean[lo + col], error[lo + col])


@njit(**JIT_PARALLEL)
def pair_maps(cell, phi, w, u, b, kin1, kin2, kin12, first1, first2, xi, multiplier, active,
              mean, error):
    """mean[i, j], error[i, j] = E[h_t(x_i) h_s(y_j)] (T, T) and its error for the active
    pairs (the others are left alone): x_i's chain on slots 0 .. T-1 (once per row), then
    the chains of blocks of PAIR_BLOCK columns y_j on slots T .. 2T-1, conditioned on it,
    together (their covariances with x's slots and their normals' combinations are matrix
    products).  kin1 (n1, T, T), kin2 (n2, T, T), kin12 (n1, n2, T, T) the input
    covariances, first1 (n1,) and first2 (n2,) the inputs' first steps."""
    n1, steps = kin1.shape[0], kin1.shape[1]
    n_rand, m = xi.shape[0], xi.shape[3]
    groups = GROUPS[cell]
    for i in prange(n1):
        cols = np.flatnonzero(active[i])
        if cols.size == 0:
            continue
        V = np.empty((n_rand, groups, steps, m))
        L = np.zeros((n_rand, groups, steps, steps))
        H = np.empty((n_rand, steps, m))
        for r in range(n_rand):  # x's chain: a block of one
            _own_chains(cell, phi, kin1[i:i + 1], xi[r], w, u, b, first1[i:i + 1],
                        V[r].reshape((groups, 1, steps, m)),
                        L[r].reshape((groups, 1, steps, steps)), H[r].reshape((1, steps, m)))
        for start in range(0, cols.size, PAIR_BLOCK):
            block = cols[start:start + PAIR_BLOCK]
            kin_x = np.empty((block.size, steps, steps))
            kin_y = np.empty((block.size, steps, steps))
            first = np.empty(block.size, dtype=np.int64)
            for col in range(block.size):
                kin_x[col] = kin12[i, block[col]].T
                kin_y[col] = kin2[block[col]]
                first[col] = first2[block[col]]
            est = np.empty((block.size, n_rand, steps, steps))
            Vy = np.empty((groups, block.size, steps, m))
            Ly = np.zeros((groups, block.size, steps, 2 * steps))
            Hy = np.empty((block.size, steps, m))
            for r in range(n_rand):
                _block_chain(cell, phi, V[r], L[r], xi[r], kin_x, kin_y, w, u, b, first, Vy,
                             Ly, Hy)
                for col in range(block.size):
                    est[col, r] = np.dot(H[r], Hy[col].T) / m
            for col in range(block.size):
                j = block[col]
                _summarise(est[col], multiplier, mean[i, j], error[i, j])
