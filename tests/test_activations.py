"""The activation registry and the safe expression parser."""

import math

import numpy as np
import pytest

from nngp_lut import builtin_names, get_activation
from nngp_lut.activations import ExpressionError

REQUIRED = {"relu", "leaky_relu", "abs", "step", "identity", "tanh", "erf", "sigmoid",
            "softplus", "gelu", "silu", "elu", "selu", "sin", "cos"}


def test_registry_has_required_builtins():
    assert REQUIRED <= set(builtin_names())


@pytest.mark.parametrize("name", sorted(REQUIRED - {"step"}))
def test_builtin_derivatives_match_finite_differences(name):
    act = get_activation(name)
    x = np.array([-3.1, -0.7, 0.4, 1.9, 5.3])
    h = 1e-6
    fd = np.array([(act.phi(t + h) - act.phi(t - h)) / (2 * h) for t in x])
    d = np.array([act.dphi(t) for t in x])
    np.testing.assert_allclose(d, fd, rtol=1e-6, atol=1e-8)


def test_expression_compiles_and_matches_numpy():
    act = get_activation("x*tanh(x) + 0.5*maximum(x, 0)**2")
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(act(x), x * np.tanh(x) + 0.5 * np.maximum(x, 0) ** 2,
                               rtol=1e-15)
    assert act.name == "expr:x * tanh(x) + 0.5 * maximum(x, 0) ** 2"
    assert act.kinks == (0.0,)  # a non-smooth function is used


@pytest.mark.parametrize("bad", ["__import__('os').system('true')", "x.__class__",
                                 "lambda x: x", "[x]", "open('f')", "y + 1", "tanh(x, 2)",
                                 "1 + 2", "x +", "exp(x=1)"])
def test_unsafe_or_wrong_expressions_are_rejected(bad):
    with pytest.raises(ExpressionError):
        get_activation(bad)


def test_names_never_collide():
    names = {get_activation(s).name for s in
             ["tanh", "tanh(x)", "x*tanh(x)", "leaky_relu", "leaky_relu(slope=0.2)"]}
    assert len(names) == 5


def test_callable_needs_a_name():
    from nngp_lut.activations import from_callable

    act = from_callable(lambda x: math.sin(x) ** 2, "sin_squared")
    assert act.name == "callable:sin_squared"
    assert abs(act.dphi(0.3) - math.sin(0.6)) < 1e-9
    with pytest.raises(ValueError):
        from_callable(lambda x: x, "")
