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


@njit(**JIT_PARALLEL)
def pair_maps(cell, phi, w, u, b, kin1, kin2, kin12, xi, multiplier, active, mean, error):
    """mean[i, j], error[i, j] = E[h_t(x_i) h_s(y_j)] (T, T) and its error for the active
    pairs (the others are left alone): x_i's chain on
    slots 0 .. T-1 (once per row), then y_j's on slots T .. 2T-1, conditioned on it.
    kin1 (n1, T, T), kin2 (n2, T, T), kin12 (n1, n2, T, T) the input covariances."""
    n1, n2, steps = kin1.shape[0], kin2.shape[0], kin1.shape[1]
    n_rand, m = xi.shape[0], xi.shape[3]
    groups = GROUPS[cell]
    for i in prange(n1):
        if not active[i].any():
            continue
        V = np.empty((n_rand, groups, 2 * steps, m))
        L = np.zeros((n_rand, groups, 2 * steps, 2 * steps))
        H = np.empty((n_rand, 2 * steps, m))
        kin = np.empty((2 * steps, 2 * steps))
        est = np.empty((n_rand, steps, steps))
        kin[:steps, :steps] = kin1[i]
        for r in range(n_rand):
            _chain(cell, phi, 0, steps, kin, xi[r], V[r], L[r], H[r], w, u, b)
        for j in range(n2):
            if not active[i, j]:
                continue
            kin[steps:, :steps] = kin12[i, j].T
            kin[steps:, steps:] = kin2[j]
            for r in range(n_rand):
                _chain(cell, phi, steps, steps, kin, xi[r], V[r], L[r], H[r], w, u, b)
                est[r] = np.dot(H[r, :steps], H[r, steps:].T) / m
            _summarise(est, multiplier, mean[i, j], error[i, j])
