"""A scikit-learn kernel: the NNGP kernel as a ``sklearn.gaussian_process`` kernel.

Requires scikit-learn (``pip install "nngp-lut[sklearn]"``).  Hyperparameters weight_var and
bias_var are tuned by GaussianProcessRegressor in log space like any other kernel; their
gradient is taken by central differences in log space (step LOG_STEP), since the recursion
through a table has no closed-form derivative in the variances.
"""

import numpy as np

from .errors import MissingDependency

try:
    from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
except ImportError:
    raise MissingDependency('nngp_lut.sklearn needs scikit-learn: pip install '
                            '"nngp-lut[sklearn]"') from None

from .kernel import nngp_diag, nngp_kernel  # noqa: E402

__all__ = ["NNGPKernel", "LOG_STEP"]

#: Step in log(weight_var), log(bias_var) of the finite-difference gradient.
LOG_STEP = 1e-4


class NNGPKernel(Kernel):
    """NNGP (or NTK) kernel of a fully connected network with ``depth`` hidden layers, or of
    any network of the layer algebra.

    Parameters
    ----------
    phi : str, Activation, Table or path
        The activation or its table (built once and cached).
    depth : int
        Hidden layers.
    weight_var, bias_var : float
        sigma_w^2 and sigma_b^2 (hyperparameters).
    weight_var_bounds, bias_var_bounds : pair of float or "fixed"
        Search bounds for the optimiser.
    network : nngp_lut.kernel.Network or Layer, optional
        Any network instead of the fully connected one; its variances are its own, so the
        kernel then has no tunable hyperparameters.
    kernel : {"nngp", "ntk"}
        Which kernel of the network.

    References
    ----------
    Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eq. (5).

    Examples
    --------
    >>> from sklearn.gaussian_process import GaussianProcessRegressor
    >>> gp = GaussianProcessRegressor(NNGPKernel("relu", depth=2), alpha=1e-6)  # doctest: +SKIP
    """

    def __init__(self, phi="relu", depth=1, weight_var=1.0, bias_var=0.1,
                 weight_var_bounds=(1e-2, 1e2), bias_var_bounds=(1e-8, 1e1), network=None,
                 kernel="nngp"):
        self.network = network
        self.kernel = kernel
        self.phi = phi
        self.depth = depth
        self.weight_var = weight_var
        self.bias_var = bias_var
        self.weight_var_bounds = weight_var_bounds
        self.bias_var_bounds = bias_var_bounds

    @property
    def hyperparameter_weight_var(self):
        return Hyperparameter("weight_var", "numeric", self._bounds(self.weight_var_bounds))

    @property
    def hyperparameter_bias_var(self):
        return Hyperparameter("bias_var", "numeric", self._bounds(self.bias_var_bounds))

    def _bounds(self, bounds):
        return "fixed" if self.network is not None else bounds

    def _net(self, w, b):
        return dict(network=self.network) if self.network is not None else dict(
            phi=self.phi, depth=self.depth, weight_var=w, bias_var=b)

    def _k(self, X, Y, w, b):
        return nngp_kernel(X, Y, get=self.kernel, **self._net(w, b))

    def __call__(self, X, Y=None, eval_gradient=False):
        X = np.atleast_2d(X)
        K = self._k(X, None if Y is None else np.atleast_2d(Y), self.weight_var, self.bias_var)
        if not eval_gradient:
            return K
        if Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        grads = []
        for hp in self.hyperparameters:  # sklearn's order of theta
            name = hp.name
            if hp.fixed:
                continue
            up = {"w": self.weight_var, "b": self.bias_var}
            dn = dict(up)
            key = name[0]
            up[key] *= np.exp(LOG_STEP)
            dn[key] *= np.exp(-LOG_STEP)
            grads.append((self._k(X, None, up["w"], up["b"]) - self._k(X, None, dn["w"], dn["b"]))
                         / (2 * LOG_STEP))
        return K, (np.dstack(grads) if grads else np.empty(K.shape + (0,)))

    def diag(self, X):
        return nngp_diag(np.atleast_2d(X), get=self.kernel,
                         **self._net(self.weight_var, self.bias_var))

    def is_stationary(self):
        return False

    def __repr__(self):
        if self.network is not None:
            return f"NNGPKernel(network={self.network!r}, kernel={self.kernel!r})"
        return (f"NNGPKernel(phi={self.phi!r}, depth={self.depth}, kernel={self.kernel!r}, "
                f"weight_var={self.weight_var:.3g}, bias_var={self.bias_var:.3g})")
