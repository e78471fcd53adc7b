"""Trained finite networks against the infinite-width GPs (Lee et al. 2018, Figure 1 and
Table 1's "NN" rows; Lee et al. 2019, the linearised dynamics).

:func:`train` trains the finite network of any architecture of the layer algebra
(:mod:`nngp_lut.kernel.layers`) on the squared loss, with an optimiser of optax (Adam or
plain SGD, full batch or minibatch), in float64 with JAX.  The network is
:func:`nngp_lut.finite_network.finite_network`'s, the one that :mod:`nngp_lut.montecarlo`
samples, drawn from the same key: ``train(net, width, ..., seed=s)`` starts from draw 0 of
``empirical_kernels(net, ..., width=width, seed=s)`` (NTK or standard parameterisation, as
each Dense declares).  Every Dense without a declared width gets ``width`` units, except a
final readout Dense, which gets one unit per target.

Targets are those of the GP (:func:`nngp_lut.gp.regression_targets`): integer labels become
one-hot rows minus their training mean (-0.1 / 0.9 for ten balanced classes), and the
reported MSE is the GP's: the mean over examples of the mean over outputs of the squared
error.  The loss minimised is that MSE on the training set (or a minibatch).

:func:`compare` trains networks at several widths and seeds and scores the NNGP and NTK-GP
posterior means (:func:`nngp_lut.gp.evaluate`) on the same split; ``nngp-lut compare``
prints and writes its rows, ``nngp-lut plot compare`` draws Figure 1 from them.

:func:`linearization` is the NTK's prediction of gradient descent (Lee et al. 2019, eq. 16):
the output of a network trained by full-batch gradient descent, its initial output
subtracted (``centre=True``: f(x; theta) - f(x; theta_0), whose value at initialisation is
exactly 0), against the NTK-GP mean after the same number of steps,
Theta_{*D} Theta_{DD}^{-1} (I - (I - c Theta_{DD})^k) Y, with Theta the infinite-width NTK
and c = 2 lr / (n outputs) the step of the linearised dynamics of this loss.

Randomness: the initial parameters come from ``draw_key(seed, width, 0)`` (the sampler's
draw 0); the minibatch order from ``numpy.random.default_rng([seed, width])``.
The same seed gives the same numbers, bit for bit, on the same machine and versions.

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, Section 3, Figure 1
and Table 1.
Jacot et al., "Neural Tangent Kernel", NeurIPS 2018.
Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
Descent", NeurIPS 2019, eqs. 9-11 and 16.
"""

import dataclasses
import functools
import math
import time
import warnings

import numpy as np

try:
    import jax
    import jax.numpy as jnp
    import optax
except ImportError as exc:  # the infinite-width engine never needs JAX
    raise ImportError('nngp_lut.finite needs JAX and optax: pip install "nngp-lut[finite]" '
                      f'(import failed: {exc})') from exc

from .data import is_labels
from .errors import DataError, NNGPWarning, ParameterError
from .gp import evaluate as gp_evaluate
from .gp import one_hot
from .kernel import Network
from .finite_network import FiniteNetwork, as_inputs, as_layer, draw_key, finite_network, x64
from .kernel.layers import ArchitectureError
from .montecarlo import loglog_slope
from .plots import compare_summary as summarize

__all__ = ["COMPARE_COLUMNS", "OPTIMIZERS", "TrainedNetwork", "TrainingDivergedWarning",
           "compare", "linearization", "ntk_gp_mean_at_step", "summarize", "train"]

#: The optimisers by name (optax): plain (minibatch) SGD and Adam.
OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}
#: Rows per forward pass when predicting (bounds the activations held at once).
PREDICT_ROWS = 2048
#: A last block of rows is padded to a multiple of this (bounds the compiled shapes).
PAD_ROWS = 512
#: Default number of evaluations without improvement before early stopping.
DEFAULT_PATIENCE = 10


class TrainingDivergedWarning(NNGPWarning):
    """The training loss became NaN or infinite (learning rate too large)."""


# --- the network ----------------------------------------------------------------------------
def _to_numpy(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), tree)


@functools.lru_cache(maxsize=32)
def _forward(net):
    """Jitted f(params, x) of a FiniteNetwork (kept per network: they are hashable)."""
    return jax.jit(net.apply)


def _outputs(net, params, x):
    """f(params, x) in row blocks of PREDICT_ROWS, as float64 numpy (inside x64).  A short
    block is padded with zero rows to a multiple of PAD_ROWS: few distinct shapes, so few
    compilations (each costs seconds)."""
    forward = _forward(net)
    params = jax.tree_util.tree_map(jnp.asarray, params)  # on the device once, not per block
    blocks = []
    for r in range(0, x.shape[0], PREDICT_ROWS):
        block = x[r:r + PREDICT_ROWS]
        rows = block.shape[0]
        padded = min(PREDICT_ROWS, -(-rows // PAD_ROWS) * PAD_ROWS)
        if padded != rows:
            block = np.concatenate([block, np.zeros((padded - rows,) + block.shape[1:])])
        blocks.append(np.asarray(forward(params, jnp.asarray(block)))[:rows])
    return np.concatenate(blocks)


def _optimizer_key(optimizer, learning_rate):
    """A hashable description of the optimiser: (name, learning rate), or the optax
    GradientTransformation itself."""
    if not isinstance(optimizer, str):
        return optimizer
    if optimizer not in OPTIMIZERS:
        raise ParameterError(f"optimizer must be one of {', '.join(OPTIMIZERS)} (or an optax "
                             f"GradientTransformation), got {optimizer!r}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ParameterError(f"learning_rate must be a finite number > 0, such as 1e-3; got "
                             f"{learning_rate}")
    return (optimizer, float(learning_rate))


def _transformation(key):
    return OPTIMIZERS[key[0]](key[1]) if isinstance(key, tuple) else key


@functools.lru_cache(maxsize=32)
def _chunk_function(net, optimizer_key):
    """A jitted ``run(params, state, x, t, f0, batches) -> (params, state, losses)`` doing
    one optimiser step per row of ``batches`` (example indices) with lax.scan (kept for
    the next network of the same architecture and optimiser: one compilation per shape)."""
    transformation = _transformation(optimizer_key)

    def loss(params, xb, tb, f0b):
        return jnp.mean((net.apply(params, xb) - f0b - tb) ** 2)

    def run(params, state, x, t, f0, batches):
        def step(carry, rows):
            p, s = carry
            value, grad = jax.value_and_grad(loss)(p, x[rows], t[rows], f0[rows])
            updates, s = transformation.update(grad, s, p)
            return (optax.apply_updates(p, updates), s), value

        (params, state), losses = jax.lax.scan(step, (params, state), batches)
        return params, state, losses

    return jax.jit(run)


# --- targets ------------------------------------------------------------------------------
def _targets(y, n, name, n_classes=None, offset=None):
    """(targets, labels or None, n_classes, offset): the GP's regression targets."""
    y = np.asarray(y)
    if y.shape[0] != n:
        raise DataError(f"{y.shape[0]} targets {name} for {n} inputs")
    if is_labels(y):
        labels = y.reshape(-1).astype(np.int64)
        if labels.min() < 0:
            raise DataError(f"{name} has a negative class label")
        if n_classes is None:
            n_classes = int(labels.max()) + 1
        elif labels.max() >= n_classes:
            raise DataError(f"{name} has class {labels.max()} but the training labels have "
                            f"{n_classes} classes")
        onehot = one_hot(labels, n_classes)
        if offset is None:
            offset = onehot.mean(axis=0)  # the GP's: minus the training mean
        return onehot - offset, labels, n_classes, offset
    t = y.reshape(n, -1).astype(np.float64)
    if not np.all(np.isfinite(t)):
        raise DataError(f"{name} has a NaN or inf value")
    return t, None, None, None


def _scores(outputs, targets, labels):
    mse = float(np.mean((outputs - targets) ** 2))
    accuracy = (float(np.mean(np.argmax(outputs, axis=1) == labels))
                if labels is not None else math.nan)
    return mse, accuracy


@dataclasses.dataclass
class TrainedNetwork:
    """A network trained by :func:`train`.

    Attributes
    ----------
    layer : Layer
        The finite network (every width declared).
    width, seed : int
    params, initial_params
        The parameters kept (the best on the validation set, or the last ones without one)
        and those of initialisation (pytrees of float64 numpy arrays).
    centre : bool
        Whether the model is f(x; params) - f(x; initial_params).
    history : list of dict
        Per evaluation: step, train_loss (mean over the steps since the last evaluation),
        val_mse and val_accuracy (NaN without a validation set).
    best_step, steps : int
        The step whose parameters were kept, and the steps run.
    stopped_early, diverged : bool
    seconds : float
        Wall time of the training (compilation included).
    n_classes : int or None
        Classes of the labels (None for float targets).
    offset : ndarray or None
        The training mean subtracted from the one-hot targets.
    """

    layer: object
    width: int
    seed: int
    params: object
    initial_params: object
    centre: bool
    history: list
    best_step: int
    steps: int
    stopped_early: bool
    diverged: bool
    seconds: float
    n_classes: int | None
    offset: np.ndarray | None

    def outputs(self, x, params=None):
        """The network's outputs (n, outputs) at ``x`` (the kept parameters, or
        ``params``), minus the initial ones when ``centre``."""
        x = as_inputs(x, "x")
        net = FiniteNetwork(self.layer)
        with x64():
            f = _outputs(net, self.params if params is None else params, x)
            if self.centre:
                f = f - _outputs(net, self.initial_params, x)
        return f

    def score(self, x, y):
        """{"mse", "accuracy"} on (x, y), with the training targets' encoding (accuracy NaN
        for float targets)."""
        x = as_inputs(x, "x")
        t, labels, _, _ = _targets(y, x.shape[0], "y", self.n_classes, self.offset)
        mse, accuracy = _scores(self.outputs(x), t, labels)
        return {"mse": mse, "accuracy": accuracy}


def _batches(rng, n, batch_size, count):
    """``count`` rows of example indices: consecutive slices of a stream of random
    permutations (every example once per epoch), or all examples for full batch."""
    if batch_size is None or batch_size >= n:
        return np.broadcast_to(np.arange(n), (count, n))
    out = np.empty((count, batch_size), dtype=np.int64)
    for i in range(count):
        while len(rng.pending) < batch_size:
            rng.pending = np.concatenate([rng.pending, rng.generator.permutation(n)])
        out[i], rng.pending = rng.pending[:batch_size], rng.pending[batch_size:]
    return out


class _Stream:
    def __init__(self, seed, width):
        self.generator = np.random.default_rng([int(seed), int(width)])
        self.pending = np.zeros(0, dtype=np.int64)


def train(network, width, x, y, *, x_val=None, y_val=None, optimizer="adam",
          learning_rate=1e-3, steps=1000, batch_size=None, eval_every=None, patience=None,
          monitor=None, centre=False, seed=0, progress=None):
    """Train the finite network of an architecture on the squared loss.

    Parameters
    ----------
    network : Layer or Network
        Any architecture of the layer algebra that :mod:`nngp_lut.finite_network` can
        instantiate; a final Dense without a width gets one unit per target.
    width : int
        Units of every other Dense without a declared width.
    x, y : array_like
        Training inputs (n, d), used as they are (standardise them first if the network
        expects it), and integer labels (n,) or float targets (n,) / (n, outputs).
    x_val, y_val : array_like, optional
        A validation set for early stopping: the parameters kept are those of the best
        evaluation, and training stops after ``patience`` evaluations without improvement.
    optimizer : {"adam", "sgd"} or optax.GradientTransformation
    learning_rate : float
        Of the named optimiser.
    steps : int
        Most optimiser steps.
    batch_size : int, optional
        Examples per step, drawn epoch by epoch without replacement; None: full batch.
    eval_every : int, optional
        Steps between evaluations (default: one epoch, or 10 steps at full batch).
    patience : int, optional
        Evaluations without improvement before stopping (default DEFAULT_PATIENCE; only
        with a validation set).
    monitor : {"accuracy", "mse"}, optional
        What early stopping watches (default: accuracy for labels, mse otherwise).
    centre : bool
        Train f(x; theta) - f(x; theta_0) (zero at initialisation; Lee et al. 2019's
        linearised dynamics then have no initial-function term).
    seed : int
    progress : callable, optional
        ``progress(done_steps, steps)`` after each evaluation.

    Returns
    -------
    TrainedNetwork

    References
    ----------
    Lee et al. 2018, Section 3 (the finite networks of Table 1 and Figure 1: squared loss
    on the one-hot targets).
    """
    start = time.perf_counter()
    x = as_inputs(x, "x")
    n = x.shape[0]
    t, labels, n_classes, offset = _targets(y, n, "y")
    if int(width) != width or width < 1:
        raise ParameterError(f"width must be a positive integer, got {width}")
    if int(steps) != steps or steps < 0:
        raise ParameterError(f"steps must be a non-negative integer, got {steps}")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ParameterError(f"batch_size must be a positive integer, got {batch_size}")
    full = batch_size is None or batch_size >= n
    if eval_every is None:
        eval_every = 10 if full else math.ceil(n / batch_size)
    if int(eval_every) != eval_every or eval_every < 1:
        raise ParameterError(f"eval_every must be a positive integer, got {eval_every}")
    has_val = x_val is not None
    if has_val != (y_val is not None):
        raise ParameterError("give x_val and y_val together")
    if has_val:
        x_val = as_inputs(x_val, "x_val")
        if x_val.shape[1:] != x.shape[1:]:
            raise DataError(f"x has inputs of shape {x.shape[1:]} but x_val {x_val.shape[1:]}")
        t_val, labels_val, _, _ = _targets(y_val, x_val.shape[0], "y_val", n_classes, offset)
    monitor = monitor or ("accuracy" if labels is not None else "mse")
    if monitor not in ("accuracy", "mse") or (monitor == "accuracy" and labels is None):
        raise ParameterError("monitor must be 'mse', or 'accuracy' for integer labels")
    patience = DEFAULT_PATIENCE if patience is None else int(patience)
    optimizer_key = _optimizer_key(optimizer, learning_rate)
    net = finite_network(network, int(width), outputs=t.shape[1])
    stream = _Stream(seed, width)

    with x64():
        params, out_shape = net.init(draw_key(seed, width), x.shape[1:])
        if tuple(out_shape) != (t.shape[1],):
            raise ArchitectureError(f"the network has outputs of shape {tuple(out_shape)} but "
                                    f"there are {t.shape[1]} targets per input: end it in a "
                                    "Dense without a width (it gets one unit per target), "
                                    "after a Flatten or GlobalAvgPool for images")
        initial = params
        f0 = _outputs(net, params, x) if centre else np.zeros_like(t)
        f0_val = _outputs(net, params, x_val) if centre and has_val else 0.0
        run = _chunk_function(net, optimizer_key)
        state = _transformation(optimizer_key).init(params)
        xj, tj, f0j = jnp.asarray(x), jnp.asarray(t), jnp.asarray(f0)
        history, best, done, bad = [], None, 0, 0
        best_params, best_step, diverged, stopped = params, 0, False, False
        while done < steps:
            count = min(int(eval_every), int(steps) - done)
            batches = jnp.asarray(_batches(stream, n, None if full else batch_size, count))
            params, state, losses = run(params, state, xj, tj, f0j, batches)
            done += count
            train_loss = float(np.mean(np.asarray(losses)))
            row = {"step": done, "train_loss": train_loss, "val_mse": math.nan,
                   "val_accuracy": math.nan}
            if not math.isfinite(train_loss):
                diverged = True
                history.append(row)
                warnings.warn(f"training diverged at step {done} (loss {train_loss}): lower "
                              "the learning rate", TrainingDivergedWarning, stacklevel=2)
                break
            if has_val:
                row["val_mse"], row["val_accuracy"] = _scores(
                    _outputs(net, params, x_val) - f0_val, t_val, labels_val)
                value = row["val_accuracy"] if monitor == "accuracy" else -row["val_mse"]
                if best is None or value > best:
                    best, best_params, best_step, bad = value, params, done, 0
                else:
                    bad += 1
            else:
                best_params, best_step = params, done
            history.append(row)
            if progress:
                progress(done, int(steps))
            if has_val and bad >= patience:
                stopped = True
                break
        result = TrainedNetwork(
            layer=net.layer, width=int(width), seed=int(seed), params=_to_numpy(best_params),
            initial_params=_to_numpy(initial), centre=bool(centre), history=history,
            best_step=best_step, steps=done, stopped_early=stopped, diverged=diverged,
            seconds=0.0, n_classes=n_classes, offset=offset)
    result.seconds = time.perf_counter() - start
    return result


# --- finite networks beside the GPs (Figure 1) --------------------------------------------
#: Columns of :func:`compare`'s rows (and of ``nngp-lut compare``'s CSV).
COMPARE_COLUMNS = ("model", "width", "seed", "steps", "best_step", "stopped_early",
                   "diverged", "val_accuracy", "val_mse", "test_accuracy", "test_mse",
                   "seconds", "arch")


def compare(network, x_train, y_train, x_val, y_val, x_test, y_test, *, widths, seeds=3,
            gp=True, jitter="absolute", progress=None, **training):
    """Train the finite networks of an architecture at each width and seed, and score the
    NNGP and the NTK-GP posterior means on the same split (Lee et al. 2018, Figure 1).

    Parameters
    ----------
    network : Layer or Network
    x_train, y_train, x_val, y_val, x_test, y_test : array_like
        The split, used as it is (standardise the inputs first if the network expects it);
        the validation set drives the networks' early stopping.
    widths : sequence of int
    seeds : int
        Networks per width (seeds 0 .. seeds - 1).
    gp : bool
        Also score the NNGP and NTK-GP (:func:`nngp_lut.gp.evaluate`, ``jitter`` rule).
    progress : callable, optional
        ``progress(stage, done, total)``: stage "train" counts networks, then "nngp" and
        "ntk" the GPs' own stages.
    **training
        Keywords of :func:`train` (optimizer, learning_rate, steps, batch_size, eval_every,
        patience, monitor, centre).

    Returns
    -------
    list of dict
        One row per network (model "network") and per GP (model "nngp" / "ntk", width and
        seed NaN), with the columns COMPARE_COLUMNS.
    """
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1 or len(set(widths)) != len(widths):
        raise ParameterError(f"widths must be distinct positive integers, got {widths}")
    if int(seeds) != seeds or seeds < 1:
        raise ParameterError(f"seeds must be a positive integer, got {seeds}")
    layer = as_layer(network)
    arch = repr(layer)
    rows, total, done = [], len(widths) * int(seeds), 0
    for width in widths:
        for seed in range(int(seeds)):
            net = train(layer, width, x_train, y_train, x_val=x_val, y_val=y_val, seed=seed,
                        **training)
            test = net.score(x_test, y_test)
            last = next((h for h in reversed(net.history) if h["step"] == net.best_step),
                        {"val_accuracy": math.nan, "val_mse": math.nan})
            rows.append({"model": "network", "width": width, "seed": seed, "steps": net.steps,
                         "best_step": net.best_step, "stopped_early": net.stopped_early,
                         "diverged": net.diverged, "val_accuracy": last["val_accuracy"],
                         "val_mse": last["val_mse"], "test_accuracy": test["accuracy"],
                         "test_mse": test["mse"], "seconds": net.seconds, "arch": arch})
            done += 1
            if progress:
                progress("train", done, total)
    if gp:
        for kind in ("nngp", "ntk"):
            stage = progress and (lambda s, d, t, kind=kind: progress(f"{kind} {s}", d, t))
            res = gp_evaluate(x_train, y_train, x_test, y_test, network=Network(layer),
                              kernel=kind, jitter=jitter, progress=stage)
            rows.append({"model": kind, "width": math.nan, "seed": math.nan, "steps": 0,
                         "best_step": 0, "stopped_early": False, "diverged": False,
                         "val_accuracy": math.nan, "val_mse": math.nan,
                         "test_accuracy": math.nan if res.accuracy is None else res.accuracy,
                         "test_mse": res.mse, "seconds": res.timings["total"], "arch": arch})
    return rows


# --- the NTK's prediction of gradient descent ---------------------------------------------
def ntk_gp_mean_at_step(theta_train, theta_test_train, targets, rate, steps):
    """The NTK-GP mean after ``steps`` steps of full-batch gradient descent on the mean
    squared error (Lee et al. 2019, eq. 16, in discrete time):

        mu_k(x*) = Theta_{*D} Theta_{DD}^{-1} (I - (I - c Theta_{DD})^k) Y,

    c = 2 lr / (n m) for n training examples and m outputs (the gradient of
    mean((f - Y)^2) is 2 (f - Y) / (n m)); ``rate`` is c.  ``steps=inf`` gives the
    converged mean Theta_{*D} Theta_{DD}^{-1} Y.  Computed in the eigenbasis of
    Theta_{DD}: (1 - (1 - c lambda)^k) / lambda stays exact for small lambda."""
    lam, vec = np.linalg.eigh(np.asarray(theta_train, dtype=np.float64))
    if lam.min() <= 0:
        raise ParameterError("the training NTK is not positive definite")
    if math.isinf(steps):
        gain = 1.0 / lam
    else:
        if np.any(rate * lam >= 2.0):
            raise ParameterError(f"gradient descent diverges: rate * lambda_max = "
                                 f"{rate * lam.max():.3g} >= 2")
        shrink = 1.0 - rate * lam  # per step, in each eigendirection
        with np.errstate(invalid="ignore", divide="ignore"):
            gain = np.where(shrink > 0.0,
                            -np.expm1(steps * np.log1p(-np.minimum(rate * lam, 1.0))) / lam,
                            (1.0 - shrink ** steps) / lam)
    return theta_test_train @ (vec @ (gain[:, None] * (vec.T @ targets)))


def linearization(network, x, y, x_test, *, widths, seeds=2, steps=1000, rate=None,
                  progress=None):
    """How close full-batch gradient descent on wide networks comes to the NTK-GP mean.

    For each width and seed, trains the centred network f(x; theta) - f(x; theta_0) by
    plain gradient descent (optax.sgd, full batch) for ``steps`` steps, and measures the
    relative L2 distance ||f_k(X*) - mu_k(X*)|| / ||mu_k(X*)|| of its test outputs to the
    NTK-GP mean after the same steps (:func:`ntk_gp_mean_at_step`, the infinite-width NTK of
    :meth:`Network.kernel`).  Centring removes the initial function, whose contribution
    f_0(x*) - Theta_{*D} Theta^{-1} f_0(D) to one network does not vanish with width (its
    mean over initialisations does); what is left differs from mu_k by O(1/sqrt(width)).

    Parameters
    ----------
    network : Layer or Network
        In the NTK parameterisation (the rate of the linearised dynamics is then
        width-independent).
    x, y, x_test : array_like
        Training inputs, labels or targets, and test inputs (used as they are).
    widths : sequence of int
    seeds : int
    steps : int
    rate : float, optional
        c of :func:`ntk_gp_mean_at_step` (lr = c n m / 2); default 1 / lambda_max(Theta_DD),
        half the stability limit 2 / lambda_max.
    progress : callable, optional
        ``progress(done, total)`` in networks.

    Returns
    -------
    rows : list of dict
        Per width: width, seeds, distance (mean over seeds), distance_std, distance_inf (to
        the converged mean Theta_{*D} Theta_{DD}^{-1} Y), train_mse (mean over seeds).
    summary : dict
        slope (log distance against log width), slope_inf, learning_rate, rate, steps,
        mean_gap (||mu_k - mu_inf|| / ||mu_inf||: how far the NTK-GP itself is from
        convergence after ``steps`` steps).

    References
    ----------
    Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
    Descent", NeurIPS 2019, eqs. 9-11 and 16, Figure 2.
    """
    layer = as_layer(network)
    x = as_inputs(x, "x")
    x_test = as_inputs(x_test, "x_test")
    t, _, _, _ = _targets(y, x.shape[0], "y")
    n, m = t.shape
    net = Network(layer)
    theta = net.kernel(x, get="ntk")
    theta_star = net.kernel(x_test, x, get="ntk")
    lam_max = float(np.linalg.eigvalsh(theta)[-1])
    rate = 1.0 / lam_max if rate is None else float(rate)
    lr = rate * n * m / 2.0
    mu = ntk_gp_mean_at_step(theta, theta_star, t, rate, steps)
    mu_inf = ntk_gp_mean_at_step(theta, theta_star, t, rate, math.inf)
    widths = [int(w) for w in widths]
    rows, done = [], 0
    for width in widths:
        dist, dist_inf, losses = [], [], []
        for seed in range(int(seeds)):
            trained = train(layer, width, x, y, optimizer="sgd", learning_rate=lr,
                            steps=steps, batch_size=None, eval_every=max(1, steps // 10),
                            centre=True, seed=seed)
            f = trained.outputs(x_test)
            dist.append(np.linalg.norm(f - mu) / np.linalg.norm(mu))
            dist_inf.append(np.linalg.norm(f - mu_inf) / np.linalg.norm(mu_inf))
            losses.append(trained.history[-1]["train_loss"])
            done += 1
            if progress:
                progress(done, len(widths) * int(seeds))
        rows.append({"width": width, "seeds": int(seeds), "distance": float(np.mean(dist)),
                     "distance_std": float(np.std(dist)),
                     "distance_inf": float(np.mean(dist_inf)),
                     "train_mse": float(np.mean(losses))})
    summary = {"rate": rate, "learning_rate": lr, "steps": int(steps),
               "mean_gap": float(np.linalg.norm(mu - mu_inf) / np.linalg.norm(mu_inf)),
               "slope": (loglog_slope(widths, [r["distance"] for r in rows])
                         if len(widths) > 1 else math.nan),
               "slope_inf": (loglog_slope(widths, [r["distance_inf"] for r in rows])
                             if len(widths) > 1 else math.nan)}
    return rows, summary
