"""Slow, obviously correct references for the fast kernels (independent of nngp_lut._core).

``reference_F`` integrates E[phi(u) phi(v)] with scipy's adaptive QUADPACK in standard-normal
coordinates, splitting the inner integral at the kink images; ``closed_form`` holds the
closed forms of DESIGN.md section 1.
"""

import math

import numpy as np
from scipy import integrate, special

TOL = dict(epsabs=1e-13, epsrel=1e-12, limit=400)


def reference_F(phi, q1, q2, rho, kinks=(0.0,)):
    """E[phi(u) phi(v)] by nested scipy.integrate.quad over z1, z2 in [-10, 10]."""
    s1, s2 = math.sqrt(q1), math.sqrt(q2)
    c, s = rho, math.sqrt(max(0.0, 1.0 - rho * rho))
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731

    def inner(z1):
        if s == 0.0:
            return phi(s2 * c * z1)
        pts = [(k / s2 - c * z1) / s for k in kinks]
        pts = [p for p in pts if -10 < p < 10]
        return integrate.quad(lambda z2: phi(s2 * (c * z1 + s * z2)) * pdf(z2), -10, 10,
                              points=pts or None, **TOL)[0]

    pts = sorted({k / s1 for k in kinks} | {k / (s2 * c) for k in kinks if c != 0.0})
    pts = [p for p in pts if -10 < p < 10]
    return integrate.quad(lambda z1: phi(s1 * z1) * inner(z1) * pdf(z1), -10, 10,
                          points=pts or None, **TOL)[0]


def reference_moment(phi, q, power=2):
    s = math.sqrt(q)
    return integrate.quad(lambda z: phi(s * z) ** power * math.exp(-0.5 * z * z)
                          / math.sqrt(2 * math.pi), -10, 10, points=[0.0], **TOL)[0]


def closed_form(name, q1, q2, rho):
    """Closed forms of F (DESIGN.md section 1), vectorised."""
    q1, q2, rho = np.broadcast_arrays(*(np.asarray(a, float) for a in (q1, q2, rho)))
    s = np.sqrt(q1 * q2)
    th = np.arccos(np.clip(rho, -1, 1))
    if name == "relu":
        return s / (2 * np.pi) * (np.sin(th) + (np.pi - th) * rho)
    if name == "abs":
        return 2 * s / np.pi * (np.sqrt(1 - rho**2) + rho * np.arcsin(rho))
    if name == "step":
        return 0.5 - th / (2 * np.pi)
    if name == "erf":
        return 2 / np.pi * np.arcsin(2 * rho * s / np.sqrt((1 + 2 * q1) * (1 + 2 * q2)))
    if name == "identity":
        return rho * s
    if name == "sin":  # exp(-(q1+q2)/2) sinh(rho s), overflow-free
        return 0.5 * (np.exp(-(q1 + q2) / 2 + rho * s) - np.exp(-(q1 + q2) / 2 - rho * s))
    if name == "cos":
        return 0.5 * (np.exp(-(q1 + q2) / 2 + rho * s) + np.exp(-(q1 + q2) / 2 - rho * s))
    raise KeyError(name)


def closed_form_dot(name, q1, q2, rho):
    """Closed forms of Fdot = E[phi'(u) phi'(v)] (DESIGN.md section 6), vectorised."""
    q1, q2, rho = np.broadcast_arrays(*(np.asarray(a, float) for a in (q1, q2, rho)))
    if name == "relu":
        return (np.pi - np.arccos(np.clip(rho, -1, 1))) / (2 * np.pi)
    if name == "erf":
        c = rho * np.sqrt(q1 * q2)
        return 4 / (np.pi * np.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * c * c))
    if name == "identity":
        return np.ones_like(rho)
    if name == "sin":  # sin' = cos: E[cos u cos v]
        return closed_form("cos", q1, q2, rho)
    if name == "cos":  # cos' = -sin: E[sin u sin v]
        return closed_form("sin", q1, q2, rho)
    raise KeyError(name)


def exact_kernels(name, x1, x2, depth, w, b):
    """NNGP and NTK of the fully connected network by the recursions of DESIGN.md sections 1
    and 6 with the closed forms (numpy, full matrices).  ``x2=None``: the symmetric case,
    whose diagonal correlations are exactly 1."""
    same = x2 is None
    x2 = x1 if same else x2
    d = x1.shape[1]
    k = b + w * x1 @ x2.T / d
    q1 = b + w * np.sum(x1 * x1, 1) / d
    q2 = b + w * np.sum(x2 * x2, 1) / d
    t = k.copy()
    for _ in range(depth):
        rho = np.clip(k / np.sqrt(np.outer(q1, q2)), -1, 1)
        if same:
            np.fill_diagonal(rho, 1.0)
        t = b + w * closed_form(name, q1[:, None], q2[None, :], rho) + \
            w * closed_form_dot(name, q1[:, None], q2[None, :], rho) * t
        k = b + w * closed_form(name, q1[:, None], q2[None, :], rho)
        q1 = b + w * closed_form(name, q1, q1, 1.0)
        q2 = b + w * closed_form(name, q2, q2, 1.0)
    return k, t


def rnn_direct(name, a, b, w, u, bias):
    """The simple-RNN kernel of sequences a (Ta, C) and b (Tb, C) of any lengths, step pair
    by step pair with the closed forms (the recursion of ``SimpleRNN``'s docstring: Yang
    2019; Alemohammad et al. 2021): K_h and Theta_h over (Ta, Tb)."""
    def variances(z):
        q = []
        for t in range(len(z)):
            carry = w * float(closed_form(name, q[-1], q[-1], 1.0)) if t else 0.0
            q.append(u * z[t] @ z[t] / z.shape[1] + bias + carry)
        return q

    qa, qb = variances(a), variances(b)
    kh, th = np.zeros((len(a), len(b))), np.zeros((len(a), len(b)))
    for t in range(len(a)):
        for s in range(len(b)):
            g = u * a[t] @ b[s] / a.shape[1] + bias
            theta = g
            if t and s:
                g += w * kh[t - 1, s - 1]
                theta = g + w * th[t - 1, s - 1]
            rho = min(1.0, max(-1.0, g / math.sqrt(qa[t] * qb[s])))
            kh[t, s] = closed_form(name, qa[t], qb[s], rho)
            th[t, s] = closed_form_dot(name, qa[t], qb[s], rho) * theta
    return kh, th


def scalar(name):
    """Plain-Python phi of a built-in, for the reference integrator."""
    return {
        "tanh": math.tanh,
        "sigmoid": lambda x: 1 / (1 + math.exp(-x)) if x > -700 else 0.0,
        "softplus": lambda x: max(x, 0) + math.log1p(math.exp(-abs(x))),
        "gelu": lambda x: 0.5 * x * math.erfc(-x / math.sqrt(2)),
        "silu": lambda x: x / (1 + math.exp(-x)) if x > -700 else 0.0,
        "elu": lambda x: x if x > 0 else math.expm1(x),
        "selu": lambda x: 1.0507009873554805 * (x if x > 0 else 1.6732632423543772 * math.expm1(x)),
        "erf": math.erf,
    }[name]


_ = special  # scipy.special kept for closed forms added later
