"""Activation functions: the registry of built-ins, a safe expression parser, derivatives.

An :class:`Activation` carries a Numba-compiled phi and phi', the canonical name and source
that a table records, and what the builder may exploit: declared kinks, a homogeneity degree
(phi(c u) = c^k phi(u) for c > 0, which reduces every table to its correlation axis), and an
exponential type (an entire phi of exponential type tau, such as sin, is integrated with a
uniform trapezoid rule, exact far beyond what panels can afford at large variance).

A user activation is either an expression in ``x`` (``"x*tanh(x)"``), parsed with
:mod:`ast` into a whitelist of numpy-style math and compiled, never ``eval``-ed as given;
or any Numba-jittable callable (then phi' is taken by central differences).  Expressions are
named by their normalised source, so two different activations never share a name.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from ._core.config import JIT, NUMERICAL_DERIVATIVE_STEP
from .errors import ExpressionError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Activation", "ExpressionError", "builtin_names", "from_callable", "get_activation",
           "parse_expression", "zero_function"]


@dataclass(frozen=True)
class Activation:
    """An elementwise activation phi with everything the table builder needs.

    Attributes
    ----------
    name : str
        Canonical name written to tables (``"tanh"``, ``"leaky_relu(slope=0.1)"``,
        ``"expr:x*tanh(x)"``).
    source : str
        How phi is defined, human readable (a formula or the expression itself).
    phi, dphi : numba dispatcher
        phi and its derivative; ``dphi`` is None where phi' is not a function (step).
    kinks : tuple of float
        Points where phi or phi' is not smooth, known in advance.
    degree : float or None
        Homogeneity degree k if phi(c u) = c^k phi(u) for all c > 0, else None.
    exp_type : float or None
        tau if phi is entire of exponential type tau (|phi(z)| <= C exp(tau |z|)).
    """

    name: str
    source: str
    phi: object = field(repr=False, compare=False)
    dphi: object = field(repr=False, compare=False)
    kinks: tuple = ()
    degree: float | None = None
    exp_type: float | None = None

    @property
    def has_derivative(self):
        return self.dphi is not None

    def __call__(self, x):
        """phi evaluated elementwise on an array (a convenience for plots and tests)."""
        x = np.asarray(x, dtype=np.float64)
        return np.vectorize(self.phi, otypes=[np.float64])(x)


# --- built-ins ----------------------------------------------------------------------------
# Module-level @njit functions so that Numba caches every table kernel compiled for them.

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


@njit(**JIT)
def _relu(x):
    return x if x > 0.0 else 0.0


@njit(**JIT)
def _d_relu(x):
    return 1.0 if x > 0.0 else 0.0


@njit(**JIT)
def _abs(x):
    return abs(x)


@njit(**JIT)
def _d_abs(x):
    return 1.0 if x > 0.0 else -1.0


@njit(**JIT)
def _step(x):
    return 1.0 if x > 0.0 else 0.0


@njit(**JIT)
def zero_function(x: float) -> float:
    """0 everywhere: stands in for phi' where phi' is not a function (step)."""
    return 0.0


@njit(**JIT)
def _identity(x):
    return x


@njit(**JIT)
def _one(x):
    return 1.0


@njit(**JIT)
def _tanh(x):
    return math.tanh(x)


@njit(**JIT)
def _d_tanh(x):
    t = math.tanh(x)
    return 1.0 - t * t


@njit(**JIT)
def _erf(x):
    return math.erf(x)


@njit(**JIT)
def _d_erf(x):
    return 2.0 / math.sqrt(math.pi) * math.exp(-x * x)


@njit(**JIT)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(**JIT)
def _d_sigmoid(x):
    s = _sigmoid(x)
    return s * (1.0 - s)


@njit(**JIT)
def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(**JIT)
def _gelu(x):
    return 0.5 * x * math.erfc(-x / _SQRT2)


@njit(**JIT)
def _d_gelu(x):
    return 0.5 * math.erfc(-x / _SQRT2) + x * math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@njit(**JIT)
def _silu(x):
    return x * _sigmoid(x)


@njit(**JIT)
def _d_silu(x):
    s = _sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


@njit(**JIT)
def _elu(x):
    return x if x > 0.0 else math.expm1(x)


@njit(**JIT)
def _d_elu(x):
    return 1.0 if x > 0.0 else math.exp(x)


@njit(**JIT)
def _selu(x):
    return _SELU_SCALE * (x if x > 0.0 else _SELU_ALPHA * math.expm1(x))


@njit(**JIT)
def _d_selu(x):
    return _SELU_SCALE * (1.0 if x > 0.0 else _SELU_ALPHA * math.exp(x))


@njit(**JIT)
def _sin(x):
    return math.sin(x)


@njit(**JIT)
def _cos(x):
    return math.cos(x)


@njit(**JIT)
def _neg_sin(x):
    return -math.sin(x)


def _leaky_relu(slope):
    slope = float(slope)

    @njit(**JIT)
    def phi(x):
        return x if x > 0.0 else slope * x

    @njit(**JIT)
    def dphi(x):
        return 1.0 if x > 0.0 else slope

    return phi, dphi


_BUILTINS = {
    "relu": ("max(x, 0)", _relu, _d_relu, (0.0,), 1.0, None),
    "abs": ("|x|", _abs, _d_abs, (0.0,), 1.0, None),
    "step": ("1 if x > 0 else 0 (Heaviside)", _step, None, (0.0,), 0.0, None),
    "identity": ("x", _identity, _one, (), 1.0, 0.0),
    "tanh": ("tanh(x)", _tanh, _d_tanh, (), None, None),
    "erf": ("erf(x)", _erf, _d_erf, (), None, None),
    "sigmoid": ("1 / (1 + exp(-x))", _sigmoid, _d_sigmoid, (), None, None),
    "softplus": ("log(1 + exp(x))", _softplus, _sigmoid, (), None, None),
    "gelu": ("x * Phi(x), Phi the standard normal cdf (exact, not the tanh approximation)",
             _gelu, _d_gelu, (), None, None),
    "silu": ("x / (1 + exp(-x)) (swish)", _silu, _d_silu, (), None, None),
    "elu": ("x if x > 0 else exp(x) - 1", _elu, _d_elu, (0.0,), None, None),
    "selu": (f"{_SELU_SCALE} * (x if x > 0 else {_SELU_ALPHA} * (exp(x) - 1))",
             _selu, _d_selu, (0.0,), None, None),
    "sin": ("sin(x)", _sin, _cos, (), None, 1.0),
    "cos": ("cos(x)", _cos, _neg_sin, (), None, 1.0),
}
#: Default slope of ``leaky_relu``.
LEAKY_RELU_SLOPE = 0.01


def builtin_names() -> list[str]:
    """Names of the built-in activations (``leaky_relu`` takes ``leaky_relu(slope=...)``)."""
    return sorted(list(_BUILTINS) + ["leaky_relu"])


# --- expressions ---------------------------------------------------------------------------
# Functions an expression may call, as numpy-style names mapped to what the generated Numba
# code calls.  Kept small on purpose: everything here compiles in nopython mode.
_FUNCTIONS = {
    "tanh": "math.tanh", "sinh": "math.sinh", "cosh": "math.cosh", "exp": "math.exp",
    "expm1": "math.expm1", "log": "math.log", "log1p": "math.log1p", "sqrt": "math.sqrt",
    "sin": "math.sin", "cos": "math.cos", "tan": "math.tan", "arctan": "math.atan",
    "arcsinh": "math.asinh", "erf": "math.erf", "erfc": "math.erfc", "abs": "abs",
    "maximum": "max", "minimum": "min", "sign": "_sign", "heaviside": "_heaviside",
}
_NONSMOOTH = {"abs", "maximum", "minimum", "sign", "heaviside"}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


def _to_source(node):
    """Whitelisted AST -> Python source for Numba; anything else raises ExpressionError."""
    if isinstance(node, ast.Expression):
        return _to_source(node.body)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return "x"
        if node.id in _CONSTANTS:
            return repr(_CONSTANTS[node.id])
        raise ExpressionError(f"unknown name {node.id!r}: an expression may use only x, "
                              f"pi, e and the functions {', '.join(sorted(_FUNCTIONS))}")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return repr(float(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return ("-" if isinstance(node.op, ast.USub) else "+") + f"({_to_source(node.operand)})"
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return f"({_to_source(node.left)} {_BINOPS[type(node.op)]} {_to_source(node.right)})"
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = getattr(node.func, "id", ast.unparse(node.func))
            raise ExpressionError(f"function {name!r} is not allowed; use one of "
                                  f"{', '.join(sorted(_FUNCTIONS))}")
        if node.keywords:
            raise ExpressionError("keyword arguments are not allowed in an expression")
        want = 2 if node.func.id in ("maximum", "minimum") else 1
        if len(node.args) != want:
            raise ExpressionError(f"{node.func.id}() takes {want} argument(s)")
        args = ", ".join(_to_source(a) for a in node.args)
        return f"{_FUNCTIONS[node.func.id]}({args})"
    raise ExpressionError(f"{ast.unparse(node)!r} is not allowed in an activation expression")


@njit(**JIT)
def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


@njit(**JIT)
def _heaviside(x):
    return 1.0 if x > 0.0 else 0.0


def _central_difference(phi):
    """phi' by a 4th-order central difference (error ~1e-11 relative for smooth phi)."""
    h0 = NUMERICAL_DERIVATIVE_STEP

    @njit(**JIT)
    def dphi(x):
        h = h0 * max(1.0, abs(x))
        return (8.0 * (phi(x + h) - phi(x - h)) - (phi(x + 2 * h) - phi(x - 2 * h))) / (12.0 * h)

    return dphi


def parse_expression(text: str) -> Activation:
    """Compile an expression in ``x`` into an :class:`Activation`.

    Parameters
    ----------
    text : str
        A formula such as ``"x*tanh(x)"`` or ``"maximum(x, 0.1*x)"``: numbers, ``x``, ``pi``,
        ``e``, ``+ - * / **`` and the functions of ``_FUNCTIONS``.

    Raises
    ------
    ExpressionError
        On syntax errors, unknown names or functions, or a result that does not depend on x.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse activation expression {text!r}: {exc.msg}") from None
    body = _to_source(tree)
    if "x" not in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}:
        raise ExpressionError(f"activation expression {text!r} does not depend on x")
    canonical = ast.unparse(tree)
    namespace = {"math": math, "_sign": _sign, "_heaviside": _heaviside}
    # The source below is built only from whitelisted nodes (names x/pi/e, numbers,
    # arithmetic, whitelisted calls), so executing it cannot run arbitrary code.
    exec(f"def phi(x):\n    return {body}\n", namespace)  # noqa: S102
    phi = njit(**dict(JIT, cache=False))(namespace["phi"])
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return Activation(
        name=f"expr:{canonical}",
        source=canonical,
        phi=phi,
        dphi=_central_difference(phi),
        kinks=(0.0,) if calls & _NONSMOOTH else (),
    )


def from_callable(func: Callable, name: str, *, dphi: Callable | None = None,
                  kinks: Sequence[float] = ()) -> Activation:
    """Wrap a Numba-jittable scalar function (or an ``@njit`` one) as an activation.

    ``name`` is mandatory: it is what the table records, and Python names of lambdas collide.
    """
    if not name or not isinstance(name, str):
        raise ValueError("a callable activation needs an explicit, unique name")
    phi = func if hasattr(func, "py_func") else njit(**dict(JIT, cache=False))(func)
    if dphi is not None and not hasattr(dphi, "py_func"):
        dphi = njit(**dict(JIT, cache=False))(dphi)
    return Activation(
        name=f"callable:{name}",
        source=f"Python callable {getattr(func, '__qualname__', repr(func))}",
        phi=phi,
        dphi=dphi if dphi is not None else _central_difference(phi),
        kinks=tuple(float(k) for k in kinks),
    )


def get_activation(spec: str | Activation) -> Activation:
    """Resolve a name, ``leaky_relu(slope=0.2)``, an expression, or pass an Activation on.

    Examples
    --------
    >>> get_activation("tanh").name
    'tanh'
    >>> get_activation("x*tanh(x)").name
    'expr:x * tanh(x)'
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise TypeError("an activation is a name, an expression in x, or an Activation")
    text = spec.strip()
    if text in _BUILTINS:
        source, phi, dphi, kinks, degree, exp_type = _BUILTINS[text]
        return Activation(text, source, phi, dphi, kinks, degree, exp_type)
    if text == "leaky_relu" or text.startswith("leaky_relu("):
        slope = LEAKY_RELU_SLOPE
        if text != "leaky_relu":
            try:
                call = ast.parse(text, mode="eval").body
                (kw,) = call.keywords or [ast.keyword("slope", call.args[0])]
                slope = float(ast.literal_eval(kw.value))
            except (SyntaxError, ValueError, IndexError, TypeError):
                raise ExpressionError(f"write leaky_relu(slope=0.1), not {text!r}") from None
        phi, dphi = _leaky_relu(slope)
        return Activation(f"leaky_relu(slope={slope!r})", f"x if x > 0 else {slope!r} * x",
                          phi, dphi, (0.0,), 1.0, None)
    return parse_expression(text)
