"""Gaussian expectations of an activation by composite Gauss-Legendre quadrature.

The integrals are done in pre-activation units u over a *partition* of the real line that
is adapted to phi once per activation (``build_partition``): panels on which phi and phi'
are polynomials to working precision.  Each Gaussian integral over mean +- 9 sd uses the
partition panels that meet its window, split further so no panel is wider than 3 sd.  This
is "integration in standardised coordinates" made adaptive: near the origin, where phi has
its features, panels are as narrow as phi needs; far out, where a saturating or linear phi
is a polynomial, they are as wide as the Gaussian allows.  A variance of 1e4 therefore costs
a few hundred nodes per axis instead of the ~6000 of a uniform rule.

Kinks and jumps of phi (declared ones, and the ones the partition finds by bisection) are
panel ends, so they cost nothing.  In the bivariate integral the inner integral G(u), a
Gaussian smoothing of phi(lam * u) of width sd / lam, keeps a smoothed kink at every kink of
phi; the outer rule is graded geometrically towards those points down to that width.

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, Section 2.5.
"""

import math

import numpy as np
from numba import njit, prange

from .config import (
    GAUSS_PANEL,
    GAUSS_WINDOW,
    GL_BARY,
    GL_ORDER,
    GL_W,
    GL_X,
    JIT,
    JIT_PARALLEL,
    DEGENERATE_SIN,
    PARTITION_MAX_WIDTH,
    PARTITION_MIN_WIDTH,
    PARTITION_TEST_POINTS,
    PARTITION_TOL,
    PARTITION_TOL_DERIVATIVE,
    TRAPEZOID_MARGIN,
    TRAPEZOID_MAX_STEP,
    UNIVERSAL_FINE,
    UNIVERSAL_RATIO,
    UNIVERSAL_RATIO_FINE,
)

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(**JIT)
def _panel_misfit(f, a, b):
    """Max error of the GL interpolant of f on [a, b] at the test points, and max |f|."""
    half = 0.5 * (b - a)
    mid = 0.5 * (a + b)
    vals = np.empty(GL_ORDER)
    scale = 1.0
    for j in range(GL_ORDER):
        vals[j] = f(mid + half * GL_X[j])
        if not math.isfinite(vals[j]):
            return np.inf, np.nan
        scale = max(scale, abs(vals[j]))
    err = 0.0
    for t in PARTITION_TEST_POINTS:
        num = 0.0
        den = 0.0
        for j in range(GL_ORDER):
            c = GL_BARY[j] / (t - GL_X[j])
            num += c * vals[j]
            den += c
        exact = f(mid + half * t)
        if not math.isfinite(exact):
            return np.inf, np.nan
        err = max(err, abs(num / den - exact))
    return err, scale


@njit(**JIT)
def build_partition(phi, dphi, half_width, seeds):
    """Breakpoints on [-half_width, half_width] on whose panels phi and dphi are polynomials.

    Returns ``(breakpoints, kinks, bad)``: the sorted breakpoints, the points where bisection
    stopped at the minimum width (kinks or jumps found), and the first argument at which phi
    or dphi was not finite (NaN if none).
    """
    stack_a = [-half_width]
    stack_b = [half_width]
    # Seeds (declared kinks) split the initial interval.
    edges = [-half_width]
    for s in np.sort(seeds):
        if -half_width < s < half_width:
            edges.append(s)
    edges.append(half_width)
    stack_a.clear()
    stack_b.clear()
    for k in range(len(edges) - 1):
        stack_a.append(edges[k])
        stack_b.append(edges[k + 1])
    accepted = [half_width]
    kinks = [0.0]
    kinks.clear()
    bad = np.nan
    while len(stack_a) > 0:
        a = stack_a.pop()
        b = stack_b.pop()
        width = b - a
        if width > PARTITION_MAX_WIDTH * max(1.0, min(abs(a), abs(b))):
            # Too wide to trust a test by sampling (a feature could hide between nodes).
            m = 0.5 * (a + b)
            stack_a.append(a)
            stack_b.append(m)
            stack_a.append(m)
            stack_b.append(b)
            continue
        if width <= PARTITION_MIN_WIDTH * max(1.0, abs(a), abs(b)):
            accepted.append(a)
            kinks.append(0.5 * (a + b))
            continue
        e1, s1 = _panel_misfit(phi, a, b)
        e2, s2 = _panel_misfit(dphi, a, b)
        if not (math.isfinite(e1) and math.isfinite(e2)):
            # Locate the offending argument for the error message, then stop.
            for j in range(GL_ORDER):
                u = 0.5 * (a + b) + 0.5 * width * GL_X[j]
                if not (math.isfinite(phi(u)) and math.isfinite(dphi(u))):
                    bad = u
                    break
            if math.isnan(bad):
                bad = a
            break
        if e1 <= PARTITION_TOL * s1 and e2 <= PARTITION_TOL_DERIVATIVE * s2:
            accepted.append(a)
        else:
            m = 0.5 * (a + b)
            stack_a.append(a)
            stack_b.append(m)
            stack_a.append(m)
            stack_b.append(b)
    bp = np.sort(np.array(accepted))
    kk = np.array(kinks) if len(kinks) > 0 else np.empty(0)
    # Neighbouring min-width panels belong to one kink: keep one point per cluster.
    if kk.size > 1:
        kk = np.sort(kk)
        keep = [kk[0]]
        for k in kk[1:]:
            if k - keep[-1] > 1e-6 * max(1.0, abs(k)):
                keep.append(k)
        kk = np.array(keep)
    for s in seeds:
        kk = np.append(kk, s)
    return bp, np.sort(kk), bad


@njit(**JIT)
def _add_panel_nodes(a, b, mean, sd, xs, ws, n):
    """Append GL nodes of [mean + a, mean + b] (a, b offsets from the mean), split to width
    <= GAUSS_PANEL sd, with weights of N(x; mean, sd^2).  Offsets keep the weights exact
    when sd is tiny next to |mean|."""
    pieces = max(1, int(math.ceil((b - a) / (GAUSS_PANEL * sd))))
    h = (b - a) / pieces
    norm = _INV_SQRT_2PI / sd
    for p in range(pieces):
        lo = a + p * h
        for j in range(GL_ORDER):
            off = lo + 0.5 * h * (GL_X[j] + 1.0)
            z = off / sd
            xs[n] = mean + off
            ws[n] = 0.5 * h * GL_W[j] * norm * math.exp(-0.5 * z * z)
            n += 1
    return n


@njit(**JIT)
def gauss_rule(bp, mean, sd, xs, ws):
    """Nodes and weights of E[f(x)], x ~ N(mean, sd^2), over the partition bp.

    Fills ``xs``, ``ws`` and returns the node count.  ``bp`` must cover the window.
    """
    lo = -GAUSS_WINDOW * sd
    hi = GAUSS_WINDOW * sd
    k = np.searchsorted(bp, mean + lo, side="right")
    a = lo
    n = 0
    while a < hi:
        b = hi
        if k < bp.size and bp[k] - mean < hi:
            b = bp[k] - mean
        if b > a:
            n = _add_panel_nodes(a, b, mean, sd, xs, ws, n)
            a = b
        k += 1
    return n


@njit(**JIT)
def rule_capacity(bp):
    """Upper bound on the nodes of one gauss_rule call over ``bp`` (for preallocation)."""
    return (bp.size + int(2.0 * GAUSS_WINDOW / GAUSS_PANEL) + 4) * GL_ORDER


@njit(**JIT)
def outer_breakpoints(bp, kinks, lam, width, sd_outer):
    """Breakpoints of the outer rule of the bivariate integral.

    The outer integrand is phi(u) G(u) with G a smoothing of phi(lam u) of width ``width``
    (in u units); its features are those of phi (bp) and of phi(lam u) (bp / lam), and next to
    each kink k / lam a smoothed kink that needs panels graded down to ``width``.
    """
    extra = []
    if lam != 0.0:
        for b in bp:
            extra.append(b / lam)
        for k in kinks:
            c = k / lam
            g = max(width, 1e-13 * max(1.0, abs(c)))
            while g < GAUSS_PANEL * sd_outer:
                extra.append(c - g)
                extra.append(c + g)
                g *= 2.0
    out = np.concatenate((bp, np.array(extra))) if len(extra) > 0 else bp.copy()
    out = np.sort(out)
    lo = bp[0]
    hi = bp[-1]
    return out[(out >= lo) & (out <= hi)]


@njit(**JIT)
def univariate(phi, dphi, bp, q, xs, ws):
    """(E[phi^2], E[phi], E[phi'^2]) for u ~ N(0, q)."""
    n = gauss_rule(bp, 0.0, math.sqrt(q), xs, ws)
    s2 = 0.0
    s1 = 0.0
    d2 = 0.0
    for i in range(n):
        f = phi(xs[i])
        d = dphi(xs[i])
        s2 += ws[i] * f * f
        s1 += ws[i] * f
        d2 += ws[i] * d * d
    return s2, s1, d2


@njit(**JIT)
def bivariate(phi, dphi, bp, kinks, q1, q2, cos_t, sin_t):
    """(E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for Var u = q1, Var v = q2, corr = cos_t.

    v = lam u + sd z with lam = cos_t sqrt(q2 / q1), sd = sin_t sqrt(q2), z ~ N(0, 1)
    independent of u: the inner integral over v is a Gaussian integral centred at lam u.
    """
    s1 = math.sqrt(q1)
    lam = cos_t * math.sqrt(q2 / q1)
    sd = sin_t * math.sqrt(q2)
    if sin_t <= DEGENERATE_SIN:
        # |rho| = 1 to within 1e-20: v = lam u, a one-dimensional integral over u.
        obp = outer_breakpoints(bp, kinks, lam, 0.0, s1)
        cap = rule_capacity(obp)
        xs = np.empty(cap)
        ws = np.empty(cap)
        n = gauss_rule(obp, 0.0, s1, xs, ws)
        f = 0.0
        fd = 0.0
        for i in range(n):
            f += ws[i] * phi(xs[i]) * phi(lam * xs[i])
            fd += ws[i] * dphi(xs[i]) * dphi(lam * xs[i])
        return f, fd
    obp = outer_breakpoints(bp, kinks, lam, sd / max(abs(lam), 1e-300), s1)
    cap_o = rule_capacity(obp)
    xo = np.empty(cap_o)
    wo = np.empty(cap_o)
    no = gauss_rule(obp, 0.0, s1, xo, wo)
    cap_i = rule_capacity(bp)
    xi = np.empty(cap_i)
    wi = np.empty(cap_i)
    f = 0.0
    fd = 0.0
    for i in range(no):
        u = xo[i]
        pu = phi(u)
        du = dphi(u)
        if pu == 0.0 and du == 0.0:
            # Both outer factors vanish exactly (relu at u < 0; phi' of a saturating phi far
            # out, or a part not wanted): the inner integral cannot contribute.
            continue
        ni = gauss_rule(bp, lam * u, sd, xi, wi)
        g = 0.0
        gd = 0.0
        for j in range(ni):
            g += wi[j] * phi(xi[j])
            gd += wi[j] * dphi(xi[j])
        f += wo[i] * pu * g
        fd += wo[i] * du * gd
    return f, fd


@njit(**JIT_PARALLEL)
def univariate_many(phi, dphi, bp, qs):
    """univariate() at every variance of ``qs``; returns three arrays."""
    n = qs.size
    e2 = np.empty(n)
    e1 = np.empty(n)
    d2 = np.empty(n)
    cap = rule_capacity(bp)
    for k in prange(n):
        xs = np.empty(cap)
        ws = np.empty(cap)
        e2[k], e1[k], d2[k] = univariate(phi, dphi, bp, qs[k], xs, ws)
    return e2, e1, d2


@njit(**JIT_PARALLEL)
def bivariate_many(phi, dphi, bp, kinks, q1, q2, theta):
    """bivariate() at every point (q1[k], q2[k], cos theta[k]); returns two arrays."""
    n = q1.size
    f = np.empty(n)
    fd = np.empty(n)
    for k in prange(n):
        f[k], fd[k] = bivariate(
            phi, dphi, bp, kinks, q1[k], q2[k], math.cos(theta[k]), math.sin(theta[k])
        )
    return f, fd


# --- entire activations of exponential type (sin, cos, identity) ---------------------------
# For phi of exponential type tau, phi(sqrt(q) z) exp(-z^2/2) has a Fourier transform
# concentrated within tau sqrt(q) + O(1) of the origin, so the uniform trapezoid rule in z
# with step pi / (tau sqrt(q) + margin) is exact to exp(-margin^2 / 2).  It needs ~6 sqrt(q)
# nodes where panels would need ~30 sqrt(q) (phi oscillates everywhere, no panel is long).


@njit(**JIT)
def _trapezoid_step(scale):
    return min(TRAPEZOID_MAX_STEP, math.pi / (scale + TRAPEZOID_MARGIN))


@njit(**JIT)
def trapezoid_univariate(phi, dphi, q, tau):
    """univariate() for an entire phi of exponential type tau."""
    s = math.sqrt(q)
    h = _trapezoid_step(tau * s)
    m = int(GAUSS_WINDOW / h) + 1
    s2 = 0.0
    s1 = 0.0
    d2 = 0.0
    for i in range(-m, m + 1):
        z = i * h
        w = h * _INV_SQRT_2PI * math.exp(-0.5 * z * z)
        f = phi(s * z)
        d = dphi(s * z)
        s2 += w * f * f
        s1 += w * f
        d2 += w * d * d
    return s2, s1, d2


@njit(**JIT)
def trapezoid_bivariate(phi, dphi, q1, q2, cos_t, sin_t, tau):
    """bivariate() for an entire phi of exponential type tau."""
    s1 = math.sqrt(q1)
    s2 = math.sqrt(q2)
    # Outer integrand phi(s1 z) G(z): frequencies up to tau (s1 + |cos_t| s2).
    h1 = _trapezoid_step(tau * (s1 + abs(cos_t) * s2))
    h2 = _trapezoid_step(tau * s2 * sin_t)
    m1 = int(GAUSS_WINDOW / h1) + 1
    m2 = int(GAUSS_WINDOW / h2) + 1
    f = 0.0
    fd = 0.0
    for i in range(-m1, m1 + 1):
        z1 = i * h1
        w1 = h1 * _INV_SQRT_2PI * math.exp(-0.5 * z1 * z1)
        g = 0.0
        gd = 0.0
        for j in range(-m2, m2 + 1):
            z2 = j * h2
            w2 = h2 * _INV_SQRT_2PI * math.exp(-0.5 * z2 * z2)
            v = s2 * (cos_t * z1 + sin_t * z2)
            g += w2 * phi(v)
            gd += w2 * dphi(v)
        f += w1 * phi(s1 * z1) * g
        fd += w1 * dphi(s1 * z1) * gd
    return f, fd


@njit(**JIT_PARALLEL)
def trapezoid_univariate_many(phi, dphi, qs, tau):
    n = qs.size
    e2 = np.empty(n)
    e1 = np.empty(n)
    d2 = np.empty(n)
    for k in prange(n):
        e2[k], e1[k], d2[k] = trapezoid_univariate(phi, dphi, qs[k], tau)
    return e2, e1, d2


@njit(**JIT_PARALLEL)
def trapezoid_bivariate_many(phi, dphi, q1, q2, theta, tau):
    n = q1.size
    f = np.empty(n)
    fd = np.empty(n)
    for k in prange(n):
        f[k], fd[k] = trapezoid_bivariate(
            phi, dphi, q1[k], q2[k], math.cos(theta[k]), math.sin(theta[k]), tau
        )
    return f, fd


# --- unequal variances: one outer node set shared by every q1 ------------------------------
# F(q1, q2, theta) = E_z[phi(sqrt(q1) z) H(z)],  H(z) = E[phi(v)], v ~ N(cos(theta) sqrt(q2) z,
# q2 sin^2 theta).  H depends on (q2, theta) only, so on a node set in z that serves every q1
# one (q2, theta) costs one pass of inner integrals and each q1 a dot product.


@njit(**JIT)
def graded_z_rule(floor):
    """Universal outer nodes/weights in z (weights include the standard normal density),
    graded towards 0 down to ``floor`` (see config: UNIVERSAL_*).  The rule is exactly
    symmetric, node for node: xs[n - 1 - i] = -xs[i], ws[n - 1 - i] = ws[i]."""
    edges = [0.0]
    z = GAUSS_WINDOW
    while z > max(UNIVERSAL_FINE, floor):
        edges.append(z)
        z *= UNIVERSAL_RATIO
    while z > floor:
        edges.append(z)
        z *= UNIVERSAL_RATIO_FINE
    e = np.sort(np.array(edges))
    half = (e.size - 1) * GL_ORDER
    xs = np.empty(2 * half)
    ws = np.empty(2 * half)
    k = half
    for p in range(e.size - 1):
        a = e[p]
        b = e[p + 1]
        for j in range(GL_ORDER):
            x = 0.5 * (a + b) + 0.5 * (b - a) * GL_X[j]
            w = 0.5 * (b - a) * GL_W[j] * _INV_SQRT_2PI * math.exp(-0.5 * x * x)
            xs[k] = x
            ws[k] = w
            xs[2 * half - 1 - k] = -x
            ws[2 * half - 1 - k] = w
            k += 1
    return xs, ws


@njit(**JIT)
def trapezoid_z_rule(scale):
    """Universal outer nodes for an entire phi: uniform, resolving frequencies up to scale."""
    h = _trapezoid_step(scale)
    m = int(GAUSS_WINDOW / h) + 1
    xs = np.empty(2 * m + 1)
    ws = np.empty(2 * m + 1)
    for i in range(-m, m + 1):
        z = i * h
        xs[i + m] = z
        ws[i + m] = h * _INV_SQRT_2PI * math.exp(-0.5 * z * z)
    return xs, ws


@njit(**JIT_PARALLEL)
def inner_smoothings(phi, dphi, want_f, want_d, bp, tau, q2, cos_t, sin_t, zs, sym_f, sym_d):
    """H(z) and H'(z) (with phi') for every (q2[k], theta[k]) and node z: arrays (n, nz);
    a part not wanted (``want_f``, ``want_d``) is not evaluated and left at 0.  (Flags, not
    a zero function in place of phi or phi': one compilation per activation.)

    ``tau >= 0`` selects the trapezoid rule (entire phi of exponential type tau), else the
    partition ``bp``.  ``sym_f``, ``sym_d``: the parity of phi and of dphi (+1 even, -1 odd
    about the value at 0, 0 neither; ignored for a part not wanted); when the wanted parts
    have one and the nodes ``zs`` are symmetric (zs[nz - 1 - i] = -zs[i]), only z >= 0 is
    integrated: H(-z) = H(z) for an even phi, 2 phi(0) - H(z) for a phi odd about phi(0).
    """
    n = q2.size
    nz = zs.size
    h = np.empty((n, nz))
    hd = np.empty((n, nz))
    cap = rule_capacity(bp)
    sym = (sym_f != 0 or not want_f) and (sym_d != 0 or not want_d)
    start = nz // 2 if sym else 0
    c_f = 2.0 * phi(0.0) if want_f else 0.0
    c_d = 2.0 * dphi(0.0) if want_d else 0.0
    for k in prange(n):
        xs = np.empty(cap)
        ws = np.empty(cap)
        s2 = math.sqrt(q2[k])
        sd = sin_t[k] * s2
        step = _trapezoid_step(tau * sd) if tau >= 0.0 else 0.0
        m2 = int(GAUSS_WINDOW / step) + 1 if tau >= 0.0 else 0
        for i in range(start, nz):
            mean = cos_t[k] * s2 * zs[i]
            g = 0.0
            gd = 0.0
            if sin_t[k] <= DEGENERATE_SIN:
                if want_f:
                    g = phi(mean)
                if want_d:
                    gd = dphi(mean)
            elif tau >= 0.0:
                for j in range(-m2, m2 + 1):
                    z2 = j * step
                    w = step * _INV_SQRT_2PI * math.exp(-0.5 * z2 * z2)
                    if want_f:
                        g += w * phi(mean + sd * z2)
                    if want_d:
                        gd += w * dphi(mean + sd * z2)
            else:
                nn = gauss_rule(bp, mean, sd, xs, ws)
                for j in range(nn):
                    if want_f:
                        g += ws[j] * phi(xs[j])
                    if want_d:
                        gd += ws[j] * dphi(xs[j])
            h[k, i] = g
            hd[k, i] = gd
            m = nz - 1 - i
            if sym and m != i:
                h[k, m] = g if sym_f > 0 else c_f - g
                hd[k, m] = gd if sym_d > 0 else c_d - gd
    return h, hd


@njit(**JIT_PARALLEL)
def outer_values(phi, dphi, q1, zs):
    """phi(sqrt(q1[i]) z_j) and phi'(...) as (n1, nz) arrays."""
    n1 = q1.size
    nz = zs.size
    p = np.empty((n1, nz))
    pd = np.empty((n1, nz))
    for i in prange(n1):
        s = math.sqrt(q1[i])
        for j in range(nz):
            p[i, j] = phi(s * zs[j])
            pd[i, j] = dphi(s * zs[j])
    return p, pd
