"""Exact GP regression and classification with deep NNGP and NTK kernels.

The posterior of Lee et al. (2018), eq. (4), with train inputs D, targets t and noise
variance sigma_eps^2 (the "jitter"):

    mean(x*) = K_{x*,D} (K_{D,D} + sigma_eps^2 I)^{-1} t
    var(x*)  = K_{x*,x*} - K_{x*,D} (K_{D,D} + sigma_eps^2 I)^{-1} K_{D,x*}

With ``kernel="ntk"`` it is the distribution of an infinitely wide network trained to
convergence by gradient descent on the squared loss from random initialisation (Lee et al.
2019, "Wide neural networks of any depth evolve as linear models", eq. 16 at t = infinity),
with Theta the NTK, K the NNGP and a(x*) = (Theta_{D,D} + sigma_eps^2 I)^{-1} Theta_{D,x*}:

    mean(x*) = Theta_{x*,D} (Theta_{D,D} + sigma_eps^2 I)^{-1} t
    var(x*)  = K_{x*,x*} + a^T K_{D,D} a - 2 a^T K_{D,x*}

K_{D,D} is factored by the blocked Cholesky of :mod:`nngp_lut.linalg` (in RAM or out of
core) from kernel tiles made on demand; K_{x*,D} is made in row blocks and never held whole.
Classification is regression on one-hot targets minus their training mean; the predicted
class is the argmax of the posterior mean (the paper's Section 3).

The paper's jitter rule starts at sigma_eps^2 = 1e-10 and multiplies it by 10 after each
failed factorisation, up to 0.1 ("absolute"); "relative" scales that ladder by the mean of
the kernel's diagonal, so that it does not depend on the kernel's scale.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import linalg, paper
from .data import is_labels, standardize_rows, validate_inputs
from .errors import (ArchitectureError, DataError, DegenerateKernelWarning, OneClassWarning,
                     ParameterError)
from .kernel import Activation, Layer, Network, deep_network
from .kernel.network import KINDS

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import ArrayLike

    from distributed import Client

    from ._typing import PathLike, PhiLike

__all__ = ["NNGPRegressor", "PAPER_TABLE1", "Result", "evaluate", "jitter_ladder",
           "log_evidence", "one_hot", "regression_targets"]

#: The paper's best settings on MNIST (Table 1), from :mod:`nngp_lut.paper`.
PAPER_TABLE1 = paper.TABLE1_MNIST
#: A kernel whose correlations between training inputs all agree to within this spread has
#: collapsed to the recursion's fixed point: what is left of the inputs is rounding noise.
DEGENERATE_SPREAD = 1e-10
#: Training inputs (the first ones) on which the collapse is checked.
DEGENERATE_CHECK_POINTS = 256


def jitter_ladder(rule: str | float, diag_mean: float = 1.0) -> tuple[float, ...]:
    """The noise variances to try: "absolute" (the paper's), "relative" (times the mean of
    the kernel's diagonal) or one fixed value (a float, or a string holding one)."""
    if rule == "absolute":
        return linalg.PAPER_JITTERS
    if rule == "relative":
        return tuple(j * diag_mean for j in linalg.PAPER_JITTERS)
    try:
        value = float(rule)
    except (TypeError, ValueError):
        raise ParameterError(f"jitter must be 'absolute', 'relative' or a number; got "
                             f"{rule!r}") from None
    if not value >= 0.0:
        raise ParameterError("a fixed jitter must be >= 0")
    return (value,)


class NNGPRegressor:
    """Exact GP regression with the NNGP (or NTK) of a deep network.

    Parameters
    ----------
    phi : str, Activation, Table or path
        The activation or its table.
    depth, weight_var, bias_var
        The fully connected network (DESIGN.md section 1).
    network : Network or Layer, optional
        Any network of the layer algebra (:mod:`nngp_lut.kernel`); it replaces phi, depth,
        weight_var and bias_var.
    kernel : {"nngp", "ntk"}
        The Bayesian posterior of the NNGP, or the NTK's gradient-descent ensemble.
    standardize : bool
        Standardise each input across its features first (the paper's code).
    jitter : "absolute", "relative" or float
        Noise variance rule; see :func:`jitter_ladder`.
    memory : int or str
        Memory budget ("auto": 75% of the available memory).  Above it the factorisation
        runs out of core in ``scratch``.
    scratch, resume
        Out-of-core scratch directory, and whether to continue a killed run there.
    tile : int, optional
        Tile order of the factorisation (default :data:`nngp_lut.linalg.DEFAULT_TILE`).
    progress : callable, optional
        ``progress(stage, done, total)``, stage in "kernel", "cholesky", "predict".
    client : dask.distributed.Client, optional
        Run the kernel tiles, the factorisation and the solves as task graphs on this Dask
        cluster (:mod:`nngp_lut.cluster`; the ``distributed`` extra).  The training inputs
        are scattered once; the tiles of the factor stay on the workers, and with
        ``scratch`` every finished tile column is also written there so that ``resume``
        continues a run whose cluster died.  The kernel tiles then run inside the
        factorisation's graph: their time is part of ``timings_["cholesky"]``.

    Attributes (after fit)
    ----------------------
    jitter_ : float
        The noise variance that made K_DD + jitter I factorable.
    timings_ : dict
        Seconds in "kernel" (train tiles), "cholesky" and "solve".
    """

    def __init__(self, phi="relu", depth=1, weight_var=1.0, bias_var=0.0, *, network=None,
                 kernel="nngp", standardize=False, jitter="absolute", memory="auto",
                 scratch=None, resume=False, tile=None, progress=None, client=None):
        if kernel not in KINDS:
            raise ParameterError(f"kernel must be 'nngp' or 'ntk', got {kernel!r}")
        if network is None:
            self.network = deep_network(phi, depth, weight_var, bias_var)
        else:
            self.network = network if isinstance(network, Network) else Network(network)
        if self.network.batch_coupled:
            raise ArchitectureError("BatchNorm's kernel depends on the batch it normalises "
                                    "over, and GP prediction needs one prior over the "
                                    "training and test inputs: give a reference batch "
                                    "(Network(layer, reference=R); --bn-reference FILE), "
                                    "or use Network.kernel(x) on a batch")
        self.kernel = kernel
        self.settings = dict(network=repr(self.network), kernel=kernel,
                             standardize=standardize, jitter=jitter)
        self.standardize = standardize
        self.jitter = jitter
        self.memory = memory
        self.scratch = scratch
        self.resume = resume
        self.tile = tile
        self.progress = progress
        self.client = client
        self.factor_ = None

    def _prepare(self, x, name):
        if self.network.rank != 0:  # images, sequences, graphs: their own shape
            x = standardize_rows(x, name, self.network.recurrent) if self.standardize else x
            return self.network._prepare(x, None)[0]
        return standardize_rows(x, name) if self.standardize else validate_inputs(x, name)

    def fit(self, x, y):
        """Factor K_DD + jitter I and solve for the targets y, shape (n,) or (n, outputs)."""
        x = self._prepare(x, "x_train")
        y = np.asarray(y, dtype=np.float64)
        y2 = y.reshape(len(y), -1)
        if y2.shape[0] != x.shape[0]:
            raise DataError(f"{y2.shape[0]} targets for {x.shape[0]} training inputs")
        if not np.all(np.isfinite(y2)):
            raise DataError("the targets have a NaN or inf value")
        n = x.shape[0]
        self.x_train_ = x
        self.diag_train_ = self.network.diagonal(x, get=self.kernel)
        timings = {"kernel": 0.0}
        net, get = self.network, self.kernel
        budget = linalg.resolve_memory(self.memory)  # one budget, kernel tiles included
        checked = []

        def make_tile(rows, cols):
            t0 = time.perf_counter()
            # net.kernel returns C order; the transpose of K(cols, rows) is the
            # Fortran-ordered tile K(rows, cols) that LAPACK wants, without a copy.
            tile = (net.kernel(x[rows[0]:rows[1]], get=get, memory=budget) if rows == cols
                    else net.kernel(x[cols[0]:cols[1]], x[rows[0]:rows[1]], get=get,
                                    memory=budget)).T
            timings["kernel"] += time.perf_counter() - t0
            if rows[0] == cols[0] == 0 and not checked:
                checked.append(True)  # once: the tile is made again for each jitter
                self._check_degenerate(tile)
            return tile

        ladder = jitter_ladder(self.jitter, float(np.mean(self.diag_train_)))
        t0 = time.perf_counter()
        if self.client is not None:
            self._fit_on_cluster(x, ladder)
        else:
            self.factor_ = linalg.cholesky(
                make_tile, n, jitters=ladder, memory=budget, reserve=self._reserve(n, y2),
                tile=self.tile, scratch=self.scratch, fingerprint=self._fingerprint(x, ladder),
                resume=self.resume, progress=self.progress)
        timings["cholesky"] = time.perf_counter() - t0 - timings["kernel"]
        t0 = time.perf_counter()
        self.alpha_ = self.factor_.solve(y2)
        timings["solve"] = time.perf_counter() - t0
        self.y_train_ = y2
        self.jitter_ = self.factor_.jitter
        self.timings_ = timings
        return self

    def _fit_on_cluster(self, x, ladder):
        """The factor on the Dask cluster of ``self.client``: kernel tiles and the blocked
        Cholesky in one task graph (nngp_lut.cluster)."""
        from . import cluster

        self._check_degenerate(self.network.kernel(x[:DEGENERATE_CHECK_POINTS],
                                                   get=self.kernel))
        self._scattered = cluster.scatter_once(self.client, (self.network, x))
        self.factor_ = cluster.cholesky(
            self.client, cluster.kernel_tile, (*self._scattered, None, self.kernel),
            x.shape[0], jitters=ladder, tile=self.tile, scratch=self.scratch,
            fingerprint=self._fingerprint(x, ladder), resume=self.resume,
            progress=self.progress)

    def _test_kernel(self, x, get, budget):
        """K(x, x_train) (block, n): in process, or as tiles on the cluster."""
        if self.client is None:
            return self.network.kernel(x, self.x_train_, get=get, memory=budget)
        from . import cluster

        kinds = (get,) if isinstance(get, str) else get
        k = tuple(cluster.kernel(self.client, self.network, x, self.x_train_, get=kind,
                                 tile=self.tile or linalg.DEFAULT_TILE,
                                 scattered=self._scattered) for kind in kinds)
        return k[0] if isinstance(get, str) else k

    def _check_degenerate(self, tile):
        """Warn (DegenerateKernelWarning) when the kernel of the first training inputs has
        collapsed: all their correlations equal to within DEGENERATE_SPREAD."""
        k = tile[:DEGENERATE_CHECK_POINTS, :DEGENERATE_CHECK_POINTS]
        if k.shape[0] < 2:
            return
        s = 1.0 / np.sqrt(np.diag(k))
        corr = k * s[:, None] * s[None, :]
        off = corr[~np.eye(k.shape[0], dtype=bool)]
        spread = float(off.max() - off.min())
        if spread <= DEGENERATE_SPREAD:
            warnings.warn(
                f"the kernel has collapsed at depth {self.network.depth}: the "
                f"correlations of the first {k.shape[0]} training inputs all equal "
                f"{float(off.mean()):.12g} (spread {spread:.1e}), the fixed point of the "
                "recursion, so the predictions no longer depend on the inputs; use a "
                "smaller depth (see the order-to-chaos line of nngp-lut plot phase)",
                DegenerateKernelWarning, stacklevel=4)

    def _reserve(self, n, y2):
        """Bytes kept beside the factor: targets, solves and a test-kernel block."""
        return 8 * n * (4 * y2.shape[1] + 2 * self._block_rows(n))

    def _block_rows(self, n):
        budget = linalg.resolve_memory(self.memory)
        return int(max(64, min(4096, 0.1 * budget / (16 * n))))

    def _fingerprint(self, x, ladder):
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(x).tobytes())
        for layer in self.network.layer.layers():
            if isinstance(layer, Activation):
                h.update(repr(layer.key).encode())
                h.update(np.ascontiguousarray(layer.table.f_normalized).tobytes())
        h.update(repr(self.network).encode())
        h.update(repr((sorted(self.settings.items()), ladder)).encode())
        return h.hexdigest()[:16]

    def predict(self, x, return_variance=False):
        """Posterior mean (n_test, outputs) and, on request, the predictive variance of the
        latent function at each test input (n_test,)."""
        if self.factor_ is None:
            raise RuntimeError("call fit() first")
        x = self._prepare(x, "x_test")
        if x.shape[1:] != self.x_train_.shape[1:]:
            if x.ndim == 2:
                raise DataError(f"x_test has {x.shape[1]} features but x_train has "
                                f"{self.x_train_.shape[1]}")
            raise DataError(f"x_train has inputs of shape {self.x_train_.shape[1:]} but "
                            f"x_test {x.shape[1:]}")
        n, m = self.x_train_.shape[0], x.shape[0]
        mean = np.empty((m, self.alpha_.shape[1]))
        var = np.empty(m) if return_variance else None
        prior = self.network.diagonal(x) if return_variance else None
        ntk = self.kernel == "ntk"
        get = ("ntk", "nngp") if ntk and return_variance else self.kernel
        rows = self._block_rows(n)
        budget = linalg.resolve_memory(self.memory)
        for r0 in range(0, m, rows):
            r1 = min(m, r0 + rows)
            k = self._test_kernel(x[r0:r1], get, budget)  # (block, n)
            mean[r0:r1] = (k[0] if isinstance(get, tuple) else k) @ self.alpha_
            if return_variance and not ntk:
                v = self.factor_.solve_lower(k.T)
                var[r0:r1] = prior[r0:r1] - np.einsum("ij,ij->j", v, v)
            elif return_variance:
                theta, nngp = k
                a = self.factor_.solve(theta.T)  # (n, block)
                var[r0:r1] = (prior[r0:r1] + np.einsum("ij,ij->j", a, self._nngp_train_dot(a))
                              - 2.0 * np.einsum("ji,ij->j", nngp, a))
            if self.progress:
                self.progress("predict", r1, m)
        return (mean, var) if return_variance else mean

    def _nngp_train_dot(self, a):
        """K_{D,D} a, with K_{D,D} the NNGP of the training inputs made in row panels."""
        x, out = self.x_train_, np.empty_like(a)
        rows = self._block_rows(x.shape[0])
        for r0 in range(0, x.shape[0], rows):
            r1 = min(x.shape[0], r0 + rows)
            out[r0:r1] = self.network.kernel(x[r0:r1], x) @ a
        return out

    def log_marginal_likelihood(self):
        """log p(t | X) = -1/2 t^T alpha - 1/2 log det(K + jitter I) - n/2 log 2 pi, summed
        over the outputs (Rasmussen & Williams, eq. 2.30).  NNGP only: the NTK is not a
        prior covariance."""
        if self.kernel != "nngp":
            raise ParameterError("the marginal likelihood is defined for kernel='nngp' only")
        return log_evidence(self.y_train_, self.alpha_, self.factor_.logdet())

    def close(self):
        """Delete the factor's tiles (the scratch directory when out of core)."""
        if self.factor_ is not None:
            self.factor_.remove()
            self.factor_ = None

    def keep(self, exc=None):
        """Keep the factor's tiles (out of core) for a later ``resume=True`` and release
        their lock; with ``exc``, note on it what was kept."""
        store = None if self.factor_ is None else self.factor_.store
        if isinstance(store, linalg.DiskTiles):
            if exc is not None:
                exc.add_note(linalg.kept_note(store, len(self.factor_.bounds),
                                              len(self.factor_.bounds)))
            store.close()
        self.factor_ = None


@dataclass
class Result:
    """Metrics and predictions of :func:`evaluate`."""

    n_train: int
    n_test: int
    mse: float
    jitter: float
    timings: dict
    mean: np.ndarray
    accuracy: float = None  # classification only
    predicted: np.ndarray = None  # predicted class labels (classification)
    variance: np.ndarray = None
    extra: dict = field(default_factory=dict)

    def summary(self):
        """The scalar results as a dict (for JSON)."""
        out = {"n_train": self.n_train, "n_test": self.n_test, "mse": self.mse,
               "jitter": self.jitter, "timings": self.timings}
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        return {**out, **self.extra}


def log_evidence(targets: np.ndarray, alpha: np.ndarray, logdet: float) -> float:
    """log N(t | 0, K) summed over the outputs of targets t (n, outputs), from
    alpha = K^{-1} t and log det K (Rasmussen & Williams, eq. 2.30)."""
    n, outputs = targets.shape
    return (-0.5 * float(np.sum(targets * alpha))
            - 0.5 * outputs * (logdet + n * math.log(2 * math.pi)))


def one_hot(labels: ArrayLike, n_classes: int) -> np.ndarray:
    """Rows of the identity: one-hot targets for integer labels."""
    return np.eye(n_classes)[labels]


def regression_targets(y_train: ArrayLike, y_other: ArrayLike
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The (n, outputs) targets the GP regresses on, for the training set and another set:
    integer labels become one-hot rows minus the training mean (-0.1 / 0.9 for ten balanced
    classes); float targets are used as they are."""
    y_train, y_other = np.asarray(y_train), np.asarray(y_other)
    if is_labels(y_train):
        n_classes = int(max(y_train.max(), y_other.max())) + 1
        offset = one_hot(y_train, n_classes).mean(axis=0)
        return one_hot(y_train, n_classes) - offset, one_hot(y_other, n_classes) - offset
    return (y_train.reshape(len(y_train), -1).astype(np.float64),
            y_other.reshape(len(y_other), -1).astype(np.float64))


def evaluate(x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike, y_test: ArrayLike, *,
             phi: PhiLike = "relu", depth: int | None = None, weight_var: float | None = None,
             bias_var: float | None = None, network: Network | Layer | None = None,
             kernel: str = "nngp",
             standardize: bool = False, jitter: str | float = "absolute",
             variance: bool = False, memory: int | str = "auto", scratch: PathLike | None = None,
             resume: bool = False, progress: Callable | None = None,
             client: Client | None = None) -> Result:
    """Fit on the training set and score the test set, with the fully connected network
    (phi, depth, weight_var, bias_var) or any ``network``, and the NNGP or NTK ``kernel``.

    Integer labels are classification: regression on one-hot targets minus the training mean
    (-0.1 / 0.9 for ten balanced classes), accuracy of the argmax of the posterior mean, and
    MSE in that shifted space (mean over test points of the mean over outputs).  Float
    targets are regression (MSE only).  With a Dask ``client`` the work runs on its cluster
    (see :class:`NNGPRegressor`).
    """
    t_start = time.perf_counter()
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    classification = is_labels(y_train)
    if classification and np.unique(y_train).size == 1:
        warnings.warn(f"the training labels hold a single class ({int(y_train[0])}): every "
                      "prediction is that class, so the accuracy says nothing about the model",
                      OneClassWarning, stacklevel=2)
    t_train, t_test = regression_targets(y_train, y_test)
    if network is None and None in (depth, weight_var, bias_var):
        raise ParameterError("give network=, or depth, weight_var and bias_var")
    gp = NNGPRegressor(phi, depth, weight_var, bias_var, network=network, kernel=kernel,
                       standardize=standardize, jitter=jitter, memory=memory,
                       scratch=scratch, resume=resume, progress=progress, client=client)
    try:
        gp.fit(x_train, t_train)
        t0 = time.perf_counter()
        pred = gp.predict(x_test, return_variance=variance)
        t_predict = time.perf_counter() - t0
    except BaseException as exc:
        # Out of core, a finished factorisation is kept for resume=True (Ctrl-C, full disk).
        gp.keep(exc)
        raise
    gp.close()
    mean, var = pred if variance else (pred, None)
    timings = {**gp.timings_, "predict": t_predict, "total": time.perf_counter() - t_start}
    result = Result(n_train=len(t_train), n_test=len(t_test),
                    mse=float(np.mean((mean - t_test) ** 2)), jitter=gp.jitter_,
                    timings=timings, mean=mean, variance=var)
    if classification:
        result.predicted = np.argmax(mean, axis=1)
        result.accuracy = float(np.mean(result.predicted == y_test))
    return result
