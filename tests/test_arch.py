"""The --arch parser: valid strings give the expected layers; everything outside the
whitelist is refused with a one-line ArchitectureError."""

import pytest

from nngp_lut.kernel import (Activation, ArchitectureError, Dense, Dropout, FanInConcat,
                             FanInSum, FanOut, Identity, LayerNorm, parallel, repeat, serial)
from nngp_lut.kernel.arch import MAX_REPEAT, parse_arch, read_arch

VALID = [
    ("serial(Dense(1.5, 0.1), repeat(serial(Activation('tanh'), Dense(1.5, 0.1)), 3))",
     serial(Dense(1.5, 0.1), repeat(serial(Activation("tanh"), Dense(1.5, 0.1)), 3))),
    ("serial(Dense(1,0), FanOut(2), parallel(serial(Activation('relu'), Dense(1,0)), "
     "Identity()), FanInSum(), LayerNorm())",
     serial(Dense(1.0, 0.0), FanOut(2),
            parallel(serial(Activation("relu"), Dense(1.0, 0.0)), Identity()), FanInSum(),
            LayerNorm())),
    ("Dense(2, None, parameterization='standard', width=64)",
     Dense(2.0, None, parameterization="standard", width=64)),
    ("serial(Dense(weight_var=1e0, bias_var=+0.5), Dropout(rate=0.25), "
     "Activation(phi='x*tanh(x)'), Dense(1), FanOut(3), FanInConcat())",
     serial(Dense(1.0, 0.5), Dropout(0.25), Activation("x*tanh(x)"), Dense(1.0), FanOut(3),
            FanInConcat())),
    ("serial(\n  Dense(2, 0.1),\n  Activation(\"leaky_relu(slope=0.2)\"),\n)",
     serial(Dense(2.0, 0.1), Activation("leaky_relu(slope=0.2)"))),
    ("repeat(Dense(1, 0), 0)", repeat(Dense(1.0, 0.0), 0)),
]


@pytest.mark.parametrize("text, expected", VALID)
def test_valid_strings_give_the_layers(text, expected):
    assert parse_arch(text) == expected


REFUSED = [
    ("os.system('ls')", "attribute access"),
    ("Dense(1).__class__", "attribute access"),
    ("serial(Dense(x))", "the name 'x'"),
    ("__import__('os')", "'__import__'"),
    ("eval('Dense(1)')", "'eval'"),
    ("serial(Dense(1), print('hi'))", "'print'"),
    ("serial(lambda: Dense(1))", "a lambda"),
    ("serial([Dense(1) for _ in range(3)])", "a comprehension"),
    ("serial(*[Dense(1)])", "a starred argument"),
    ("Dense(**{'weight_var': 1})", "'**' arguments"),
    ("Dense(1 + 1)", "an operator"),
    ("Dense(True)", "weight_var must be a number"),
    ("SelfAttention(tied=1)", "True or False"),
    ("Dense(f'{1}')", "an f-string"),
    ("serial(Dense(1))[0]", "a subscript"),
    ("1.5", "a call of a layer"),
    (f"repeat(Dense(1), {MAX_REPEAT + 1})", "above the limit"),
    ("repeat(Dense(1), 10**9)", "an operator"),
    ("repeat(repeat(repeat(Dense(1), 1000), 1000), 1000)", "more than"),
    ("Dense(-1)", "weight_var > 0"),
    ("Dense(1, 2, 3, 4, 5)", "positional"),
    ("Dense(1, parameterization='wide')", "parameterization"),
    ("Activation('os.system(1)')", "Activation"),
    ("FanOut(2.5)", "positive integer"),
    ("serial(Dense(1), 2)", "is not a layer"),
    ("serial(Dense(1)", "cannot parse"),
    ("", "the architecture is empty"),
    ("# a comment\n", "the architecture is empty"),
]


@pytest.mark.parametrize("text, message", REFUSED)
def test_everything_else_is_refused_in_one_line(text, message):
    with pytest.raises(ArchitectureError) as info:
        parse_arch(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_deep_nesting_is_refused_not_crashed():
    text = "serial(" * 5000 + "Dense(1)" + ")" * 5000
    with pytest.raises(ArchitectureError):
        parse_arch(text)


def test_read_arch_from_a_file(tmp_path):
    f = tmp_path / "net.arch"
    f.write_text("# a relu network\nserial(Dense(2, 0.1),\n"
                 "       Activation('relu'), Dense(2, 0.1))\n")
    assert read_arch(f"@{f}") == serial(Dense(2.0, 0.1), Activation("relu"), Dense(2.0, 0.1))
    assert read_arch("Dense(2, 0.1)") == Dense(2.0, 0.1)
    with pytest.raises(ArchitectureError, match="cannot read"):
        read_arch(f"@{tmp_path / 'missing.arch'}")
