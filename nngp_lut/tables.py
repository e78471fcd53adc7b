"""Build, save, open and evaluate F_phi tables (HDF5 format version 2; version 1 read).

The only activation-dependent part of the NNGP recursion (Lee et al., ICLR 2018, Section
2.5) is the bivariate Gaussian expectation

    F_phi(q1, q2, rho) = E[phi(u) phi(v)],  Var u = q1, Var v = q2, corr(u, v) = rho.

A :class:`Table` holds it on a grid, with the diagonal E[phi(u)^2](q), the mean E[phi(u)](q)
and the same expectations of phi' (for the neural tangent kernel), and evaluates all of them
at arbitrary points.  The file layout is documented in ``nngp_lut/table_format_v2.md``
(and version 1, still read, in ``nngp_lut/table_format_v1.md``).
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
import numba
import numpy as np

from . import __version__
from ._core import interp as _interp
from ._core import quadrature as _quad
from ._core.config import (DERIVATIVE_WARP_LINEAR, GAUSS_PANEL, GAUSS_WINDOW, GL_ORDER, GL_X,
                           INTERP_POINTS, PARITY_TOL, PRANGE_CHUNK, UNIVERSAL_FINE,
                           UNIVERSAL_FLOOR, UNIVERSAL_SMOOTH_FLOOR, WARP_LINEAR, WARP_SCALE)
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
#: The version new files are written in.
FORMAT_VERSION = 2
#: The versions this package reads (version 1: the derivative tables on F's variance axes).
READ_VERSIONS = (1, 2)

#: Default variance domain and grid (see the schema document for the measured errors).
#: The derivative tables have their own axes (format version 2): phi' of a saturating phi is
#: a bump, so E[phi'(u) phi'(v)] / E[phi'^2] has boundary layers of height O(1) and width
#: 1/sqrt(q) at rho = +-1, where F's are only O(1/sqrt(q)) high: more angles (and a pure
#: asinh warp), fewer variance nodes.  Each equal-variance table has the axes of its 3-D
#: table, so the builder takes it as the 3-D table's diagonal (q1 = q2) at no cost.
DEFAULT_GRID = dict(variance_min=1e-6, variance_max=1e4, n_variance=144, n_angle=104,
                    n_variance_derivative=128, n_angle_derivative=208, n_unequal=144,
                    n_unequal_angle=104, n_unequal_derivative=128,
                    n_unequal_angle_derivative=208, unequal_variance_max=None)
#: Default grid of entire activations of exponential type (sin, cos): denser, and the
#: unequal-variance table on a sqrt q axis up to 25 (see build_table).  Its 96 x 96 x 208
#: nodes (80 x 80 x 128 in format version 1: 9.1e-7) leave 6.8e-8 (sin) and 7.4e-8 (cos)
#: on the closed forms (20000 random points); the angle axis limits sin, the variance axes
#: cos (80 x 80 x 224: 6.1e-8 and 1.8e-7).
EXP_TYPE_GRID = dict(n_variance=360, n_angle=256, n_variance_derivative=360,
                     n_angle_derivative=256, n_unequal=96, n_unequal_angle=208,
                     n_unequal_derivative=96, n_unequal_angle_derivative=208,
                     unequal_variance_max=25.0)
#: Nodes of the correlation axis of a homogeneous activation's table (theta uniform).
HOMOGENEOUS_N_ANGLE = 513
#: Relative tolerance of the domain check (rounding of variances computed in log space).
DOMAIN_SLACK = 1e-12
#: Random off-grid points at which a new table is checked against direct quadrature.
SELF_CHECK_POINTS = 256
#: Chunks of a build pass: each is one parallel kernel call (both cores), and the progress
#: bar moves once per chunk.
BUILD_CHUNKS = 40


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
    unequal_df_normalized: np.ndarray  # the same for phi', on (xd1, xd2, wd3)
    derivative_log_variance: np.ndarray  # x grid of df_normalized (version 1: log_variance)
    unequal_derivative_axis: np.ndarray  # both variance axes of unequal_df_normalized
    metadata: dict = field(default_factory=dict)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def homogeneous(self):
        return self.degree >= 0.0

    @property
    def has_derivative(self):
        return bool(np.all(np.isfinite(self.df_normalized)))

    def _x0_dx(self):
        return _start_step(self.log_variance)

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

    def _grid_value(self, key, fallback):
        """A grid entry of the metadata; files of version 1 lack the derivative ones (their
        derivative tables used F's warps)."""
        value = self.metadata["grid"].get(key)
        return float(value) if value is not None else float(fallback)

    @property
    def derivative_warp_linear(self):
        return self._grid_value("derivative_warp_linear", self.warp_linear)

    @property
    def unequal_warp_linear(self):
        return self._grid_value("unequal_warp_linear", WARP_LINEAR)

    @property
    def unequal_derivative_warp_linear(self):
        return self._grid_value("unequal_derivative_warp_linear", self.unequal_warp_linear)

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
        """(2-D values, 3-D values, axes, degree) of F's tables (or of the derivative's) in
        the argument order of ``_core.interp.normalized_many``; the axes are the float64
        array that ``_core.interp.G_*`` index."""
        grid = np.empty(_interp.GRID_SIZE)
        if derivative:
            values, values3 = self.df_normalized, self.unequal_df_normalized
            x, x3 = self.derivative_log_variance, self.unequal_derivative_axis
            lin2, lin3 = self.derivative_warp_linear, self.unequal_derivative_warp_linear
        else:
            values, values3 = self.f_normalized, self.unequal_f_normalized
            x, x3 = self.log_variance, self.unequal_axis
            lin2, lin3 = self.warp_linear, self.unequal_warp_linear
        grid[_interp.G_X0], grid[_interp.G_DX] = _start_step(x)
        grid[_interp.G_X30], grid[_interp.G_DX3] = _start_step(x3)
        grid[_interp.G_LIN2], grid[_interp.G_LIN3] = lin2, lin3
        grid[_interp.G_SQRT] = 1.0 if self.unequal_sqrt_axis else 0.0
        grid[_interp.G_WARP3] = self.unequal_warp_scale
        return values, values3, grid, float(self.degree)

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


def _start_step(x):
    """First node and step of a uniform axis."""
    return float(x[0]), float(x[1] - x[0]) if x.size > 1 else 1.0


# --- HDF5 ------------------------------------------------------------------------------------
#: Datasets of format version 1, and the Table fields they fill.
_DATASETS_V1 = ("grid/log_variance", "moments/log_second_moment", "moments/mean_normalized",
                "moments/log_derivative_second_moment", "equal/f_normalized",
                "equal/df_normalized", "grid/unequal_axis", "unequal/f_normalized",
                "unequal/df_normalized")
_FIELDS_V1 = ("log_variance", "log_second_moment", "mean_normalized",
              "log_derivative_second_moment", "f_normalized", "df_normalized",
              "unequal_axis", "unequal_f_normalized", "unequal_df_normalized")
#: Version 2 adds the derivative tables' own variance axes.
_DATASETS = _DATASETS_V1 + ("grid/derivative_log_variance", "grid/unequal_derivative_axis")
_FIELDS = _FIELDS_V1 + ("derivative_log_variance", "unequal_derivative_axis")


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
        if version not in READ_VERSIONS:
            raise TableError(f"{path}: table format version {version} is not supported by "
                             f"nngp-lut {__version__} (reads versions "
                             f"{', '.join(map(str, READ_VERSIONS))}); rebuild it with this "
                             "version")
        datasets, fields = (_DATASETS_V1, _FIELDS_V1) if version == 1 else (_DATASETS, _FIELDS)
        arrays = {}
        for name in datasets:
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
    values = {attr: arrays[name] for name, attr in zip(datasets, fields)}
    if version == 1:  # the derivative tables on F's variance axes
        values["derivative_log_variance"] = values["log_variance"]
        values["unequal_derivative_axis"] = values["unequal_axis"]
    return Table(
        activation_name=name, activation_source=source,
        degree=float(meta["homogeneity_degree"]) if meta.get("homogeneity_degree") is not None
        else -1.0,
        variance_min=float(meta["grid"]["variance_min"]),
        variance_max=float(meta["grid"]["variance_max"]),
        metadata=meta, **values,
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
        # Every inner window lies within 9 sqrt(2 q_max) of the origin.
        half = 1.01 * GAUSS_WINDOW * math.sqrt(2.0 * variance_max) + 10.0
        if self.tau is None:
            self.bp, self.kinks, bad = _quad.build_partition(
                self.phi, self.dphi, half, np.array(self.act.kinks, dtype=np.float64))
            if not math.isnan(bad):
                raise ExpressionError(f"activation {self.act.name} is not finite at x = "
                                      f"{bad:.6g}")
            sample = self.bp
        else:  # entire of exponential type tau: features ~1/tau wide everywhere
            sample = np.linspace(-half, half, 2 * int(half * max(1.0, self.tau)) + 3)
        #: Parity of phi and of phi' (see :func:`_parity`), which halves the inner
        #: integrals of the table builds.
        self.parity = {"F": _parity(self.phi, sample), "dF": _parity(self.dphi, sample)}

    def moments(self, q):
        q = np.ascontiguousarray(q, dtype=np.float64)
        if self.tau is not None:
            return _quad.trapezoid_univariate_many(self.phi, self.dphi, q, self.tau)
        return _quad.univariate_many(self.phi, self.dphi, self.bp, q)

    @property
    def smooth(self):
        """True when the partition holds no kink of phi or phi' (declared or found)."""
        return self.tau is not None or self.kinks.size == 0

    def outer_rule(self):
        """Outer nodes in z shared by every q1 of the 3-D table, with weights (a symmetric
        rule: see _core.quadrature.graded_z_rule)."""
        if self.tau is not None:
            return _quad.trapezoid_z_rule(2.0 * self.tau * math.sqrt(self.variance_max))
        floor = (min(UNIVERSAL_FINE, UNIVERSAL_SMOOTH_FLOOR / math.sqrt(self.variance_max))
                 if self.smooth else UNIVERSAL_FLOOR)
        return _quad.graded_z_rule(floor)

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
        if parts not in ("both", "F", "dF"):
            raise ValueError(f"parts must be 'both', 'F' or 'dF', not {parts!r}")
        symmetric = np.array_equal(zs, -zs[::-1])  # the parity needs mirrored nodes
        # Dynamic scheduling of the prange loop (the cost of a pair varies tenfold with q2
        # and theta); the setting is the calling thread's, restored at once.
        previous = numba.set_parallel_chunksize(PRANGE_CHUNK)
        try:
            return _quad.inner_smoothings(self.phi, self.dphi, parts != "dF", parts != "F",
                                          bp, tau, q2, np.cos(theta), np.sin(theta), zs,
                                          self.parity["F"] if symmetric else 0,
                                          self.parity["dF"] if symmetric else 0)
        finally:
            numba.set_parallel_chunksize(previous)

    def bivariate(self, q1, q2, theta, parts="both"):
        """(E[phi(u) phi(v)], E[phi'(u) phi'(v)]) at arrays; with ``parts`` = "F" or "dF"
        the other one is returned as zeros."""
        q1, q2, theta = (np.ascontiguousarray(a, dtype=np.float64) for a in (q1, q2, theta))
        phi, dphi = self._pair(parts)
        if self.tau is not None:
            return _quad.trapezoid_bivariate_many(phi, dphi, q1, q2, theta, self.tau)
        return _quad.bivariate_many(phi, dphi, self.bp, self.kinks, q1, q2, theta)


def _parity(f, bp):
    """+1 if f is even, -1 if f is odd about f(0) (f(-x) + f(x) = 2 f(0)), else 0, tested
    at the Gauss-Legendre nodes and ends of every panel of the partition ``bp`` folded onto
    x >= 0 (so of the partition and of its mirror image; see config.PARITY_TOL).  Plain
    Python: a few thousand calls of the compiled phi, no compilation."""
    f0 = f(0.0)
    ends = np.unique(np.concatenate((np.abs(bp), [0.0])))
    a, b = ends[:-1, None], ends[1:, None]
    x = np.concatenate(((a + 0.5 * (b - a) * (GL_X + 1.0)).ravel(), ends))
    fp = np.array([f(v) for v in x])
    fm = np.array([f(-v) for v in x])
    tol = PARITY_TOL * np.maximum(1.0, np.maximum(np.abs(fp), np.abs(fm)))
    if np.all(np.abs(fp - fm) <= tol):
        return 1
    if np.all(np.abs(fp + fm - 2.0 * f0) <= tol):
        return -1
    return 0


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


#: Each derivative axis and the F axis it follows when only the latter is given.
_DERIVATIVE_AXES = (("n_angle_derivative", "n_angle"),
                    ("n_unequal_angle_derivative", "n_unequal_angle"),
                    ("n_variance_derivative", "n_variance"),
                    ("n_unequal_derivative", "n_unequal"))
#: The derivative angle axes never get fewer nodes than F's when they follow them.
_AT_LEAST_F = ("n_angle_derivative", "n_unequal_angle_derivative")
#: Grid keys that count nodes.
_NODE_KEYS = ("n_variance", "n_angle", "n_variance_derivative", "n_angle_derivative",
              "n_unequal", "n_unequal_angle", "n_unequal_derivative",
              "n_unequal_angle_derivative")


def resolve_grid(activation: str | Activation, **given) -> dict:
    """The full grid spec of a build: the defaults, overridden by the arguments that are not
    None.  A derivative axis that is not given follows its F axis in the default ratio (a
    coarse test grid gets a proportionally coarse derivative axis; an angle axis never
    fewer nodes than F's)."""
    spec = default_grid(activation)
    for d_key, f_key in _DERIVATIVE_AXES:
        if given.get(d_key) is None and given.get(f_key) is not None:
            n = max(INTERP_POINTS, round(int(given[f_key]) * spec[d_key] / spec[f_key]))
            given[d_key] = max(int(given[f_key]), n) if d_key in _AT_LEAST_F else n
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
                n_angle: int | None = None, n_variance_derivative: int | None = None,
                n_angle_derivative: int | None = None, n_unequal: int | None = None,
                n_unequal_angle: int | None = None, n_unequal_derivative: int | None = None,
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
    n_variance_derivative, n_angle_derivative : int, optional
        The same axes of the equal-variance E[phi'phi'] table (its own axes: format
        version 2).
    n_unequal, n_unequal_angle : int, optional
        Nodes of each variance axis and of the angle axis of the 3-D unequal-variance table.
    n_unequal_derivative, n_unequal_angle_derivative : int, optional
        The same axes of the 3-D E[phi'phi'] table.
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

    Notes
    -----
    Every table of a general phi is computed by one scheme: for each (q2, theta) of an
    angle grid, the inner integrals H(z) at one universal node set in z (half of it for an
    even or odd phi), then a dot product per q1 (see ``_core.quadrature``).  An
    equal-variance table whose axes are those of its 3-D table (the default grid) is the
    3-D table's diagonal.  The passes run in parallel (Numba ``prange``) over (q2, theta).

    References
    ----------
    Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, Section 2.5.
    """
    act = get_activation(activation)
    spec = resolve_grid(act, variance_min=variance_min, variance_max=variance_max,
                        n_variance=n_variance, n_angle=n_angle,
                        n_variance_derivative=n_variance_derivative,
                        n_angle_derivative=n_angle_derivative, n_unequal=n_unequal,
                        n_unequal_angle=n_unequal_angle,
                        n_unequal_derivative=n_unequal_derivative,
                        n_unequal_angle_derivative=n_unequal_angle_derivative,
                        unequal_variance_max=unequal_variance_max)
    vmin, vmax = float(spec["variance_min"]), float(spec["variance_max"])
    if not (0.0 < vmin < vmax and math.isfinite(vmax)):
        raise ParameterError("need 0 < variance_min < variance_max")
    for key in _NODE_KEYS:
        if int(spec[key]) < INTERP_POINTS:
            raise ParameterError(f"{key} must be at least {INTERP_POINTS}")
    homogeneous = act.degree is not None
    deriv = act.has_derivative
    exp_type = act.exp_type is not None
    if homogeneous:
        # F(q1, q2, rho) = (q1 q2)^(k/2) F(1, 1, rho): one row at q = 1, theta uniform.
        x = xd = np.zeros(1)
        theta = np.linspace(0.0, math.pi, HOMOGENEOUS_N_ANGLE)[None, :]
        integ = Integrator(act, 2.0)
        x3 = x3d = np.zeros(1)
        lin2 = lin2d = 0.0
        counter = _Progress(progress, 1 + theta.size)
        e2, e1, d2 = integ.moments(np.ones(1))
        counter.advance(1)
        f, fd = _equal_pass(integ, np.ones(1), theta, "both", counter)
        f_n = f / e2[:, None]
        df_n = fd / d2[:, None] if deriv else np.full(theta.shape, np.nan)
        f3 = df3 = np.full((1, 1, 1), np.nan)
    else:
        x = np.linspace(math.log(vmin), math.log(vmax), int(spec["n_variance"]))
        xd = np.linspace(math.log(vmin), math.log(vmax), int(spec["n_variance_derivative"]))
        # sin, cos: the pure warp (their layers are Gaussian; measured 6e-9 against 1.8e-7
        # with the blend); every other phi: the blend (gelu, softplus at large q) for F, the
        # pure warp for the derivative (config.DERIVATIVE_WARP_LINEAR).
        lin2 = 0.0 if exp_type else WARP_LINEAR
        lin2d = 0.0 if exp_type else DERIVATIVE_WARP_LINEAR
        integ = Integrator(act, vmax)
        vmax_u = float(spec["unequal_variance_max"] or vmax)
        if not vmin < vmax_u <= vmax:
            raise ParameterError("need variance_min < unequal_variance_max <= variance_max")
        sqrt_axis = exp_type

        def axis3(n):
            return (np.linspace(0.0, math.sqrt(vmax_u), n) if sqrt_axis
                    else np.linspace(math.log(vmin), math.log(vmax_u), n))

        x3, x3d = axis3(int(spec["n_unequal"])), axis3(int(spec["n_unequal_derivative"]))
        # sin, cos: no boundary layers worth a warp below q = 100, and the warp's own
        # dependence on q2 near q = 0 costs accuracy on the sqrt axis (measured 1e-4).
        warp3 = 0.0 if sqrt_axis else WARP_SCALE
        lin3 = WARP_LINEAR
        lin3d = WARP_LINEAR if exp_type else DERIVATIVE_WARP_LINEAR

        def q_of(c):
            return np.maximum(c**2, 1e-300) if sqrt_axis else np.exp(c)

        axes_f = _Axes(np.exp(x), int(spec["n_angle"]), lin2, q_of(x3),
                       int(spec["n_unequal_angle"]), warp3, lin3)
        axes_d = _Axes(np.exp(xd), int(spec["n_angle_derivative"]), lin2d, q_of(x3d),
                       int(spec["n_unequal_angle_derivative"]), warp3, lin3d)
        shared = deriv and axes_f.same_as(axes_d)
        cost = axes_f.cost(integ) + (axes_d.cost(integ) if deriv and not shared else 0)
        counter = _Progress(progress, x.size + cost)
        e2, e1, d2 = integ.moments(axes_f.q)
        counter.advance(x.size)
        if shared:  # one pass for both (sin, cos: the same grids)
            f_n, df_n, f3, df3 = _general_tables(integ, "both", axes_f, counter)
        else:
            f_n, _, f3, _ = _general_tables(integ, "F", axes_f, counter)
            _, df_n, _, df3 = (_general_tables(integ, "dF", axes_d, counter) if deriv
                               else (None, None, None, None))
        if not deriv:
            df_n, df3 = np.full(f_n.shape, np.nan), np.full(f3.shape, np.nan)
            xd, x3d = x, x3
    if np.any(e2 <= 0.0) or not np.all(np.isfinite(e2)):
        raise ExpressionError(f"E[phi^2] of {act.name} is zero or not finite on the domain")
    log_d2 = np.log(d2) if deriv else np.full(x.shape, np.nan)

    quad = ({"rule": "trapezoid in standard-normal units", "exp_type": act.exp_type}
            if exp_type else
            {"rule": "composite Gauss-Legendre on an adaptive partition", "gl_order": GL_ORDER,
             "window_sd": GAUSS_WINDOW, "panel_sd": GAUSS_PANEL,
             "partition_panels": int(integ.bp.size - 1),
             "kinks": [float(k) for k in integ.kinks]})
    if not homogeneous:
        zs = integ.outer_rule()[0]
        quad.update({"outer_nodes": int(zs.size),
                     "parity": {"phi": integ.parity["F"], "dphi": integ.parity["dF"]}})
    meta = {
        "grid": {"variance_min": vmin, "variance_max": vmax, "n_variance": int(x.size),
                 "n_angle": int(f_n.shape[1]), "n_variance_derivative": int(xd.size),
                 "n_angle_derivative": int(df_n.shape[1]),
                 "n_unequal": 0 if homogeneous else int(x3.size),
                 "n_unequal_derivative": 0 if homogeneous else int(x3d.size),
                 "unequal_variance_max": None if homogeneous else vmax_u,
                 "unequal_warp_scale": None if homogeneous else warp3,
                 "unequal_axis": None if homogeneous else
                 ("sqrt q, uniform" if sqrt_axis else "ln q, uniform"),
                 "n_unequal_angle": 0 if homogeneous else int(f3.shape[2]),
                 "n_unequal_angle_derivative": 0 if homogeneous else int(df3.shape[2]),
                 "variance_axis": "q = 1 (scaling law)" if homogeneous else "ln q, uniform",
                 "angle_axis": "theta = arccos rho, uniform" if homogeneous else
                 "w = blend(arccos rho; kappa = warp_scale sqrt(q), warp_linear), uniform on "
                 "[0, 1]",
                 "unequal_angle_axis": None if homogeneous else
                 "w = blend(arccos rho; kappa = unequal_warp_scale sqrt(q2), "
                 "unequal_warp_linear), uniform on [0, 1]",
                 "warp_scale": WARP_SCALE, "warp_linear": lin2,
                 "derivative_warp_linear": lin2d,
                 "unequal_warp_linear": None if homogeneous else lin3,
                 "unequal_derivative_warp_linear": None if homogeneous else lin3d,
                 "interpolation_points": INTERP_POINTS},
        "quadrature": quad,
        "homogeneity_degree": act.degree,
        "has_derivative": deriv,
    }
    table = Table(act.name, act.source, float(act.degree) if homogeneous else -1.0, x,
                  vmin, vmax, np.log(e2), e1 / np.sqrt(e2), log_d2, f_n, df_n,
                  x3, f3, df3, xd, x3d, meta)
    table.metadata["measured_error"] = measure_error(table, integ, SELF_CHECK_POINTS)
    return table


class _Progress:
    def __init__(self, callback, total):
        self.callback, self.total, self.done = callback, total, 0

    def advance(self, n):
        self.done += n
        if self.callback:
            self.callback(self.done, self.total)


@dataclass
class _Axes:
    """The axes of one pair of tables (F's, or the derivative's): the equal-variance table
    on variances ``q`` x ``n_angle`` angles (blend weight ``lin2``), the 3-D table on
    variances ``q3`` (both axes) x ``n3w`` angles (kappa = warp3 sqrt(q2), weight lin3)."""

    q: np.ndarray
    n_angle: int
    lin2: float
    q3: np.ndarray
    n3w: int
    warp3: float
    lin3: float

    @cached_property
    def theta(self):
        return _angle_grid(self.q, self.n_angle, WARP_SCALE, self.lin2)

    @cached_property
    def theta3(self):
        return _angle_grid(self.q3, self.n3w, self.warp3, self.lin3)

    @property
    def diagonal(self):
        """True when the equal-variance table is the 3-D table's diagonal."""
        return self.theta.shape == self.theta3.shape and np.array_equal(self.q, self.q3) \
            and np.array_equal(self.theta, self.theta3)

    def same_as(self, other):
        return all(np.array_equal(a, b) for a, b in
                   ((self.q, other.q), (self.q3, other.q3), (self.theta, other.theta),
                    (self.theta3, other.theta3)))

    def cost(self, integ):
        """Work units of :func:`_general_tables` (one per (variance, angle) pair)."""
        return self.theta3.size + (0 if self.diagonal and integ.tau is None
                                   else self.theta.size)


def _general_tables(integ, parts, axes, counter):
    """The normalised equal-variance and 3-D tables of F (``parts`` "F"), of E[phi'phi']
    ("dF") or of both ("both") on ``axes``: (f_n, df_n, f3, df3), None for a part not
    made."""
    zs, zw = integ.outer_rule()
    want_f, want_d = parts in ("both", "F"), parts in ("both", "dF")
    p3, pd3 = _quad.outer_values(integ.phi, integ.dphi, axes.q3, zs)
    f3, df3 = _unequal_pass(integ, axes.q3, axes.theta3, zs, p3 * zw if want_f else None,
                            pd3 * zw if want_d else None, counter)
    if axes.diagonal and integ.tau is None:
        idx = np.arange(axes.q.size)
        f, fd = (None if a is None else a[idx, idx, :] for a in (f3, df3))
    elif integ.tau is None:
        p, pd = _quad.outer_values(integ.phi, integ.dphi, axes.q, zs)
        f, fd = _equal_pass_z(integ, axes.q, axes.theta, zs, p * zw if want_f else None,
                              pd * zw if want_d else None, counter)
    else:  # sin, cos: per-point trapezoid rules, each as fine as its variance needs
        f, fd = _equal_pass(integ, axes.q, axes.theta, parts, counter)
    e2, _, d2 = integ.moments(axes.q)
    e23, _, d23 = integ.moments(axes.q3)
    out = []
    for raw, raw3, m, m3, want in ((f, f3, e2, e23, want_f), (fd, df3, d2, d23, want_d)):
        if not want:
            out.append((None, None))
            continue
        r3 = np.sqrt(m3)
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append((raw / m[:, None], raw3 / (r3[:, None, None] * r3[None, :, None])))
    (f_n, f3n), (df_n, df3n) = out
    return f_n, df_n, f3n, df3n


def _equal_pass(integ, q, theta, parts, counter):
    """integ.bivariate on the 2-D grid (q_i, q_i, theta_ij), in chunks for the progress bar
    (homogeneous phi, and sin and cos)."""
    qq = np.repeat(q, theta.shape[1])
    # Interleave rows so each chunk mixes cheap (small q) and dear (large q) points.
    order = np.argsort(np.tile(np.arange(theta.shape[1]), q.size), kind="stable")
    f = np.empty(theta.size)
    fd = np.empty(theta.size)
    flat = theta.ravel()
    for a, b in _chunks(theta.size, BUILD_CHUNKS):
        idx = order[a:b]
        f[idx], fd[idx] = integ.bivariate(qq[idx], qq[idx], flat[idx], parts)
        counter.advance(b - a)
    return f.reshape(theta.shape), fd.reshape(theta.shape)


def _equal_pass_z(integ, q, theta, zs, pw, pdw, counter):
    """The equal-variance table on its own axes by the scheme of the 3-D table: the inner
    integrals H(z) of each (q_i, theta_ij), then one dot product with the outer values
    times weights of q_i (``pw`` (n, nz), or ``pdw`` for phi'; None skips a part)."""
    n, nw = theta.shape
    rows = np.repeat(np.arange(n), nw)
    flat = theta.ravel()
    parts = "both" if pw is not None and pdw is not None else ("F" if pw is not None else "dF")
    f = np.empty(theta.size) if pw is not None else None
    fd = np.empty(theta.size) if pdw is not None else None
    order = np.argsort(np.tile(np.arange(nw), n), kind="stable")  # mix small and large q
    for a, b in _chunks(order.size, BUILD_CHUNKS):
        idx = order[a:b]
        h, hd = integ.inner(q[rows[idx]], flat[idx], zs, parts)
        if f is not None:
            f[idx] = np.einsum("kz,kz->k", pw[rows[idx]], h)
        if fd is not None:
            fd[idx] = np.einsum("kz,kz->k", pdw[rows[idx]], hd)
        counter.advance(b - a)
    return (None if f is None else f.reshape(theta.shape),
            None if fd is None else fd.reshape(theta.shape))


def _unequal_pass(integ, q3, theta, zs, pw, pdw, counter):
    """Raw sums of the 3-D table(s) on the angle grid ``theta`` (n, n_angle):
    E_z[phi(sqrt(q1_i) z) H(z)] with the outer values times weights ``pw`` (and the same
    for phi' with ``pdw``); a weight array that is None skips that table and its inner
    integrals.

    One universal node set in z serves every q1, so each (q2, theta) costs one pass of inner
    integrals H(z) and each q1 a dot product (see _core.quadrature)."""
    parts = "both" if pw is not None and pdw is not None else ("F" if pw is not None else "dF")
    n, n_angle = theta.shape
    f3 = np.empty((n, n, n_angle)) if pw is not None else None
    df3 = np.empty((n, n, n_angle)) if pdw is not None else None
    jj, kk = np.divmod(np.arange(n * n_angle), n_angle)
    order = np.argsort(kk, kind="stable")  # mix small and large q2 in every chunk
    for a, b in _chunks(order.size, BUILD_CHUNKS):
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
