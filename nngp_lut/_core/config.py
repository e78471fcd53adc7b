"""Numba flags and numerical constants, defined once for the whole package."""

import numpy as np

#: Flags of every ``@njit`` kernel: compiled code is cached on disk so that nobody pays the
#: compile time twice; ``fastmath`` stays off because the tables promise 1e-7.
JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")
#: Flags of the kernels that run a ``prange`` loop over independent work items.
JIT_PARALLEL = dict(JIT, parallel=True)
#: Iterations per work unit of the table builder's ``prange`` loops, handed out dynamically
#: (``numba.set_parallel_chunksize``): the default splits a loop into one static block per
#: thread, which leaves a core idle when the costs of the items vary (tenfold over q and
#: theta) or when another process holds a core for a while.
PRANGE_CHUNK = 4

# --- Gaussian quadrature (nngp_lut/_core/quadrature.py) ------------------------------------
#: Gauss-Legendre nodes per panel.
GL_ORDER = 16
#: A Gaussian integral runs over mean +- GAUSS_WINDOW standard deviations; the mass outside
#: is 2 * Phi(-9) = 2.3e-19.
GAUSS_WINDOW = 9.0
#: Widest panel, in standard deviations of the Gaussian weight.  GL-16 integrates
#: exp(-x^2/2) times a polynomial of degree <= 15 over 3 sd to ~1e-15 (measured).
GAUSS_PANEL = 3.0
#: A panel of the activation's partition is accepted when the degree-15 interpolant through
#: its Gauss-Legendre nodes reproduces phi (and phi') at test points to this relative
#: tolerance (relative to max(1, max |phi| on the panel)).
PARTITION_TOL = 1e-13
#: The same for phi', looser: a numerical phi' (expressions) carries ~1e-12 of rounding noise,
#: and the derivative table is used for the NTK, not for the 1e-7 kernel.
PARTITION_TOL_DERIVATIVE = 1e-9
#: Panels narrower than this (relative to max(1, |u|)) are accepted without a test: this is
#: where a kink or a jump of phi at an unknown place ends the bisection.
PARTITION_MIN_WIDTH = 1e-11


def gauss_legendre(order):
    """Nodes on [-1, 1], weights and barycentric weights of the Gauss-Legendre rule."""
    x, w = np.polynomial.legendre.leggauss(order)
    # Barycentric weights of Legendre points (Wang & Xiang, SIAM J. Sci. Comput. 2012).
    bary = (-1.0) ** np.arange(order) * np.sqrt((1.0 - x * x) * w)
    return x, w, bary


GL_X, GL_W, GL_BARY = gauss_legendre(GL_ORDER)
#: Widest panel of the partition: max(1, |u|) times this.  A sampling test cannot see a
#: feature of width ~1 between nodes 100 apart; this grading keeps node spacing below ~0.1
#: near the origin and growing geometrically away from it.
PARTITION_MAX_WIDTH = 2.0
#: Below this sin(theta) the bivariate Gaussian is treated as degenerate (|rho| = 1): the
#: smoothing it drops is O(sin^2 theta) for smooth phi and O(sin theta) at a kink.
DEGENERATE_SIN = 1e-10
#: Points, on [-1, 1], where the partition test compares phi with its interpolant.
PARTITION_TEST_POINTS = np.array([-0.8833, -0.4127, 0.0571, 0.5189, 0.9277])

# --- trapezoid rule for entire activations of exponential type ----------------------------
#: Largest trapezoid step in standard-normal units; for a Gaussian times a polynomial the
#: aliasing error at h is ~exp(-2 pi^2 / h^2) (1e-38 at 0.45).
TRAPEZOID_MAX_STEP = 0.45
#: Spectral margin: the step is pi / (tau * scale + TRAPEZOID_MARGIN), which leaves an
#: aliasing error ~exp(-TRAPEZOID_MARGIN^2 / 2) (1e-17 at 9).
TRAPEZOID_MARGIN = 9.0

#: Step of the central difference that gives phi' of expressions and callables.
NUMERICAL_DERIVATIVE_STEP = 1e-3

# --- tables (nngp_lut/_core/interp.py, nngp_lut/tables.py) --------------------------------
#: Nodes of the Lagrange stencil along each axis (6 = quintic).
INTERP_POINTS = 6
#: kappa = WARP_SCALE * sqrt(q) in the angle warp (boundary layers of width 1/sqrt(q)).
WARP_SCALE = 1.0

# --- unequal variances (3-D table) -------------------------------------------------------
#: The outer integral over z = u / sqrt(q1) uses one node set for every q1: Gauss-Legendre
#: panels graded geometrically towards z = 0 (where phi(sqrt(q1) z) has its features for
#: large q1, and the smoothed kinks of the inner integral sit): ratio UNIVERSAL_RATIO from
#: GAUSS_WINDOW down to UNIVERSAL_FINE, then UNIVERSAL_RATIO_FINE down to UNIVERSAL_FLOOR.
#: A singularity of the integrand at distance d from 0 (a pole of tanh(sqrt(q1) z), a
#: smoothed kink) is, from the panel [r a, a], about 2 r / (1 - r) half-widths away: at
#: r = 0.35 GL-16 still converges like 2.6^-32 ~ 1e-13 of the panel's share.  Measured
#: against direct quadrature (tanh, erf, sigmoid, gelu, softplus, elu, selu; 300 random
#: points over 1e-6..1e4 with half the angles within 1e-6 of 0): the ratio 0.35 leaves
#: <= 4e-15 where the ratio 0.7 of format version 1 used 2.4 times the nodes.
UNIVERSAL_RATIO = 0.35
UNIVERSAL_FINE = 1e-3
#: Below UNIVERSAL_FINE only an activation with kinks needs nodes: the smoothed kinks of its
#: inner integral get as narrow as sin(theta).  0.15 left <= 3e-15 for elu and selu (0.25
#: in version 1: 1.2 times the nodes).
UNIVERSAL_RATIO_FINE = 0.15
UNIVERSAL_FLOOR = 1e-13
#: An activation without kinks is analytic near the real axis: phi(sqrt(q1) z) and H(z) have
#: features no narrower than ~1 / sqrt(q_max) in z (tanh's poles at i pi / (2 sqrt(q))), so
#: its grading stops at min(UNIVERSAL_FINE, UNIVERSAL_SMOOTH_FLOOR / sqrt(q_max)): 288 nodes
#: in all at q_max = 1e4 instead of 1376, measured <= 4e-15 (the list above).
UNIVERSAL_SMOOTH_FLOOR = 0.1
#: An activation is taken as even (phi(-x) = phi(x)) or odd about phi(0) (phi(-x) + phi(x) =
#: 2 phi(0): tanh, erf, sigmoid, sin) when that holds at the Gauss-Legendre nodes of every
#: panel of its partition and of the partition's mirror image, to this tolerance relative to
#: max(1, |phi|).  Both phi and its mirror are polynomials to 1e-13 on those panels, so the
#: check covers the whole window; the inner integrals H(z) then have the same parity in z
#: and only z > 0 is integrated.  A violation at the tolerance moves H by as much (<< 1e-7).
PARITY_TOL = 1e-12
#: Weight of the linear part of the angle warp of the F tables (0: pure asinh warp).
WARP_LINEAR = 0.3
#: The same for the derivative tables (format version 2; version 1 used WARP_LINEAR).
#: E[phi'(u) phi'(v)] / E[phi'^2] has boundary layers of height O(1) at rho = +-1 that the
#: pure warp resolves with fewer nodes: on erf's closed form (20000 random points),
#: 128 x 208 nodes leave 6.4e-8 (equal variances) and 128 x 128 x 208 1.7e-7 (unequal)
#: with the pure warp; with WARP_LINEAR, 144 x 288 nodes left 4.1e-8 and
#: 120 x 120 x 160 4.9e-7.
DERIVATIVE_WARP_LINEAR = 0.0

# --- the fused engine (nngp_lut/_core/engine.py) ------------------------------------------
#: A correlation K / sqrt(q1 q2) within this of +-1 is +-1: what remains is the rounding of K
#: and q computed by different sums (x with itself, x' = c x), ~1e-16 per layer, which
#: relu's Fdot = (pi - arccos rho) / (2 pi) would turn into 2e-9 (theta ~ sqrt(2 (1 - rho))).
#: Snapping a true correlation this close to 1 moves relu's Fdot by at most 1.4e-8 (and F
#: by far less): below what the inputs' own rounding can resolve.
RHO_SNAP = 4e-15
#: Per-layer 1-D slices of the normalised F on a uniform grid in
#: y = sqrt((1 + rho)/2) - sqrt((1 - rho)/2), interpolated by 4-point (cubic) Lagrange
#: stored as per-interval Horner coefficients.  4096 intervals (h = 4.9e-4) add well under
#: 1e-9 for the slices of every built-in at moderate variance (tests/test_kernel.py compares
#: the fused kernel with the layerwise one that reads the 2-D table directly).
SLICE_INTERVALS = 4096
#: Largest layer variance at which the NTK of a non-homogeneous activation takes the slices:
#: E[phi'(u) phi'(v)] has a boundary layer of width ~1/sqrt(q) at rho = +-1 that 4096 cubic
#: intervals in y resolve to 2.6e-8 at q = 300, 3.2e-7 at 1e3, 2.7e-5 at 1e4 (erf, measured;
#: F's slices: <= 2.3e-9 up to 1e3, 6.3e-8 at 1e4).  Above it the NTK interpolates the
#: table (warped angle axis) directly.
SLICE_VARIANCE_MAX_NTK = 300.0
#: Inputs whose variances at a layer agree to this relative tolerance share that layer's
#: slice (it moves the slice's variance by <= 1e-10 relative: far below the table's error).
SHARED_VARIANCE_RTOL = 1e-10
#: A program of vectors whose per-input vectors all agree to COMPOSITE_RTOL (inputs of one
#: norm: per-input standardisation makes them agree to rounding) is one function of the
#: input Gram entry, tabulated per output layer like a slice (``Program.composite``), if its
#: cubic cells reproduce the program at every cell's midpoint to COMPOSITE_TOL relative to
#: the largest value (else the program runs as it is).  Measured at the midpoints (the largest
#: error of an end cell's one-sided cubic is ~7% above its midpoint's): relu NNGP <= 4e-13
#: and NTK 8e-13 (depth 3) to 4e-11 (depth 20), at rho -> 1; erf, tanh, gelu <= 1e-10 at
#: moderate variance; erf at weight_var 100 1.6e-6 (its NTK's boundary layer: refused).
#: Well under the slices' own error (SLICE_INTERVALS).
COMPOSITE_RTOL = 1e-12
COMPOSITE_TOL = 1e-10
#: Rows of a tile of the fused engine (for vectors the Gram panel X1[rows] X2^T is one BLAS
#: call).
KERNEL_TILE_ROWS = 2048
#: Rows per BLAS call on the diagonal block of a symmetric panel: its lower triangle is made
#: in strips of this height, so only ~1/16 of the block's upper triangle is computed.
GRAM_DIAG_ROWS = 256
#: Pairs of a row that go through the layers together in the fused engine when a pair's map
#: is one entry (vectors; the engine's buffers of this length stay in L2).  Measured on relu
#: and tanh depth 3, one thread: 256 is 8% slower (the per-block dispatch), 1024 no faster.
COLUMN_RUN = 512

# --- Gaussian expectations by randomised QMC (nngp_lut/expectation.py, _core/sov.py) ------
#: Independent randomisations (scramblings) of the Sobol' points; the spread of their R
#: estimates is the error estimate.
EXPECTATION_RANDOMIZATIONS = 16
#: The returned error is the two-sided Student-t quantile of this level (R - 1 degrees of
#: freedom) times the standard error over the randomisations: 2.95 SE at R = 16.  Nominal
#: 99 %, not 95 %, because the doubling loop stops at the first estimate below tol, which
#: favours estimates whose spread came out small.
EXPECTATION_COVERAGE = 0.99
#: Points per randomisation of the first round (2^10); each further round doubles them.
EXPECTATION_MIN_POINTS = 2 ** 10
#: Default budget: points per randomisation at which the doubling stops (2^20, so
#: 16 * 2^20 = 1.7e7 evaluations per covariance), tolerance reached or not.
EXPECTATION_MAX_POINTS = 2 ** 20
#: The points handed to the integrand in one call take at most this many bytes (its own
#: temporaries come on top, a few times this for a product of nonlinearities).
EXPECTATION_CHUNK_BYTES = 2 ** 25
#: Uniforms are clipped to [EXPECTATION_CLIP, 1 - EXPECTATION_CLIP] before ndtri: the
#: largest normal is 8.1 sd, whose tail mass (2e-16) is below any tolerance.
EXPECTATION_CLIP = 2.0 ** -53
#: A covariance is positive semidefinite when its smallest eigenvalue is above
#: -PSD_RTOL * its largest (rounding of a product of float64 matrices is ~d * 1e-16).
PSD_RTOL = 1e-10
#: ... and symmetric when |cov - cov.T| <= SYMMETRY_RTOL * max |cov| entrywise.
SYMMETRY_RTOL = 1e-10
#: In the separation of variables (Genz 1992), a conditional variance below this times the
#: largest variance is zero: the variable is a linear function of the previous ones.
SOV_SINGULAR_RTOL = 1e-12

# --- gated recurrent cells (nngp_lut/_core/gated.py) ----------------------------------------
#: A slot whose conditional variance is below this times its variance is a linear function
#: of the earlier slots (the second chain of a pair (x, x)): its pivot is zero.
GATED_PIVOT_RTOL = 1e-12
#: Default tolerance of a GRU's or LSTM's kernel: the largest error (the 99 % interval over
#: the randomisations) of any entry of a pair's (T, T') map.  The error falls as
#: 1/sqrt(particles) (measured: the nested covariances make the integrand rough for QMC),
#: so 1e-3 costs ~100 x the particles of 1e-2.
GATED_TOL = 1e-2
#: Particles per randomisation of the first round, and the default budget (the doubling
#: stops there, tolerance reached or not, with a ToleranceWarning).
GATED_MIN_POINTS = 2 ** 7
GATED_MAX_POINTS = 2 ** 12
#: Bound on the particles' normals of one GRU or LSTM call (all randomisations): a larger
#: max_points is capped to it (2 GB: 2^16 particles of 8 LSTM steps, 2^14 of 28).
GATED_MAX_BYTES = 2 ** 31

# --- batch normalisation (nngp_lut/kernel/batchnorm.py) --------------------------------------
#: Absolute tolerance of the 1-D integral of the identity and relu kernels after BN.
BATCHNORM_QUAD_TOL = 1e-10
#: Default tolerance of the randomised QMC for other activations after BN.
BATCHNORM_TOL = 1e-3
#: BatchNorm with a reference set: directions of the reference's pre-activations (and of
#: their centred covariance) below this times the largest eigenvalue are null.
REFERENCE_RANK_RTOL = 1e-12

# --- softmax attention at 1/sqrt(n) scaling (nngp_lut/kernel/attention.py) ---------------------
#: Default tolerance of a SelfAttention(scaling="1/sqrt(n)") kernel: the largest error (the
#: 99 % interval over the randomisations) of any entry of a pair's (T, T') map, in units of
#: the kernel after the layer.
ATTENTION_TOL = 1e-3
#: Points per randomisation of the first round, and the default budget (the doubling stops
#: there, tolerance reached or not, with a ToleranceWarning).
ATTENTION_MIN_POINTS = 2 ** 8
ATTENTION_MAX_POINTS = 2 ** 14
#: Seed of the scrambled Sobol' points of every attention expectation: the kernel is a
#: deterministic function of its inputs.
ATTENTION_SEED = 0
