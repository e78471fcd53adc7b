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
x's chain, the last T y's, conditioned on x's; a row of pairs shares x's chain.

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
from numba import njit, prange

from .config import GATED_PIVOT_RTOL, JIT, JIT_PARALLEL

#: Cell codes.
CELL_GRU, CELL_LSTM = 0, 1
#: Gates of each cell (standard normals per slot): GRU update, reset and candidate; LSTM
#: forget, input, output and candidate.
GATES = (3, 4)
#: Weight matrices whose products need a covariance of their own: a GRU's candidate
#: multiplies r * h, every other gate h.
GROUPS = (2, 1)
#: Columns whose chains run together, so that their products with x's slots and with the
#: particles' normals are matrix products.
PAIR_BLOCK = 16


@njit(**JIT)
def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


@njit(**JIT)
def _new_slot(V, L, k, v, kin_row, w, u, b):
    """Slot k of one weight matrix: store its vector v, then the Cholesky row k of the
    slots' covariance, c_j = w <v, V_j> / m + u kin_row[j] + b (j <= k).  A slot dependent
    on earlier ones (a pair (x, x)) gets a zero pivot, which later rows skip."""
    V[k, :] = v
    c = w * (np.dot(V[:k + 1], v) / v.size) + u * kin_row[:k + 1] + b
    for j in range(k):
        s = c[j]
        for i in range(j):
            s -= L[k, i] * L[j, i]
        L[k, j] = s / L[j, j] if L[j, j] > 0.0 else 0.0
    d = c[k]
    for i in range(k):
        d -= L[k, i] * L[k, i]
    L[k, k] = math.sqrt(d) if d > GATED_PIVOT_RTOL * c[k] else 0.0


@njit(**JIT)
def _gaussian(L, k, xi, out):
    """out = the slot-k Gaussian of one gate: sum_j L[k, j] xi[j] over the particles."""
    out[:] = np.dot(L[k, :k + 1], xi[:k + 1])


@njit(**JIT)
def _step(cell, phi, k, kin_row, h_prev, cell_state, V, L, xi, w, u, b, h_out, a, a2):
    """One step of the cell on every particle: slot k, previous state h_prev (and the
    LSTM's cell state, updated in place), new state into h_out."""
    _new_slot(V[0], L[0], k, h_prev, kin_row, w, u, b)
    if cell == CELL_GRU:
        _gaussian(L[0], k, xi[0], a)  # update gate z
        _gaussian(L[0], k, xi[1], a2)  # reset gate r
        for p in range(a.size):
            a[p] = _sigmoid(a[p])
            a2[p] = _sigmoid(a2[p]) * h_prev[p]
        _new_slot(V[1], L[1], k, a2, kin_row, w, u, b)  # the candidate's W multiplies r h
        _gaussian(L[1], k, xi[2], a2)
        for p in range(a.size):
            h_out[p] = (1.0 - a[p]) * h_prev[p] + a[p] * phi(a2[p])
    else:
        _gaussian(L[0], k, xi[0], a)  # forget gate
        for p in range(a.size):
            cell_state[p] *= _sigmoid(a[p])
        _gaussian(L[0], k, xi[1], a)  # input gate
        _gaussian(L[0], k, xi[3], a2)  # candidate
        for p in range(a.size):
            cell_state[p] += _sigmoid(a[p]) * phi(a2[p])
        _gaussian(L[0], k, xi[2], a)  # output gate
        for p in range(a.size):
            h_out[p] = _sigmoid(a[p]) * phi(cell_state[p])


@njit(**JIT)
def _chain(cell, phi, k0, steps, kin, xi, V, L, H, w, u, b):
    """The chain of one input: slots k0 .. k0 + steps - 1, states into H[k0 ...].  kin: the
    input covariance of every slot with every slot (rows k0 .. are used)."""
    m = H.shape[1]
    zero = np.zeros(m)
    cell_state = np.zeros(m)
    a, a2 = np.empty(m), np.empty(m)
    for t in range(steps):
        k = k0 + t
        h_prev = zero if t == 0 else H[k - 1]
        _step(cell, phi, k, kin[k], h_prev, cell_state, V, L, xi, w, u, b, H[k], a, a2)


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


@njit(**JIT_PARALLEL)
def self_maps(cell, phi, w, u, b, kin, xi, multiplier, mean, error):
    """mean[i], error[i] = E[h_t(x_i) h_s(x_i)] (T, T) and its error, from each input's own
    chain.  kin (n, T, T) the inputs' own covariances; xi (R, gates, 2 T, m) the particles'
    standard normals (the first T slots are used)."""
    n, steps = kin.shape[0], kin.shape[1]
    n_rand, m = xi.shape[0], xi.shape[3]
    groups = GROUPS[cell]
    for i in prange(n):
        V = np.empty((groups, steps, m))
        L = np.zeros((groups, steps, steps))
        H = np.empty((steps, m))
        est = np.empty((n_rand, steps, steps))
        for r in range(n_rand):
            _chain(cell, phi, 0, steps, kin[i], xi[r], V, L, H, w, u, b)
            est[r] = np.dot(H, H.T) / m
        _summarise(est, multiplier, mean[i], error[i])


@njit(**JIT)
def _cholesky_rows(c, Lx, Ly, s):
    """Rows of the y-slot s of a block of columns: c (B, T + s + 1) their covariances with
    x's slots and their own earlier ones; Lx (T, T) x's Cholesky factor; Ly (B, T, 2T) the
    columns' earlier rows, row s written here (the same pivots as _new_slot)."""
    steps = Lx.shape[0]
    k = steps + s
    for b in range(c.shape[0]):
        row = Ly[b, s]
        for j in range(k):
            acc = c[b, j]
            for i in range(j):
                acc -= row[i] * (Lx[j, i] if j < steps else Ly[b, j - steps, i])
            pivot = Lx[j, j] if j < steps else Ly[b, j - steps, j]
            row[j] = acc / pivot if pivot > 0.0 else 0.0
        d = c[b, k]
        for i in range(k):
            d -= row[i] * row[i]
        row[k] = math.sqrt(d) if d > GATED_PIVOT_RTOL * c[b, k] else 0.0


@njit(**JIT)
def _block_slot(Vx, Lx, Vy, Ly, s, v, kin_x, kin_y, w, u, b, rows):
    """The y-slot s of one weight matrix for a block of columns: store their vectors v (B, m),
    covariances with x's slots by one matrix product (the particles' mean), with their own
    earlier slots column by column, then their Cholesky rows; ``rows`` (B, T + s + 1) gets
    them contiguous, ready for the combination.  kin_x (B, T), kin_y (B, s + 1): the input
    covariances of the slot."""
    steps, m = Vx.shape[0], v.shape[1]
    Vy[:, s] = v
    c = np.empty((v.shape[0], steps + s + 1))
    c[:, :steps] = np.dot(v, Vx.T)
    for col in range(v.shape[0]):
        c[col, steps:] = np.dot(Vy[col, :s + 1], v[col])
    c *= w / m
    c[:, :steps] += u * kin_x + b
    c[:, steps:] += u * kin_y + b
    _cholesky_rows(c, Lx, Ly, s)
    rows[:] = Ly[:, s, :steps + s + 1]


@njit(**JIT)
def _block_chain(cell, phi, steps, Vx, Lx, xi, kin_x, kin_y, w, u, b, H):
    """The chains of a block of columns (B of them) on slots T .. 2T-1, conditioned on x's
    (Vx, Lx: (groups, T, m), (groups, T, T)); states into H (B, T, m).  kin_x (B, T, T): the
    columns' input covariances with x (steps of y by steps of x), kin_y (B, T, T) their
    own."""
    n_cols, m = H.shape[0], H.shape[2]
    groups = Vx.shape[0]
    Vy = np.empty((groups, n_cols, steps, m))
    Ly = np.zeros((groups, n_cols, steps, 2 * steps))
    h_prev = np.zeros((n_cols, m))
    cell_state = np.zeros((n_cols, m))
    a, a2 = np.empty((n_cols, m)), np.empty((n_cols, m))
    for s in range(steps):
        k = steps + s + 1
        rows = np.empty((n_cols, k))
        kx, ky = kin_x[:, s], kin_y[:, s, :s + 1]
        _block_slot(Vx[0], Lx[0], Vy[0], Ly[0], s, h_prev, kx, ky, w, u, b, rows)
        if cell == CELL_GRU:
            a[:] = np.dot(rows, xi[0, :k])  # update gate z
            a2[:] = np.dot(rows, xi[1, :k])  # reset gate r
            for col in range(n_cols):
                for p in range(m):
                    a[col, p] = _sigmoid(a[col, p])
                    a2[col, p] = _sigmoid(a2[col, p]) * h_prev[col, p]
            _block_slot(Vx[1], Lx[1], Vy[1], Ly[1], s, a2, kx, ky, w, u, b, rows)
            a2[:] = np.dot(rows, xi[2, :k])
            for col in range(n_cols):
                for p in range(m):
                    H[col, s, p] = (1.0 - a[col, p]) * h_prev[col, p] \
                        + a[col, p] * phi(a2[col, p])
        else:
            a[:] = np.dot(rows, xi[0, :k])  # forget gate
            a2[:] = np.dot(rows, xi[3, :k])  # candidate
            for col in range(n_cols):
                for p in range(m):
                    cell_state[col, p] *= _sigmoid(a[col, p])
            a[:] = np.dot(rows, xi[1, :k])  # input gate
            for col in range(n_cols):
                for p in range(m):
                    cell_state[col, p] += _sigmoid(a[col, p]) * phi(a2[col, p])
            a[:] = np.dot(rows, xi[2, :k])  # output gate
            for col in range(n_cols):
                for p in range(m):
                    H[col, s, p] = _sigmoid(a[col, p]) * phi(cell_state[col, p])
        h_prev[:] = H[:, s]


@njit(**JIT_PARALLEL)
def pair_maps(cell, phi, w, u, b, kin1, kin2, kin12, xi, multiplier, active, mean, error):
    """mean[i, j], error[i, j] = E[h_t(x_i) h_s(y_j)] (T, T) and its error for the active
    pairs (the others are left alone): x_i's chain on slots 0 .. T-1 (once per row), then
    the chains of blocks of PAIR_BLOCK columns y_j on slots T .. 2T-1, conditioned on it,
    together (their covariances with x's slots and their normals' combinations are matrix
    products).  kin1 (n1, T, T), kin2 (n2, T, T), kin12 (n1, n2, T, T) the input
    covariances."""
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
        for r in range(n_rand):
            _chain(cell, phi, 0, steps, kin1[i], xi[r], V[r], L[r], H[r], w, u, b)
        for start in range(0, cols.size, PAIR_BLOCK):
            block = cols[start:start + PAIR_BLOCK]
            kin_x = np.empty((block.size, steps, steps))
            kin_y = np.empty((block.size, steps, steps))
            for col in range(block.size):
                kin_x[col] = kin12[i, block[col]].T
                kin_y[col] = kin2[block[col]]
            est = np.empty((block.size, n_rand, steps, steps))
            Hy = np.empty((block.size, steps, m))
            for r in range(n_rand):
                _block_chain(cell, phi, steps, V[r], L[r], xi[r], kin_x, kin_y, w, u, b, Hy)
                for col in range(block.size):
                    est[col, r] = np.dot(H[r], Hy[col].T) / m
            for col in range(block.size):
                j = block[col]
                _summarise(est[col], multiplier, mean[i, j], error[i, j])
