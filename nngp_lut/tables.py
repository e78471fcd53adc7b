"""Build, save, open and evaluate F_phi tables (HDF5 format version 1).

The only activation-dependent part of the NNGP recursion (Lee et al., ICLR 2018, Section
2.5) is the bivariate Gaussian expectation

    F_phi(q1, q2, rho) = E[phi(u) phi(v)],  Var u = q1, Var v = q2, corr(u, v) = rho.

A :class:`Table` holds it on a grid, with the diagonal E[phi(u)^2](q), the mean E[phi(u)](q)
and the same expectations of phi' (for the neural tangent kernel), and evaluates all of them
at arbitrary points.  The file layout is documented in ``nngp_lut/table_format_v1.md``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from . import __version__
from ._core import interp as _interp
from ._core import quadrature as _quad
from ._core.config import (GAUSS_PANEL, GAUSS_WINDOW, GL_ORDER, INTERP_POINTS, WARP_LINEAR,
                           WARP_SCALE)
from ._files import atomic_write, os_failure
from .activations import Activation, get_activation, zero_function
from .errors import DomainError, ExpressionError, NNGPWarning, ParameterError, TableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._typing import PathLike, PhiLike

__all__ = ["DEFAULT_GRID", "DomainError", "FORMAT_NAME", "FORMAT_VERSION", "Integrator",
           "Table", "TableError", "as_table", "build_table", "cache_dir", "cached_table",
           "default_grid", "measure_error", "open_table", "open_table_memo", "random_points",
           "read_info"]

FORMAT_NAME = "nngp-lut table"
FORMAT_VERSION = 1

#: Default variance domain and grid (see the schema document for the measured errors).
#: The derivative tables have their own angle axes (same warp, more nodes): phi' of a
#: saturating phi is a bump, so E[phi'(u) phi'(v)] / E[phi'^2] has boundary layers of
#: height O(1) and width 1/sqrt(q) at rho = +-1, where F's are only O(1/sqrt(q)) high.
DEFAULT_GRID = dict(variance_min=1e-6, variance_max=1e4, n_variance=144, n_angle=104,
                    n_angle_derivative=288, n_unequal=120, n_unequal_angle=112,
                    n_unequal_angle_derivative=160, unequal_variance_max=None)
#: Default grid of entire activations of exponential type (sin, cos): denser, and the
#: unequal-variance table on a sqrt q axis up to 25 (see build_table).
EXP_TYPE_GRID = dict(n_variance=360, n_angle=256, n_angle_derivative=256, n_unequal=80,
                     n_unequal_angle=128, n_unequal_angle_derivative=128,
                     unequal_variance_max=25.0)
#: Nodes of the correlation axis of a homogeneous activation's table (theta uniform).
HOMOGENEOUS_N_ANGLE = 513
#: Relative tolerance of the domain check (rounding of variances computed in log space).
DOMAIN_SLACK = 1e-12
#: Random off-grid points at which a new table is checked against direct quadrature.
SELF_CHECK_POINTS = 256


@dataclass
class Table:
    """F_phi and its companions on a grid; see the module docstring.

    Use :func:`build_table` or :func:`open_table` to get one.
    """

    activation_name: str
    activation_source: str
    degree: float  # homogeneity degree, or -1.0 for a general activation
    log_variance: np.ndarray  # x grid (ln q); one node at ln 1 for homogeneous activations
    variance_min: float
    variance_max: float
    log_second_moment: np.ndarray  # ln E[phi^2] on the x grid
    mean_normalized: np.ndarray  # E[phi] / sqrt(E[phi^2]) on the x grid
    log_derivative_second_moment: np.ndarray  # ln E[phi'^2] (NaN without phi')
    f_normalized: np.ndarray  # F(q, q, rho) / E[phi^2](q) on (x, w)
    df_normalized: np.ndarray  # E[phi'(u) phi'(v)] / E[phi'^2](q) on (x, w)
    unequal_axis: np.ndarray  # ln q (or sqrt q) grid of both variance axes of the 3-D tables
    unequal_f_normalized: np.ndarray  # F(q1, q2, rho) / sqrt(D(q1) D(q2)) on (x1, x2, w3)
    unequal_df_normalized: np.ndarray  # the same for phi'
    metadata: dict = field(default_factory=dict)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def homogeneous(self):
        return self.degree >= 0.0

    @property
    def has_derivative(self):
        return bool(np.all(np.isfinite(self.df_normalized)))

    def _x0_dx(self):
        x = self.log_variance
        return float(x[0]), float(x[1] - x[0]) if x.size > 1 else 1.0

    def _check_variance(self, q):
        """q as a float64 array, checked against the table's domain; 0 is allowed (a unit
        that carries no signal: see :meth:`_with_zero`)."""
        q = np.ascontiguousarray(q, dtype=np.float64)
        if not np.all(np.isfinite(q)) or np.any(q < 0.0):
            raise DomainError("variances must be finite and non-negative")
        if self.homogeneous:
            return q
        lo = q.min(initial=np.inf, where=q > 0.0)
        hi = q.max(initial=-np.inf)
        # A relative slack of DOMAIN_SLACK forgives exp(log(q_max)) rounding above q_max.
        if q.size and (lo < self.variance_min * (1 - DOMAIN_SLACK)
                       or hi > self.variance_max * (1 + DOMAIN_SLACK)):
            bad = lo if lo < self.variance_min else hi
            phi = (self.activation_source if self.activation_name.startswith("expr:")
                   else self.activation_name)
            raise DomainError(
                f"variance {bad:.6g} is outside this table's domain "
                f"[{self.variance_min:.3g}, {self.variance_max:.3g}] for "
                f"{self.activation_name}; build a wider table, e.g. "
                f"nngp-lut build --phi '{phi}' "
                f"--variance-min {min(lo, self.variance_min):.2g} "
                f"--variance-max {max(hi, self.variance_max):.2g}")
        return q

    @property
    def unequal_variance_max(self):
        top = self.metadata["grid"].get("unequal_variance_max")
        return float(top) if top is not None else self.variance_max

    @property
    def warp_linear(self):
        """Weight of theta / pi in the equal-variance table's angle coordinate."""
        return float(self.metadata["grid"].get("warp_linear") or 0.0)

    @property
    def unequal_warp_scale(self):
        return float(self.metadata["grid"].get("unequal_warp_scale") or 0.0)

    @property
    def unequal_sqrt_axis(self):
        return self.metadata["grid"].get("unequal_axis") == "sqrt q, uniform"

    def check_unequal_domain(self, q_max):
        """Raise DomainError if unequal variances up to ``q_max`` leave the 3-D table."""
        top = self.unequal_variance_max
        if not self.homogeneous and q_max > top * (1 + DOMAIN_SLACK):
            raise DomainError(
                f"unequal variances above {top:.3g} are outside the unequal-variance "
                f"domain of this {self.activation_name} table; standardise the inputs "
                f"(equal variances are served up to {self.variance_max:.3g}) or build with "
                "a larger --unequal-variance-max")

    def interpolation_args(self, derivative=False):
        """Grids and values in the argument order of the Numba kernels
        (``_core.interp.normalized_many``, ``_core.engine.engine_tile``)."""
        x0, dx = self._x0_dx()
        x3 = self.unequal_axis
        return ((self.df_normalized if derivative else self.f_normalized), x0, dx,
                float(self.degree), self.warp_linear,
                (self.unequal_df_normalized if derivative else self.unequal_f_normalized),
                float(x3[0]), float(x3[1] - x3[0]) if x3.size > 1 else 1.0,
                self.unequal_sqrt_axis, self.unequal_warp_scale)

    # -- evaluation -------------------------------------------------------------------------
    @cached_property
    def activation(self) -> Activation:
        """The activation the table was built for (its values at 0, direct quadrature)."""
        name = self.activation_name
        return get_activation(self.activation_source if name.startswith("expr:") else name)

    @cached_property
    def at_zero(self) -> tuple[float, float]:
        """(phi(0), phi'(0)): the constant a unit of variance 0 becomes, and its slope."""
        act = self.activation
        return (float(act.phi(0.0)),
                float(act.dphi(0.0)) if act.dphi is not None else math.nan)

    def _with_zero(self, q, positive, at_zero):
        """``positive(q)`` (flat float64 in, flat out) where q > 0 and the constant
        ``at_zero()`` where q == 0 (called only then: it needs the activation itself).  A
        unit of variance 0 is u = 0 exactly, so every expectation is its value at 0:
        E[phi(u)] = phi(0), E[phi(u)^2] = phi(0)^2, ..."""
        q = self._check_variance(q)
        flat = q.ravel()
        live = flat > 0.0
        if live.all():
            return positive(flat).reshape(q.shape)
        out = np.full(flat.shape, at_zero())
        if live.any():
            out[live] = positive(np.ascontiguousarray(flat[live]))
        return out.reshape(q.shape)

    def second_moment(self, q):
        """E[phi(u)^2] for u ~ N(0, q), elementwise over an array of variances."""
        x0, dx = self._x0_dx()
        d1 = math.exp(self.log_second_moment[0])
        return self._with_zero(q, lambda v: _interp.diag_many(
            self.log_second_moment, x0, dx, self.degree, d1, v), lambda: self.at_zero[0] ** 2)

    def mean(self, q):
        """E[phi(u)] for u ~ N(0, q)."""
        x0, dx = self._x0_dx()
        d1 = math.exp(self.log_second_moment[0])
        return self._with_zero(q, lambda v: _interp.mean_many(
            self.mean_normalized, self.log_second_moment, x0, dx, self.degree, d1, v),
            lambda: self.at_zero[0])

    def derivative_second_moment(self, q):
        """E[phi'(u)^2] for u ~ N(0, q)."""
        self._require_derivative()
        x0, dx = self._x0_dx()
        d1 = math.exp(self.log_derivative_second_moment[0])
        deg = self.degree - 1.0 if self.homogeneous else -1.0
        return self._with_zero(q, lambda v: _interp.diag_many(
            self.log_derivative_second_moment, x0, dx, deg, d1, v),
            lambda: self.at_zero[1] ** 2)

    def derivative_mean(self, q):
        """E[phi'(u)] for u ~ N(0, q), by direct quadrature (not tabulated: only the pairs
        with a unit of variance 0 need it, Fdot(0, q2, rho) = phi'(0) E[phi'(v)])."""
        self._require_derivative()

        def quadrature(v):
            dphi = self.activation.dphi
            integ = Integrator(self.activation, max(1.0, float(v.max())))
            if integ.tau is not None:
                return _quad.trapezoid_univariate_many(dphi, zero_function, v, integ.tau)[1]
            return _quad.univariate_many(dphi, zero_function, integ.bp, v)[1]
        return self._with_zero(q, quadrature, lambda: self.at_zero[1])

    def F(self, q1, q2, rho):
        """F_phi(q1, q2, rho) = E[phi(u) phi(v)], elementwise (broadcast) over the arguments.

        References
        ----------
        Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eq. (5).
        """
        return self._expectation(q1, q2, rho, derivative=False)

    def dF(self, q1, q2, rho):
        """E[phi'(u) phi'(v)] with the same conventions as :meth:`F`."""
        self._require_derivative()
        return self._expectation(q1, q2, rho, derivative=True)

    def _require_derivative(self):
        if not self.has_derivative:
            raise ParameterError(f"{self.activation_name} has no derivative table "
                             "(phi' is not a function, e.g. for a step)")

    def _expectation(self, q1, q2, rho, derivative):
        q1, q2, rho = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                            for a in (q1, q2, rho)))
        shape = q1.shape
        q1, q2, rho = (np.ascontiguousarray(a).ravel() for a in (q1, q2, rho))
        q1 = self._check_variance(q1)
        q2 = self._check_variance(q2)
        live = (q1 > 0.0) & (q2 > 0.0)
        if not live.all():  # u = 0 or v = 0: independent, E[g(u) g(v)] = E[g(u)] E[g(v)]
            mean = self.derivative_mean if derivative else self.mean
            out = mean(q1) * mean(q2)
            if live.any():
                out[live] = self._expectation(q1[live], q2[live], rho[live], derivative)
            return out.reshape(shape)
        if not np.all(np.isfinite(rho)) or np.any(np.abs(rho) > 1.0 + 1e-12):
            raise DomainError("correlations must lie in [-1, 1]")
        moment = self.derivative_second_moment if derivative else self.second_moment
        norm = np.sqrt(moment(q1) * moment(q2))
        if not self.homogeneous:
            unequal = q1 != q2
            if np.any(unequal):
                self.check_unequal_domain(np.maximum(q1, q2)[unequal].max())
        vals = _interp.normalized_many(*self.interpolation_args(derivative), q1, q2, rho)
        return (norm * vals).reshape(shape)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path, *, force=False):
        """Write the table to ``path`` atomically (temporary file in the same folder, then
        rename), so an interrupted write never leaves a partial file under the final name."""

        def write(tmp):
            with h5py.File(tmp, "w") as h5:
                _write(h5, self)

        return atomic_write(path, write, force=force, mkdir=True)


# --- HDF5 ------------------------------------------------------------------------------------
_DATASETS = ("grid/log_variance", "moments/log_second_moment", "moments/mean_normalized",
             "moments/log_derivative_second_moment", "equal/f_normalized",
             "equal/df_normalized", "grid/unequal_axis", "unequal/f_normalized",
             "unequal/df_normalized")
_FIELDS = ("log_variance", "log_second_moment", "mean_normalized",
           "log_derivative_second_moment", "f_normalized", "df_normalized",
           "unequal_axis", "unequal_f_normalized", "unequal_df_normalized")


def _write(h5, t):
    h5.attrs["format"] = FORMAT_NAME
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["package_version"] = __version__
    h5.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    h5.attrs["activation_name"] = t.activation_name
    h5.attrs["activation_source"] = t.activation_source
    h5.attrs["metadata"] = json.dumps(t.metadata, sort_keys=True)
    for name, attr in zip(_DATASETS, _FIELDS):
        arr = getattr(t, attr)
        h5.create_dataset(name, data=np.asarray(arr, dtype=np.float64), fletcher32=True,
                          chunks=True if np.ndim(arr) else None)


def open_table(path: PathLike) -> Table:
    """Open and validate a table file.

    Raises
    ------
    TableError
        If the file is missing, not HDF5, not an nngp-lut table, of an unknown format
        version, misses a dataset or fails its Fletcher32 checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: no such table file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise os_failure(exc, path, "read") from None
    try:
        return _read_table(path)
    except TableError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        # h5py reports damaged headers in many ways ("message not aligned", bad symbol
        # tables, ...): every one of them means the same thing to the user.
        raise TableError(f"{path}: the file is damaged ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); rebuild the "
                         "table") from None


def _read_table(path):
    try:
        h5 = h5py.File(path, "r")
    except OSError:
        raise TableError(f"{path}: not an HDF5 file (damaged, or not a table); rebuild it "
                         "with nngp-lut build") from None
    with h5:
        if h5.attrs.get("format") != FORMAT_NAME:
            raise TableError(f"{path}: HDF5 but not an nngp-lut table (no format attribute "
                             f"{FORMAT_NAME!r})")
        version = int(h5.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise TableError(f"{path}: table format version {version} is not supported by "
                             f"nngp-lut {__version__} (reads version {FORMAT_VERSION}); "
                             "rebuild it with this version")
        arrays = {}
        for name in _DATASETS:
            if name not in h5:
                raise TableError(f"{path}: dataset {name!r} is missing; rebuild the table")
            try:
                arrays[name] = h5[name][()]
            except OSError:
                raise TableError(f"{path}: dataset {name!r} fails its checksum (the file is "
                                 "damaged); rebuild the table") from None
        try:
            meta = json.loads(h5.attrs["metadata"])
            name = str(h5.attrs["activation_name"])
            source = str(h5.attrs["activation_source"])
        except (KeyError, ValueError):
            raise TableError(f"{path}: metadata are missing or damaged; rebuild the table") \
                from None
    return Table(
        activation_name=name, activation_source=source,
        degree=float(meta["homogeneity_degree"]) if meta.get("homogeneity_degree") is not None
        else -1.0,
        variance_min=float(meta["grid"]["variance_min"]),
        variance_max=float(meta["grid"]["variance_max"]),
        metadata=meta,
        **{attr: arrays[name] for name, attr in zip(_DATASETS, _FIELDS)},
    )


def read_info(path: PathLike) -> dict:
    """Attributes and metadata of a table file, validated, as a plain dict."""
    t = open_table(path)
    try:
        with h5py.File(path, "r") as h5:
            info = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()
                    if k != "metadata"}
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise TableError(f"{path}: the file is damaged ({type(exc).__name__}); rebuild the "
                         "table") from None
    info["metadata"] = t.metadata
    return info


# --- building --------------------------------------------------------------------------------
class Integrator:
    """Direct quadrature of the expectations of one activation (the builder's engine).

    Also the reference used to measure a table's interpolation error.
    """

    def __init__(self, activation, variance_max):
        self.act = get_activation(activation)
        self.phi = self.act.phi
        # Without phi' (step) the derivative sums are computed against zero and discarded.
        self.dphi = self.act.dphi if self.act.dphi is not None else zero_function
        self.tau = self.act.exp_type
        self.variance_max = variance_max
        if self.tau is None:
            # Every inner window lies within 9 sqrt(2 q_max) of the origin.
            half = 1.01 * GAUSS_WINDOW * math.sqrt(2.0 * variance_max) + 10.0
            self.bp, self.kinks, bad = _quad.build_partition(
                self.phi, self.dphi, half, np.array(self.act.kinks, dtype=np.float64))
            if not math.isnan(bad):
                raise ExpressionError(f"activation {self.act.name} is not finite at x = "
                                      f"{bad:.6g}")

    def moments(self, q):
        q = np.ascontiguousarray(q, dtype=np.float64)
        if self.tau is not None:
            return _quad.trapezoid_univariate_many(self.phi, self.dphi, q, self.tau)
        return _quad.univariate_many(self.phi, self.dphi, self.bp, q)

    def outer_rule(self):
        """Outer nodes in z shared by every q1 of the 3-D table, with weights."""
        if self.tau is not None:
            return _quad.trapezoid_z_rule(2.0 * self.tau * math.sqrt(self.variance_max))
        return _quad.graded_z_rule()

    def _pair(self, parts):
        """(phi, phi') with the unwanted one replaced by zero (``parts``: "both", "F" or
        "dF"), so a pass for one of the two tables costs about half a pass for both."""
        if parts == "both":
            return self.phi, self.dphi
        if parts == "F":
            return self.phi, zero_function
        if parts == "dF":
            return zero_function, self.dphi
        raise ValueError(f"parts must be 'both', 'F' or 'dF', not {parts!r}")

    def inner(self, q2, theta, zs, parts="both"):
        """H(z) = E[phi(v)] at the nodes zs for every (q2, theta); see _core.quadrature."""
        q2, theta = (np.ascontiguousarray(a, dtype=np.float64) for a in (q2, theta))
        bp = self.bp if self.tau is None else np.zeros(2)
        tau = -1.0 if self.tau is None else float(self.tau)
        return _quad.inner_smoothings(*self._pair(parts), bp, tau, q2, np.cos(theta),
                                      np.sin(theta), zs)

    def bivariate(self, q1, q2, theta, parts="both"):
        """(E[phi(u) phi(v)], E[phi'(u) phi'(v)]) at arrays; with ``parts`` = "F" or "dF"
        the other one is returned as zeros."""
        q1, q2, theta = (np.ascontiguousarray(a, dtype=np.float64) for a in (q1, q2, theta))
        phi, dphi = self._pair(parts)
        if self.tau is not None:
            return _quad.trapezoid_bivariate_many(phi, dphi, q1, q2, theta, self.tau)
        return _quad.bivariate_many(phi, dphi, self.bp, self.kinks, q1, q2, theta)


def _chunks(n, parts):
    edges = np.linspace(0, n, min(n, parts) + 1).astype(int)
    return list(zip(edges[:-1], edges[1:]))


def default_grid(activation: str | Activation) -> dict:
    """Default grid of an activation's table (measured errors in the schema document)."""
    act = get_activation(activation)
    grid = dict(DEFAULT_GRID)
    if act.exp_type is not None:
        # sin, cos: F ~ exp(-q (1 - rho)) varies on a scale 1/q, not ln q, and has Gaussian
        # layers at rho = +-1; the trapezoid makes the denser grid cheap.
        grid.update(EXP_TYPE_GRID)
    return grid


#: Each derivative angle axis and the F angle axis it follows when only the latter is given.
_DERIVATIVE_AXES = (("n_angle_derivative", "n_angle"),
                    ("n_unequal_angle_derivative", "n_unequal_angle"))


def resolve_grid(activation: str | Activation, **given) -> dict:
    """The full grid spec of a build: the defaults, overridden by the arguments that are not
    None.  A derivative angle axis that is not given follows its F axis in the default ratio
    (a coarse test grid gets a proportionally coarse derivative axis)."""
    spec = default_grid(activation)
    for d_key, f_key in _DERIVATIVE_AXES:
        if given.get(d_key) is None and given.get(f_key) is not None:
            given[d_key] = max(int(given[f_key]),
                               round(int(given[f_key]) * spec[d_key] / spec[f_key]))
    spec.update({k: v for k, v in given.items() if v is not None})
    return spec


def _angle_grid(q, n, kappa_scale, linear):
    """theta_ij with blend(theta_ij; kappa_scale sqrt(q_i), linear) = j / (n - 1); the end
    nodes exactly 0 and pi."""
    w = np.linspace(0.0, 1.0, n)
    theta = np.array([[_interp.unblend(wj, kappa_scale * math.sqrt(qi), linear) for wj in w]
                      for qi in q])
    theta[:, 0], theta[:, -1] = 0.0, math.pi
    return theta


def build_table(activation: str | Activation, *, variance_min: float | None = None,
                variance_max: float | None = None, n_variance: int | None = None,
                n_angle: int | None = None, n_angle_derivative: int | None = None,
                n_unequal: int | None = None, n_unequal_angle: int | None = None,
                n_unequal_angle_derivative: int | None = None,
                unequal_variance_max: float | None = None,
                progress: Callable | None = None) -> Table:
    """Tabulate F_phi, E[phi'phi'] and the moments of an activation.

    Parameters
    ----------
    activation : str or Activation
        A built-in name, ``leaky_relu(slope=...)``, an expression in x, or an Activation.
    variance_min, variance_max : float, optional
        Variance domain of the table (ignored for homogeneous activations, which scale).
    n_variance, n_angle : int, optional
        Nodes of the ln-variance axis and of the warped angle axis (equal variances).
    n_angle_derivative : int, optional
        Nodes of the angle axis (same warp) of the equal-variance E[phi'phi'] table.
    n_unequal, n_unequal_angle : int, optional
        Nodes of each variance axis and of the angle axis of the 3-D unequal-variance table.
    n_unequal_angle_derivative : int, optional
        Nodes of the angle axis of the 3-D E[phi'phi'] table (its variance axes are F's).
        A derivative axis not given follows its F axis (see :func:`resolve_grid`).
    unequal_variance_max : float, optional
        Largest variance of the unequal-variance table (default: variance_max; 25 for sin
        and cos, whose kernel between unequal variances decays like
        exp(-(sqrt q1 - sqrt q2)^2 / 2) and is tabulated on a sqrt q axis).
        Every default comes from :func:`default_grid`.
    progress : callable, optional
        ``progress(done, total)`` is called as the build advances.

    Returns
    -------
    Table

    References
    ----------
    Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, Section 2.5.
    """
    act = get_activation(activation)
    spec = resolve_grid(act, variance_min=variance_min, variance_max=variance_max,
                        n_variance=n_variance, n_angle=n_angle,
                        n_angle_derivative=n_angle_derivative, n_unequal=n_unequal,
                        n_unequal_angle=n_unequal_angle,
                        n_unequal_angle_derivative=n_unequal_angle_derivative,
                        unequal_variance_max=unequal_variance_max)
    vmin, vmax = float(spec["variance_min"]), float(spec["variance_max"])
    if not (0.0 < vmin < vmax and math.isfinite(vmax)):
        raise ParameterError("need 0 < variance_min < variance_max")
    for key in ("n_variance", "n_angle", "n_angle_derivative", "n_unequal", "n_unequal_angle",
                "n_unequal_angle_derivative"):
        if int(spec[key]) < INTERP_POINTS:
            raise ParameterError(f"{key} must be at least {INTERP_POINTS}")
    homogeneous = act.degree is not None
    if homogeneous:
        # F(q1, q2, rho) = (q1 q2)^(k/2) F(1, 1, rho): one row at q = 1, theta uniform.
        x = np.zeros(1)
        theta = theta_d = np.linspace(0.0, math.pi, HOMOGENEOUS_N_ANGLE)[None, :]
        integ = Integrator(act, 2.0)
        x3 = np.zeros(1)
    else:
        x = np.linspace(math.log(vmin), math.log(vmax), int(spec["n_variance"]))
        # sin, cos: the pure warp (their layers are Gaussian; measured 6e-9 against 1.8e-7
        # with the blend); every other phi: the blend (gelu, softplus at large q).
        lin2 = 0.0 if act.exp_type is not None else WARP_LINEAR
        theta = _angle_grid(np.exp(x), int(spec["n_angle"]), WARP_SCALE, lin2)
        theta_d = (theta if int(spec["n_angle_derivative"]) == theta.shape[1] else
                   _angle_grid(np.exp(x), int(spec["n_angle_derivative"]), WARP_SCALE, lin2))
        integ = Integrator(act, vmax)
        vmax_u = float(spec["unequal_variance_max"] or vmax)
        if not vmin < vmax_u <= vmax:
            raise ParameterError("need variance_min < unequal_variance_max <= variance_max")
        n3 = int(spec["n_unequal"])
        sqrt_axis = act.exp_type is not None
        x3 = (np.linspace(0.0, math.sqrt(vmax_u), n3) if sqrt_axis
              else np.linspace(math.log(vmin), math.log(vmax_u), n3))
    n3w, n3wd = int(spec["n_unequal_angle"]), int(spec["n_unequal_angle_derivative"])
    deriv = act.has_derivative
    if not deriv:  # nothing to tabulate for phi': the NaN arrays take F's shapes
        theta_d, n3wd = theta, n3w
    cost = theta.size + (theta_d.size if deriv and theta_d is not theta else 0)
    if not homogeneous:
        cost += x3.size * (n3w + (n3wd if deriv and n3wd != n3w else 0))
    counter = _Progress(progress, x.size + cost)

    q = np.exp(x)
    e2, e1, d2 = integ.moments(q)
    counter.advance(q.size)
    f, fd = _equal_block(integ, q, theta, theta_d if deriv else None, counter)
    if np.any(e2 <= 0.0) or not np.all(np.isfinite(e2)):
        raise ExpressionError(f"E[phi^2] of {act.name} is zero or not finite on the domain")
    f_n = f / e2[:, None]
    df_n = fd / d2[:, None] if deriv else np.full(theta.shape, np.nan)
    log_d2 = np.log(d2) if act.has_derivative else np.full(q.shape, np.nan)
    if homogeneous:
        f3 = df3 = np.full((1, 1, 1), np.nan)
    else:
        q3 = x3**2 if sqrt_axis else np.exp(x3)
        # sin, cos: no boundary layers worth a warp below q = 100, and the warp's own
        # dependence on q2 near q = 0 costs accuracy on the sqrt axis (measured 1e-4).
        warp3 = 0.0 if sqrt_axis else WARP_SCALE
        f3, df3 = _unequal_block(integ, np.maximum(q3, 1e-300), n3w, n3wd if deriv else None,
                                 warp3, counter)
        if not deriv:
            df3 = np.full(f3.shape, np.nan)

    quad = ({"rule": "trapezoid in standard-normal units", "exp_type": act.exp_type}
            if act.exp_type is not None else
            {"rule": "composite Gauss-Legendre on an adaptive partition", "gl_order": GL_ORDER,
             "window_sd": GAUSS_WINDOW, "panel_sd": GAUSS_PANEL,
             "partition_panels": int(integ.bp.size - 1),
             "kinks": [float(k) for k in integ.kinks]})
    meta = {
        "grid": {"variance_min": vmin, "variance_max": vmax, "n_variance": int(x.size),
                 "n_angle": int(theta.shape[1]), "n_angle_derivative": int(theta_d.shape[1]),
                 "n_unequal": 0 if homogeneous else int(x3.size),
                 "unequal_variance_max": None if homogeneous else vmax_u,
                 "unequal_warp_scale": None if homogeneous else warp3,
                 "unequal_axis": None if homogeneous else
                 ("sqrt q, uniform" if sqrt_axis else "ln q, uniform"),
                 "n_unequal_angle": 0 if homogeneous else n3w,
                 "n_unequal_angle_derivative": 0 if homogeneous else n3wd,
                 "variance_axis": "q = 1 (scaling law)" if homogeneous else "ln q, uniform",
                 "angle_axis": "theta = arccos rho, uniform" if homogeneous else
                 "w = blend(arccos rho; kappa = warp_scale sqrt(q), warp_linear), uniform on "
                 "[0, 1]",
                 "unequal_angle_axis": None if homogeneous else
                 "w = warp_mixed(arccos rho; kappa = unequal_warp_scale sqrt(q2)), uniform "
                 "on [0, 1]",
                 "warp_scale": WARP_SCALE, "warp_linear": 0.0 if homogeneous else lin2,
                 "unequal_warp_linear": WARP_LINEAR,
                 "interpolation_points": INTERP_POINTS},
        "quadrature": quad,
        "homogeneity_degree": act.degree,
        "has_derivative": act.has_derivative,
    }
    table = Table(act.name, act.source, float(act.degree) if homogeneous else -1.0, x,
                  vmin, vmax, np.log(e2), e1 / np.sqrt(e2), log_d2, f_n, df_n,
                  x3, f3, df3, meta)
    table.metadata["measured_error"] = measure_error(table, integ, SELF_CHECK_POINTS)
    return table


class _Progress:
    def __init__(self, callback, total):
        self.callback, self.total, self.done = callback, total, 0

    def advance(self, n):
        self.done += n
        if self.callback:
            self.callback(self.done, self.total)


def _equal_block(integ, q, theta, theta_d, counter):
    """F(q_i, q_i, theta_ij) on the 2-D grid and E[phi'phi'] on its own angle grid theta_d
    (None: no derivative table, the second result is None); one pass serves both when the
    grids are the same array."""
    if theta_d is theta:
        return _equal_pass(integ, q, theta, "both", counter)
    f = _equal_pass(integ, q, theta, "F", counter)[0]
    fd = None if theta_d is None else _equal_pass(integ, q, theta_d, "dF", counter)[1]
    return f, fd


def _equal_pass(integ, q, theta, parts, counter):
    """integ.bivariate on the 2-D grid (q_i, q_i, theta_ij), in chunks for the progress bar."""
    qq = np.repeat(q, theta.shape[1])
    # Interleave rows so each chunk mixes cheap (small q) and dear (large q) points.
    order = np.argsort(np.tile(np.arange(theta.shape[1]), q.size), kind="stable")
    f = np.empty(theta.size)
    fd = np.empty(theta.size)
    flat = theta.ravel()
    for a, b in _chunks(theta.size, 40):
        idx = order[a:b]
        f[idx], fd[idx] = integ.bivariate(qq[idx], qq[idx], flat[idx], parts)
        counter.advance(b - a)
    return f.reshape(theta.shape), fd.reshape(theta.shape)


def _unequal_block(integ, q3, n_angle, n_angle_d, warp3, counter):
    """Normalised F(q1_i, q2_j, theta_jk) on the 3-D grid, and E[phi'phi'] on the same
    variance axes with its own angle axis of ``n_angle_d`` nodes (None: no derivative table,
    the second result is None).

    One universal node set in z serves every q1, so each (q2, theta) costs one pass of inner
    integrals H(z) and each q1 a dot product (see _core.quadrature)."""
    zs, zw = integ.outer_rule()
    p, pd = _quad.outer_values(integ.phi, integ.dphi, q3, zs)
    e2, _, d2 = integ.moments(q3)
    if n_angle_d == n_angle:
        f3, df3 = _unequal_pass(integ, q3, n_angle, warp3, zs, p * zw, pd * zw, counter)
    else:
        f3 = _unequal_pass(integ, q3, n_angle, warp3, zs, p * zw, None, counter)[0]
        df3 = (None if n_angle_d is None else
               _unequal_pass(integ, q3, n_angle_d, warp3, zs, None, pd * zw, counter)[1])
    r2, rd2 = np.sqrt(e2), np.sqrt(d2)
    f3 /= r2[:, None, None] * r2[None, :, None]
    if df3 is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            df3 /= rd2[:, None, None] * rd2[None, :, None]
    return f3, df3


def _unequal_pass(integ, q3, n_angle, warp3, zs, pw, pdw, counter):
    """Raw sums of the 3-D table(s) on one angle axis: E_z[phi(sqrt(q1_i) z) H(z)] with
    the outer values times weights ``pw`` (and the same for phi' with ``pdw``); a weight
    array that is None skips that table and its inner integrals."""
    theta = _angle_grid(q3, n_angle, warp3, WARP_LINEAR)
    parts = "both" if pw is not None and pdw is not None else ("F" if pw is not None else "dF")
    n = q3.size
    f3 = np.empty((n, n, n_angle)) if pw is not None else None
    df3 = np.empty((n, n, n_angle)) if pdw is not None else None
    jj, kk = np.divmod(np.arange(n * n_angle), n_angle)
    order = np.argsort(kk, kind="stable")  # mix small and large q2 in every chunk
    for a, b in _chunks(order.size, 40):
        idx = order[a:b]
        j, k = jj[idx], kk[idx]
        h, hd = integ.inner(q3[j], theta[j, k], zs, parts)
        if f3 is not None:
            f3[:, j, k] = pw @ h.T
        if df3 is not None:
            df3[:, j, k] = pdw @ hd.T
        counter.advance(b - a)
    return f3, df3


def random_points(table: Table, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Off-grid test points (q, theta): log-uniform q, theta half uniform, half near 0 / pi."""
    rng = np.random.default_rng(seed)
    lo, hi = (math.log(table.variance_min), math.log(table.variance_max))
    q = np.exp(rng.uniform(lo, hi, n))
    theta = rng.uniform(0.0, math.pi, n)
    near = rng.random(n) < 0.5
    ends = np.exp(rng.uniform(math.log(1e-6), 0.0, n))
    theta[near] = np.where(rng.random(near.sum()) < 0.5, ends[near], math.pi - ends[near])
    return q, theta


def measure_error(table: Table, integrator: Integrator, n: int, seed: int = 12345) -> dict:
    """Max over random off-grid points of |F_table - F_quadrature| / E[phi^2] (and of the
    same for E[phi'phi'])."""
    q, theta = random_points(table, n, seed)
    f, fd = integrator.bivariate(q, q, theta)
    rho = np.cos(theta)
    err = np.abs(table.F(q, q, rho) - f) / table.second_moment(q)
    out = {"points": int(n), "F": float(err.max()), "seed": seed}
    if table.has_derivative:
        errd = np.abs(table.dF(q, q, rho) - fd) / table.derivative_second_moment(q)
        out["dF"] = float(errd.max())
    if not table.homogeneous:
        top = table.unequal_variance_max
        q = np.minimum(q, top)
        q2 = np.minimum(random_points(table, n, seed + 1)[0], top)
        f, fd = integrator.bivariate(q, q2, theta)
        norm = np.sqrt(table.second_moment(q) * table.second_moment(q2))
        out["F_unequal"] = float(np.max(np.abs(table.F(q, q2, rho) - f) / norm))
        if table.has_derivative:
            norm = np.sqrt(table.derivative_second_moment(q) * table.derivative_second_moment(q2))
            out["dF_unequal"] = float(np.max(np.abs(table.dF(q, q2, rho) - fd) / norm))
    return out


# --- cache -----------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Folder of tables built on first use: $NNGP_LUT_CACHE, else ~/.cache/nngp-lut."""
    env = os.environ.get("NNGP_LUT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "nngp-lut"


#: Tables opened in this process, keyed by file (path, modification time, size): a caller
#: that asks again (the scikit-learn kernel does, several times per gradient) gets the same
#: Table without reading the file again.  A file that changes on disk is read again.
_OPENED = {}
#: How many opened tables the process keeps (the least recently used is dropped first).
OPENED_TABLES_MAX = 8


def open_table_memo(path: PathLike) -> Table:
    """:func:`open_table`, memoised in this process while the file is unchanged."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    table = _OPENED.pop(key, None)
    if table is None:
        table = open_table(p)
    _OPENED[key] = table  # most recently used last
    while len(_OPENED) > OPENED_TABLES_MAX:
        del _OPENED[next(iter(_OPENED))]
    return table


def cached_table(activation: str | Activation, progress: Callable | None = None,
                 **grid) -> Table:
    """The table of an activation from the cache, built (once) and stored if absent; read
    from disk once per process (:func:`open_table_memo`)."""
    act = get_activation(activation)
    spec = resolve_grid(act, **grid)
    key = json.dumps([act.name, act.source, FORMAT_VERSION, sorted(spec.items())])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in act.name)[:40]
    path = cache_dir() / f"{safe}-{digest}.h5"
    if path.is_file():
        try:
            return open_table_memo(path)
        except (TableError, OSError) as exc:  # a damaged (or vanished) entry is rebuilt below
            warnings.warn(f"rebuilding a damaged cached table ({exc})", NNGPWarning,
                          stacklevel=2)
    table = build_table(act, progress=progress, **spec)
    table.save(path, force=True)
    return table


def as_table(obj: PhiLike, progress: Callable | None = None) -> Table:
    """A Table from a Table, a path to a table file, or an activation (cached build)."""
    if isinstance(obj, Table):
        return obj
    if isinstance(obj, (str, os.PathLike)) and str(obj).endswith((".h5", ".hdf5")):
        if not Path(obj).is_file():
            return open_table(obj)  # its own error message
        return open_table_memo(obj)
    if isinstance(obj, (str, Activation)):
        return cached_table(obj, progress=progress)
    raise TypeError("expected a Table, a table path or an activation")
