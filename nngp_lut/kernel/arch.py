"""Architecture strings: a safe parser from text to a network of the layer algebra.

The command line names a network with ``--arch`` (or ``--arch @FILE``)::

    serial(Dense(1.5, 0.1), repeat(serial(Activation('tanh'), Dense(1.5, 0.1)), 3))

    serial(Dense(1, 0), FanOut(2),
           parallel(serial(Activation('relu'), Dense(1, 0)), Identity()),
           FanInSum(), LayerNorm(), Dense(1, 0))

Grammar (one Python expression, read with :mod:`ast`; nothing is ever ``eval``-ed)::

    arch     := call
    call     := NAME "(" [arg ("," arg)*] [","] ")"
    arg      := value | KEYWORD "=" value
    value    := call | number | "-" number | "+" number | string | "None" | "True"
              | "False" | tuple
    tuple    := "(" number ("," number)* [","] ")"
    NAME     := serial | parallel | repeat | Dense | Activation | LayerNorm | Identity
              | Dropout | FanOut | FanInSum | FanInConcat | Conv | AvgPool
              | GlobalAvgPool | Flatten | Aggregate | SimpleRNN | LastStep | SelfAttention
              | PositionalEmbedding | GRU | LSTM | BatchNorm

Each NAME means the constructor of the same name in :mod:`nngp_lut.kernel.layers`, with its
positional and keyword arguments (``Dense(weight_var, bias_var=0.0,
parameterization='ntk', width=None)``, ``Activation(phi)`` with phi a built-in name, an
expression in x or a table path, ``Dropout(rate)``, ``FanOut(n)``, ``repeat(block, n)``,
``Conv(weight_var, bias_var=0.0, filter_shape=(3, 3), strides=None, padding='SAME',
parameterization='ntk', width=None)``, ``AvgPool(window_shape=(2, 2), strides=None,
padding='VALID')``, ``GlobalAvgPool()``, ``Flatten()``, ``LayerNorm(over='channels')``,
``Aggregate('adjacency.npy')`` with a dense .npy or a scipy.sparse .npz file,
``SimpleRNN(phi, weight_var=1.0, input_var=1.0, bias_var=0.0, width=None)``,
``LastStep()``, ``SelfAttention(weight_var=1.0, bias_var=0.0, logit_var=1.0, tied=True,
width=None, scaling='1/n', heads=1, tol=0.001, max_points=16384)`` (logits at 1/n scaling,
tied or not; ``scaling='1/sqrt(n)'`` is the standard scaling, with ``tied=False``, NNGP only,
e.g. ``SelfAttention(1.0, 0.1, tied=False, scaling='1/sqrt(n)', heads=4)``),
``PositionalEmbedding(bias_var=1.0)``, ``GRU(phi='tanh', weight_var=1.0, input_var=1.0,
bias_var=0.0, tol=0.01, max_points=4096, width=None)`` and ``LSTM(...)`` with the same
arguments, ``BatchNorm(phi=None, tol=0.001)``).
Tuples of numbers (``(3, 3)``) serve filter shapes and strides.
Numbers are int or float literals (``1e-3``, ``-0.5``); strings are plain literals (no
f-strings); ``None`` is allowed as a value (``Dense(1, None)``: no bias), and ``True`` and
``False`` (``SelfAttention(tied=False)``).  Anything else —
names, attribute access, subscripts, operators, lambdas, comprehensions, starred or ``**``
arguments, calls of anything outside the list — raises an :class:`ArchitectureError` of one
line that names what is not allowed.  ``repeat`` counts are capped at :data:`MAX_REPEAT`,
and a whole description at :data:`MAX_LAYERS` layers and :data:`MAX_TEXT` characters.
"""

import ast

from .layers import (GRU, LSTM, Activation, Aggregate, ArchitectureError, AvgPool, BatchNorm,
                     Conv, Dense, Dropout, FanInConcat, FanInSum, FanOut, Flatten,
                     GlobalAvgPool, Identity, LastStep, Layer, LayerNorm, PositionalEmbedding,
                     SelfAttention, SimpleRNN, parallel, repeat, serial)

#: The constructors an architecture may call, by the name it uses.
CONSTRUCTORS = {
    "serial": serial, "parallel": parallel, "repeat": repeat, "Dense": Dense,
    "Activation": Activation, "LayerNorm": LayerNorm, "Identity": Identity,
    "Dropout": Dropout, "FanOut": FanOut, "FanInSum": FanInSum, "FanInConcat": FanInConcat,
    "Conv": Conv, "AvgPool": AvgPool, "GlobalAvgPool": GlobalAvgPool, "Flatten": Flatten,
    "Aggregate": Aggregate, "SimpleRNN": SimpleRNN, "LastStep": LastStep,
    "SelfAttention": SelfAttention, "PositionalEmbedding": PositionalEmbedding,
    "GRU": GRU, "LSTM": LSTM, "BatchNorm": BatchNorm,
}
#: Longest tuple literal (filter shapes, strides).
MAX_TUPLE = 8
#: Largest ``repeat(block, n)`` count (a depth far beyond any network worth computing).
MAX_REPEAT = 1000
#: Largest number of layers of a whole description, after expanding ``repeat``.
MAX_LAYERS = 10000
#: Longest architecture text (characters; bytes for an ``@FILE``).
MAX_TEXT = 100_000
#: An architecture to show in messages.
EXAMPLE = "serial(Dense(1, 0), Activation('relu'), Dense(1, 0))"


def _describe(node):
    """A short human name of an AST node for an error message."""
    kinds = {ast.Name: "the name", ast.Attribute: "attribute access", ast.Lambda: "a lambda",
             ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
             ast.DictComp: "a comprehension", ast.GeneratorExp: "a comprehension",
             ast.Starred: "a starred argument", ast.Subscript: "a subscript",
             ast.BinOp: "an operator", ast.BoolOp: "an operator", ast.Compare: "a comparison",
             ast.JoinedStr: "an f-string", ast.IfExp: "a conditional expression",
             ast.NamedExpr: "an assignment expression"}
    text = ast.unparse(node)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{kinds.get(type(node), 'the expression')} {text!r}"


def _count(layer):
    """Number of leaf layers, expanding repeats (to cap the size of a description)."""
    children = getattr(layer, "children", None)
    return 1 if children is None else sum(_count(c) for c in children)


def _value(node):
    """A whitelisted AST node -> its value (a layer, a number, a string, a bool or None)."""
    if isinstance(node, ast.Constant) and (node.value is None or
                                           type(node.value) in (int, float, str, bool)):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Tuple) and len(node.elts) <= MAX_TUPLE:  # (3, 3) of numbers
        values = tuple(_value(e) for e in node.elts)
        if all(type(v) in (int, float) for v in values):
            return values
    raise ArchitectureError(f"{_describe(node)} is not allowed in an architecture; use "
                            f"numbers, strings and the layers {', '.join(CONSTRUCTORS)}")


def _call(node):
    if not isinstance(node.func, ast.Name) or node.func.id not in CONSTRUCTORS:
        what = (f"{node.func.id!r}" if isinstance(node.func, ast.Name)
                else _describe(node.func))
        raise ArchitectureError(f"calling {what} is not allowed in an architecture; the "
                                f"layers are {', '.join(CONSTRUCTORS)}")
    name = node.func.id
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            raise ArchitectureError(f"{_describe(arg)} is not allowed in {name}(...)")
    if any(kw.arg is None for kw in node.keywords):
        raise ArchitectureError(f"'**' arguments are not allowed in {name}(...)")
    args = [_value(a) for a in node.args]
    kwargs = {kw.arg: _value(kw.value) for kw in node.keywords}
    if name == "repeat":
        n = args[1] if len(args) > 1 else kwargs.get("n")
        if isinstance(n, (int, float)) and n > MAX_REPEAT:
            raise ArchitectureError(f"repeat count {n} is above the limit of {MAX_REPEAT}")
    try:
        layer = CONSTRUCTORS[name](*args, **kwargs)
    except ArchitectureError as exc:
        raise ArchitectureError(f"{name}(...): {str(exc).splitlines()[0]}") from None
    except (TypeError, ValueError) as exc:  # wrong arguments; a bad activation expression
        raise ArchitectureError(f"{name}(...): {str(exc).splitlines()[0]}") from None
    if _count(layer) > MAX_LAYERS:
        raise ArchitectureError(f"the architecture has more than {MAX_LAYERS} layers")
    return layer


def parse_arch(text):
    """The network (a :class:`~nngp_lut.kernel.layers.Layer`) that ``text`` describes.

    Parameters
    ----------
    text : str
        One call of the grammar in the module docstring, e.g.
        ``"serial(Dense(1.5, 0.1), Activation('tanh'), Dense(1.5, 0.1))"``.

    Raises
    ------
    ArchitectureError
        One line naming what is not allowed (or what a layer's arguments got wrong).

    Examples
    --------
    >>> parse_arch("serial(Dense(2, 0.1), Activation('relu'), Dense(2, 0.1))")
    Serial(children=(Dense(weight_var=2, bias_var=0.1, parameterization='ntk', width=None), \
Activation('relu'), Dense(weight_var=2, bias_var=0.1, parameterization='ntk', width=None)))
    """
    if not isinstance(text, str):
        raise ArchitectureError(f"an architecture is a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ArchitectureError(f"the architecture text is longer than {MAX_TEXT} characters")
    if all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        raise ArchitectureError(f"the architecture is empty; write one call such as {EXAMPLE}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ArchitectureError(f"cannot parse architecture: {exc.msg}") from None
    except RecursionError:
        raise ArchitectureError("the architecture is nested too deeply") from None
    if not isinstance(tree.body, ast.Call):
        raise ArchitectureError(f"an architecture is a call of a layer, not "
                                f"{_describe(tree.body)}")
    try:
        layer = _value(tree.body)
    except RecursionError:
        raise ArchitectureError("the architecture is nested too deeply") from None
    if not isinstance(layer, Layer):
        raise ArchitectureError("an architecture must describe a layer")
    return layer


def read_arch(spec):
    """``--arch`` as the user gives it: the text itself, or ``@FILE`` to read it from a
    file (``#`` comment lines and line breaks allowed there).  A file is read with a cap of
    :data:`MAX_TEXT` bytes before it is decoded (UTF-8)."""
    if spec.startswith("@"):
        from .._files import read_text

        path = spec[1:]
        text = read_text(path, MAX_TEXT, what="architecture file", error=ArchitectureError)
        spec = "\n".join(line for line in text.splitlines()
                         if not line.lstrip().startswith("#"))
        if not spec.strip():
            raise ArchitectureError(f"architecture file {path!r} holds no architecture (only "
                                    f"comments or blank lines); write one call such as "
                                    f"{EXAMPLE}")
    return parse_arch(spec)
