"""F_phi tables against independent truth: closed forms, a slow scipy integrator, Monte Carlo
and Price's theorem (issue #2)."""

import math

import numpy as np
import pytest

from nngp_lut import get_activation
from nngp_lut import tables
from nngp_lut.tables import Integrator, open_table, random_points

from .conftest import SMALL_GRID, TOL_DF_EQUAL, TOL_DF_UNEQUAL, TOL_EQUAL, TOL_UNEQUAL
from .naive import closed_form, closed_form_dot, reference_F, reference_moment, scalar

CLOSED = ["relu", "abs", "step", "identity", "erf", "sin", "cos"]
#: tanh and gelu tables serve other tests too; the other five (slow: run with --runslow)
#: are built for the checks of the general activations only.
GENERAL = ["tanh", "gelu"] + [pytest.param(name, marks=pytest.mark.slow)
                              for name in ("sigmoid", "softplus", "silu", "elu", "selu")]


def _normalised_error(table, q1, q2, rho, exact):
    norm = np.sqrt(table.second_moment(q1) * table.second_moment(q2))
    return np.max(np.abs(table.F(q1, q2, rho) - exact) / norm)


@pytest.mark.parametrize("name", CLOSED)
def test_closed_forms_equal_variances(name, table_of):
    table = table_of(name)
    q, theta = random_points(table, 4000, seed=7)
    rho = np.cos(theta)
    assert _normalised_error(table, q, q, rho, closed_form(name, q, q, rho)) <= TOL_EQUAL


@pytest.mark.parametrize("name", ["erf", "sin", "cos"])
def test_closed_forms_unequal_variances(name, table_of):
    table = table_of(name)
    q1, theta = random_points(table, 4000, seed=8)
    q2, _ = random_points(table, 4000, seed=9)
    top = table.unequal_variance_max  # 1e4 for erf, 25 for sin and cos
    q1, q2 = np.minimum(q1, top), np.minimum(q2, top)
    rho = np.cos(theta)
    assert _normalised_error(table, q1, q2, rho, closed_form(name, q1, q2, rho)) <= TOL_UNEQUAL


def test_unequal_domain_of_sin_is_enforced(table_of):
    from nngp_lut.tables import DomainError

    table = table_of("sin")
    table.F(100.0, 100.0, 0.5)  # equal variances: served up to 1e4
    with pytest.raises(DomainError, match="standardise"):
        table.F(100.0, 90.0, 0.5)


@pytest.mark.parametrize("name", ["relu", "abs", "step", "identity"])
def test_homogeneous_unequal_variances(name, table_of, rng):
    table = table_of(name)
    q1 = np.exp(rng.uniform(np.log(1e-6), np.log(1e4), 2000))
    q2 = np.exp(rng.uniform(np.log(1e-6), np.log(1e4), 2000))
    rho = rng.uniform(-1, 1, 2000)
    assert _normalised_error(table, q1, q2, rho, closed_form(name, q1, q2, rho)) <= TOL_EQUAL


def test_leaky_relu_closed_form(table_of, rng):
    a = 0.2
    table = table_of(f"leaky_relu(slope={a})")
    q1 = np.exp(rng.uniform(-5, 5, 500))
    q2 = np.exp(rng.uniform(-5, 5, 500))
    rho = rng.uniform(-1, 1, 500)
    # leaky = a x + (1 - a) relu(x) and E[u relu(v)] = rho sqrt(q1 q2) / 2.
    exact = a * rho * np.sqrt(q1 * q2) + (1 - a) ** 2 * closed_form("relu", q1, q2, rho)
    assert _normalised_error(table, q1, q2, rho, exact) <= TOL_EQUAL


@pytest.mark.parametrize("name", GENERAL)
def test_general_builtins_against_slow_reference(name, table_of):
    table = table_of(name)
    q, theta = random_points(table, 5, seed=11)
    q = np.minimum(q, 50.0)  # keeps the nested scipy quadrature to seconds
    theta[0] = 1e-4
    rho = np.cos(theta)
    act = get_activation(name)
    phi = scalar(name)
    exact = np.array([reference_F(phi, qi, qi, ri, kinks=act.kinks or (0.0,))
                      for qi, ri in zip(q, rho)])
    assert _normalised_error(table, q, q, rho, exact) <= TOL_EQUAL
    q2 = np.clip(q[::-1] * np.array([3.1, 0.02, 1.0, 40.0, 0.3]), 1e-4, 50.0)
    exact = np.array([reference_F(phi, a, b, r, kinks=act.kinks or (0.0,))
                      for a, b, r in zip(q, q2, rho)])
    assert _normalised_error(table, q, q2, rho, exact) <= TOL_UNEQUAL


@pytest.mark.parametrize("name", ["tanh", "gelu", pytest.param("elu", marks=pytest.mark.slow)])
def test_moments_against_slow_reference(name, table_of):
    table = table_of(name)
    phi = scalar(name)
    for q in (3.7e-5, 0.42, 17.3, 900.0):
        d = reference_moment(phi, q, 2)
        assert abs(table.second_moment(np.array([q]))[0] - d) <= TOL_EQUAL * d
        m = reference_moment(phi, q, 1)
        assert abs(table.mean(np.array([q]))[0] - m) <= TOL_EQUAL * math.sqrt(d)


def test_expression_against_monte_carlo(table_of):
    table = table_of("x*tanh(x)", variance_min=1e-2, variance_max=1e2, n_variance=40,
                     n_angle=48, n_unequal=24, n_unequal_angle=32)
    rng = np.random.default_rng(3)
    n = 2_000_000
    for q, rho in ((0.7, 0.3), (5.0, -0.8), (20.0, 0.95)):
        z1, z2 = rng.standard_normal((2, n))
        u = math.sqrt(q) * z1
        v = math.sqrt(q) * (rho * z1 + math.sqrt(1 - rho**2) * z2)
        prod = u * np.tanh(u) * v * np.tanh(v)
        se = prod.std() / math.sqrt(n)
        assert abs(table.F(q, q, rho) - prod.mean()) <= 5 * se


@pytest.mark.parametrize("name", ["tanh", "erf", "gelu", "relu",
                                  pytest.param("softplus", marks=pytest.mark.slow)])
def test_derivative_table_is_dF_drho(name, table_of, rng):
    """Price's theorem: dF(q, q, rho)/d rho = q E[phi'(u) phi'(v)]."""
    table = table_of(name)
    q = np.exp(rng.uniform(np.log(1e-2), np.log(1e2), 40))
    rho = rng.uniform(-0.9, 0.9, 40)
    h = 1e-4
    fd = (table.F(q, q, rho + h) - table.F(q, q, rho - h)) / (2 * h)
    assert np.max(np.abs(fd - q * table.dF(q, q, rho)) / (q * table.derivative_second_moment(q))) < 1e-5


def _derivative_points(table, n, seed):
    """Random off-grid (q1, q2, rho) over the whole domain (q2 capped at the unequal one),
    half of the angles within 1e-6..1 of rho = +-1, and the normalisation of dF there."""
    q1, theta = random_points(table, n, seed)
    q2 = np.minimum(random_points(table, n, seed + 1)[0], table.unequal_variance_max)
    return q1, np.minimum(q1, table.unequal_variance_max), q2, theta


def _derivative_errors(table, exact_dot, n=300, seed=120):
    """(equal, unequal) max |dF_table - dF_exact| / sqrt(E[phi'^2](q1) E[phi'^2](q2))."""
    q, qa, qb, theta = _derivative_points(table, n, seed)
    rho = np.cos(theta)
    eq = np.abs(table.dF(q, q, rho) - exact_dot(q, q, theta)) \
        / table.derivative_second_moment(q)
    norm = np.sqrt(table.derivative_second_moment(qa) * table.derivative_second_moment(qb))
    uneq = np.abs(table.dF(qa, qb, rho) - exact_dot(qa, qb, theta)) / norm
    return eq.max(), uneq.max()


@pytest.mark.parametrize("name", ["erf", "sin", "cos"])
def test_derivative_table_closed_forms(name, table_of):
    """E[phi'(u) phi'(v)] against its closed form (erf: DESIGN.md section 6; sin' = cos and
    cos' = -sin: the cos and sin kernels) over the whole domain, both tables."""
    table = table_of(name)
    eq, uneq = _derivative_errors(
        table, lambda a, b, th: closed_form_dot(name, a, b, np.cos(th)), n=1000)
    assert eq <= TOL_DF_EQUAL
    assert uneq <= TOL_DF_UNEQUAL


@pytest.mark.parametrize("name", ["tanh", "gelu"])
def test_derivative_table_against_quadrature(name, table_of):
    """The derivative tables against direct quadrature (tested against scipy and Monte Carlo
    above) at random off-grid points, near rho = +-1 and large variances included."""
    table = table_of(name)
    integ = Integrator(name, table.variance_max)
    eq, uneq = _derivative_errors(table, lambda a, b, th: integ.bivariate(a, b, th, "dF")[1])
    assert eq <= TOL_DF_EQUAL
    assert uneq <= TOL_DF_UNEQUAL


def test_one_part_quadrature_matches_both():
    integ = Integrator("tanh", 100.0)
    q1, q2, theta = np.array([0.3, 40.0]), np.array([2.0, 40.0]), np.array([0.2, 3.1])
    f, fd = integ.bivariate(q1, q2, theta)
    f1, z1 = integ.bivariate(q1, q2, theta, "F")
    z2, fd2 = integ.bivariate(q1, q2, theta, "dF")
    np.testing.assert_array_equal(f1, f)
    np.testing.assert_array_equal(fd2, fd)
    assert not np.any(z1) and not np.any(z2)


def test_derivative_axes_follow_the_F_axes(table_of):
    """A derivative axis not given scales with its F axis (default ratio; an angle axis
    never below F's); given, it is used; all are recorded; the dF datasets and their own
    variance axes (format version 2) take their shapes from them."""
    grid = table_of("tanh", **SMALL_GRID).metadata["grid"]
    assert grid["n_angle_derivative"] > grid["n_angle"] == SMALL_GRID["n_angle"]
    assert grid["n_unequal_angle_derivative"] > grid["n_unequal_angle"]
    d = tables.DEFAULT_GRID
    assert grid["n_variance_derivative"] == round(
        SMALL_GRID["n_variance"] * d["n_variance_derivative"] / d["n_variance"])
    assert grid["n_unequal_derivative"] == round(
        SMALL_GRID["n_unequal"] * d["n_unequal_derivative"] / d["n_unequal"])
    t = table_of("tanh", **dict(SMALL_GRID, n_angle_derivative=48, n_unequal_angle_derivative=40,
                                n_variance_derivative=30, n_unequal_derivative=20))
    assert t.df_normalized.shape == (30, 48) and t.unequal_df_normalized.shape == (20, 20, 40)
    assert t.derivative_log_variance.shape == (30,) and t.unequal_derivative_axis.shape == (20,)
    np.testing.assert_allclose(t.derivative_log_variance[[0, -1]], np.log([1e-4, 1e2]))
    assert t.metadata["grid"]["n_unequal_angle_derivative"] == 40


def test_parity_of_the_builtins():
    """The parity test that halves the inner integrals finds the true parity: odd about
    phi(0) (tanh, erf, sigmoid - 1/2, sin), even (cos, x tanh x, and the derivatives of the
    odd ones), or none (elu); gelu' = Phi(x) + x phi(x) and softplus' = sigmoid are odd
    about 1/2 although gelu and softplus have no parity."""
    truth = {"tanh": (-1, 1), "erf": (-1, 1), "sigmoid": (-1, 1), "sin": (-1, 1),
             "cos": (1, -1), "x*tanh(x)": (1, -1), "gelu": (0, -1), "softplus": (0, -1),
             "elu": (0, 0), "x + tanh(x - 0.001)": (0, 0)}
    for name, (p, pd) in truth.items():
        integ = Integrator(name, 100.0)
        assert (integ.parity["F"], integ.parity["dF"]) == (p, pd), name


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "elu"])
def test_builder_nodes_against_direct_quadrature(name):
    """The builder's scheme (universal z rule, parity, one dot product per q1) at the grid
    nodes themselves, equal and unequal variances, against the adaptive direct quadrature
    (tested against scipy above): no interpolation, so only the rules differ."""
    integ = Integrator(name, 1e4)
    q = np.array([1e-6, 3e-3, 0.7, 40.0, 1e4])
    axes = tables._Axes(q, 9, 0.3, q[::-1].copy(), 7, 1.0, 0.0)
    assert not axes.diagonal  # the equal-variance table takes its own pass
    f_n, df_n, f3, df3 = tables._general_tables(integ, "both", axes,
                                                tables._Progress(None, 0))
    e2, _, d2 = integ.moments(q)
    qq = np.repeat(q, 9)
    f, fd = integ.bivariate(qq, qq, axes.theta.ravel())
    # normalised as the tables store them: |F| <= E[phi^2] (Cauchy-Schwarz)
    assert np.max(np.abs(f_n.ravel() - f / np.repeat(e2, 9))) <= 1e-13
    assert np.max(np.abs(df_n.ravel() - fd / np.repeat(d2, 9))) <= 1e-13
    i, j, k = np.meshgrid(range(5), range(5), range(7), indexing="ij")
    q1, q2, th = axes.q3[i], axes.q3[j], axes.theta3[j, k]
    f, fd = integ.bivariate(q1.ravel(), q2.ravel(), th.ravel())
    e23, _, d23 = integ.moments(axes.q3)
    norm = np.sqrt(e23[i] * e23[j]).ravel()
    dnorm = np.sqrt(d23[i] * d23[j]).ravel()
    assert np.max(np.abs(f3.ravel() - f / norm)) <= 1e-13
    assert np.max(np.abs(df3.ravel() - fd / dnorm)) <= 1e-13


def test_derivative_on_the_F_grid_still_reads(table_of, tmp_path):
    """Tables written before issue #12 had the dF datasets on F's angle axes: a file with that
    layout loads and evaluates like the denser table, to its coarser grid's accuracy (the
    committed version-1 files: tests/test_format_v1_files.py)."""
    old = table_of("tanh", **dict(SMALL_GRID, n_angle_derivative=SMALL_GRID["n_angle"],
                                  n_unequal_angle_derivative=SMALL_GRID["n_unequal_angle"],
                                  n_variance_derivative=SMALL_GRID["n_variance"],
                                  n_unequal_derivative=SMALL_GRID["n_unequal"]))
    new = table_of("tanh", **SMALL_GRID)
    back = open_table(old.save(tmp_path / "old.h5"))
    assert back.df_normalized.shape == back.f_normalized.shape
    q1, q2 = np.array([0.5, 7.0, 7.0]), np.array([0.5, 7.0, 2.0])
    rho = np.array([0.3, -0.9, 0.6])
    norm = np.sqrt(new.derivative_second_moment(q1) * new.derivative_second_moment(q2))
    assert np.max(np.abs(back.dF(q1, q2, rho) - new.dF(q1, q2, rho)) / norm) < 1e-4


def test_derivative_second_moment_reference(table_of):
    table = table_of("tanh")
    for q in (0.01, 1.3, 250.0):
        ref = reference_moment(lambda x: 1 - math.tanh(x) ** 2, q, 2)
        assert abs(table.derivative_second_moment(np.array([q]))[0] - ref) <= TOL_EQUAL * ref


def test_step_has_no_derivative(table_of):
    table = table_of("step")
    assert not table.has_derivative
    with pytest.raises(ValueError, match="no derivative"):
        table.dF(1.0, 1.0, 0.5)


def test_endpoints_are_exact(table_of):
    table = table_of("tanh")
    q = np.array([1e-6, 0.3, 1e4])
    d = table.second_moment(q)
    np.testing.assert_allclose(table.F(q, q, np.ones(3)), d, rtol=1e-12)
    # tanh is odd: F(q, q, -1) = -E[tanh^2].
    np.testing.assert_allclose(table.F(q, q, -np.ones(3)), -d, rtol=1e-12)


def test_domain_error_names_the_fix(table_of):
    from nngp_lut.tables import DomainError

    table = table_of("tanh")
    with pytest.raises(DomainError, match="--variance-max"):
        table.F(2e4, 2e4, 0.5)
