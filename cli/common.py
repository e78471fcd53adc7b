"""Helpers shared by the commands: the error boundary, output checks, progress bars.

Exit status: 0 success; 1 an expected failure (an NNGPError of the library, a click error,
running out of memory), printed as one line "Error: ..."; 2 a usage error (bad flags);
3 a bug (any other exception), printed with its traceback; 130 interrupted (Ctrl-C), with
what was kept and the command that resumes.
"""

import contextlib
import json
import math
import shlex
import sys
import time
import traceback
import warnings
from pathlib import Path

import click

from nngp_lut import _files, paper, tables
from nngp_lut.cluster import WORKER_MEMORY
from nngp_lut.data import balanced_subset, load_dataset
from nngp_lut.errors import (DataError, MissingDependency, NNGPError, NNGPWarning,
                             ParameterError)

#: Exit status of a bug (an unexpected exception); Python's own uncaught-exception status
#: is 1, which is that of an expected error.
EXIT_BUG = 3
#: Exit status after Ctrl-C (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130


def one_line(exc):
    """The first line of an exception's message, then its notes (what was kept)."""
    # OSError(errno, message) prints as "[Errno 28] message": keep the message.
    text = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return "\n".join([first, *getattr(exc, "__notes__", ())])


def finite_module(name):
    """nngp_lut.<name> (montecarlo, finite), which import JAX: a missing [finite] extra is
    one line that says what to install."""
    import importlib

    try:
        return importlib.import_module(f"nngp_lut.{name}")
    except ImportError as exc:
        raise MissingDependency(str(exc).splitlines()[0]) from None


@contextlib.contextmanager
def user_errors():
    """Re-raise expected library errors (NNGPError) as click.ClickException: one line,
    exit status 1."""
    try:
        yield
    except NNGPError as exc:
        raise click.ClickException(one_line(exc)) from None


def resume_command(ctx):
    """The exact command line that continues this run: the same arguments with --resume
    (and without --force, which would start over)."""
    argv = [a for a in ctx.find_root().meta.get("nngp_lut.argv", []) if a != "--force"]
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["nngp-lut", *argv])


class Boundary(click.Group):
    """The command group that draws the error boundary around every command (module
    docstring): expected failures become one line, bugs keep their traceback."""

    def parse_args(self, ctx, args):
        ctx.meta["nngp_lut.argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        with warnings.catch_warnings():
            warnings.simplefilter("always", NNGPWarning)
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except (click.ClickException, click.exceptions.Exit, click.Abort):
                raise
            except NNGPError as exc:
                raise click.ClickException(one_line(exc)) from None
            except MemoryError as exc:
                raise click.ClickException(f"out of memory: {one_line(exc)}; lower --memory "
                                           "or use a smaller problem") from None
            except KeyboardInterrupt as exc:
                notes = list(getattr(exc, "__notes__", ()))
                lines = ["Interrupted."]
                if notes:
                    lines += notes + [f"To continue: {resume_command(ctx)}"]
                else:
                    lines.append("Nothing was written: outputs are written only once "
                                 "complete.")
                click.echo("\n".join(lines), err=True)
                ctx.exit(EXIT_INTERRUPTED)
            except Exception:
                traceback.print_exc(file=sys.stderr)
                click.echo("nngp-lut: this is a bug in nngp-lut (an unexpected error, shown "
                           "above); please report it with the command you ran.", err=True)
                ctx.exit(EXIT_BUG)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, NNGPWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line),
                   err=True, nl=False)


def to_json(obj):
    """Strict JSON (one line): NaN and infinities, which JSON lacks, become null."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), allow_nan=False, default=str)


def check_output(path, force, what="--out"):
    """Before any work: the output (if one is given) can be written and exists only with
    --force."""
    if path is None:
        return
    with user_errors():
        _files.check_output(path, force=force, what=what)


@contextlib.contextmanager
def progress_bar(label, quiet):
    """A ``progress(done, total)`` callback drawing one bar on stderr (nothing if quiet)."""
    with stage_bars(quiet) as progress:
        yield progress and (lambda done, total: progress(label, done, total))


#: Seconds between progress lines when stderr is not a terminal (logs, batch jobs, CI).
PROGRESS_INTERVAL = 5.0


@contextlib.contextmanager
def stage_bars(quiet):
    """A ``progress(stage, done, total)`` callback on stderr: one bar per stage on a
    terminal; otherwise plain lines, one every PROGRESS_INTERVAL seconds and one when a stage
    ends, with its time."""
    if quiet:
        yield None
        return
    stream = sys.stderr
    tty = stream.isatty()
    # A stage's time runs from the end of the one before (or from here): its first report
    # may come only when its work is done.
    state = {"stage": None, "bar": None, "done": 0, "total": 1, "start": 0.0, "last": 0.0,
             "ended": True, "mark": time.perf_counter()}

    def line(text):
        click.echo(text, err=True)

    def close():
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)
            state["bar"] = None
        if not tty and not state["ended"]:
            pct = 100.0 * state["done"] / max(state["total"], 1)
            now = time.perf_counter()
            line(f"{state['stage']}: stopped at {pct:.0f}% after {now - state['start']:.1f} s")
            state.update(ended=True, mark=now)

    def progress(stage, done, total):
        now = time.perf_counter()
        if stage != state["stage"] or (not tty and state["ended"] and done < total):
            close()
            state.update(stage=stage, done=0, start=state["mark"], last=now, ended=False)
            if tty:
                state["bar"] = click.progressbar(length=int(total), label=f"{stage:<8}",
                                                 file=stream)
                state["bar"].__enter__()
        if tty:
            state["bar"].update(int(done) - state["done"])
        elif not state["ended"]:
            if done >= total:
                line(f"{stage}: done in {now - state['start']:.1f} s")
                state.update(ended=True, mark=now)
            elif now - state["last"] >= PROGRESS_INTERVAL:
                line(f"{stage}: {100.0 * done / max(total, 1):.0f}% ({int(done)}/{int(total)}) "
                     f"after {now - state['start']:.0f} s")
                state["last"] = now
        state.update(done=int(done), total=int(total))

    try:
        yield progress
    finally:
        close()


def load_data(data_path, n_train=None, n_val=None, need_val=False):
    """The dataset (default: the embedded sample; its files checked against the memory
    available before they are read: --memory budgets the kernels, not the data, which
    must be in RAM whatever it says) with the paper's class-balanced subset of
    n_train training examples; with ``need_val`` a validation set too: the first n_val of
    x_val, or, when the file has none, the last n_val (default 1000) training examples."""
    data = load_dataset(data_path)
    if need_val and data.x_val is None:
        n_val = n_val or min(1000, len(data.y_train) // 5)
        if n_val >= len(data.y_train):
            raise DataError(f"--n-val {n_val} leaves no training examples")
        data.x_val, data.y_val = data.x_train[-n_val:], data.y_train[-n_val:]
        data.x_train, data.y_train = data.x_train[:-n_val], data.y_train[:-n_val]
    elif need_val and n_val is not None:
        data.x_val, data.y_val = data.x_val[:n_val], data.y_val[:n_val]
    if n_train is not None and n_train != len(data.y_train):
        if not data.classification:
            raise DataError("--n-train takes a class-balanced subset: it needs integer labels")
        if n_train > len(data.y_train):
            raise DataError(f"--n-train {n_train} is more than the {len(data.y_train)} "
                             "training examples")
        idx = balanced_subset(data.y_train, n_train)
        data.x_train, data.y_train = data.x_train[idx], data.y_train[idx]
    return data


def phi_or_table(phi, table_path, default=None):
    """Check --phi / --table: at most one, and one of them unless --phi has a default.
    Returns the --phi to use (``default`` when neither is given; None with --table)."""
    both, neither = phi is not None and table_path is not None, phi is None and table_path is None
    if both or (neither and default is None):
        raise click.UsageError(f"give {'at most' if default else 'exactly'} one of --phi and "
                               "--table")
    return default if neither else phi


def table_for(phi, table_path, progress=None):
    """The table of --table PATH, or of --phi (built once into the cache)."""
    if table_path:
        return tables.open_table(table_path)
    return tables.cached_table(phi, progress=progress and
                               (lambda done, total: progress("table", done, total)))


# --- The command line's vocabulary (issue 20, item 7) -----------------------------------
# Every flag that more than one command takes is declared here, once, with one help text;
# a group decorator declares the flags that go together (the network, the data, the
# output, the cluster), in the order the help lists them.  A help text is a parameter only
# where the flag's meaning differs between commands (what --out writes, what --memory
# budgets).


def _group(*options):
    """One decorator applying ``options`` so that the help lists them in that order."""
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def _shown(default):
    """show_default for an option whose default is None unless a command gives one."""
    return {} if default is None else {"show_default": True}


# The network: --arch, or the fully connected network of --phi (or --table), --depth,
# --weight-var and --bias-var.

ARCH_OPTION = click.option(
    "--arch", metavar="TEXT|@FILE", default=None,
    help="Any network of the layer algebra, e.g. \"serial(Dense(1.5, 0.1), "
    "Activation('relu'), Dense(1.5, 0.1))\", or @FILE to read it from a file (grammar in "
    "README.md, section Architectures); instead of --phi/--table and --depth/--weight-var/"
    "--bias-var.")
PHI_OPTION = click.option(
    "--phi", metavar="NAME_OR_EXPR", default=None,
    help="Activation of the fully connected network: a built-in name or an expression in x "
    "(its table is built once and cached).")
TABLE_OPTION = click.option(
    "--table", "table_path", type=click.Path(dir_okay=False), default=None,
    help="A table file made by nngp-lut build (instead of --phi).")


def fc_options(depth=None, weight_var=None, bias_var=None):
    """--phi, --table, --depth, --weight-var and --bias-var: the fully connected network.
    No defaults, except for plot calibration (the network of the paper's Figure 2)."""
    return _group(
        PHI_OPTION, TABLE_OPTION,
        click.option("--depth", type=click.IntRange(0), default=depth, **_shown(depth),
                     help="Hidden layers L of the fully connected network (0: the linear "
                     "model on the inputs)."),
        click.option("--weight-var", type=click.FloatRange(min=0, min_open=True),
                     default=weight_var, **_shown(weight_var),
                     help="Weight variance sigma_w^2 of the fully connected network "
                     "(weights ~ N(0, sigma_w^2 / fan_in))."),
        click.option("--bias-var", type=click.FloatRange(min=0), default=bias_var,
                     **_shown(bias_var),
                     help="Bias variance sigma_b^2 of the fully connected network."))


#: --arch, --phi, --table, --depth, --weight-var and --bias-var, for every command that takes
#: a network (predict, kernel, mc, compare); :func:`network_flags` checks them,
#: :func:`network_of` makes the network.  (search takes --phi and --table for its grid and
#: a repeatable --arch of candidates; plot calibration the fully connected network alone.)
#: --tol, for the layers computed to a tolerance (predict, kernel, mc, compare, search).
TOL_OPTION = click.option(
    "--tol", type=click.FloatRange(0, min_open=True), default=None,
    help="Tolerance of the --arch layers whose kernels are Gaussian expectations computed "
    "by randomised QMC (GRU, LSTM, BatchNorm, SelfAttention at scaling '1/sqrt(n)'): every "
    "entry of a pair's map within it (a 99 % interval over 16 scramblings; the work grows "
    "as 1/tol^2).  Default: each layer's own tol.")
network_options = _group(ARCH_OPTION, TOL_OPTION, fc_options())
#: The usage error of --tol without a layer that takes it.
TOL_USAGE = ("--tol is for an --arch with layers computed to a tolerance (GRU, LSTM, "
             "BatchNorm, SelfAttention at '1/sqrt(n)')")
#: --bn-reference, for predict, kernel and search --arch.
BN_REFERENCE_OPTION = click.option(
    "--bn-reference", "bn_reference", metavar="FILE[:KEY]", default=None,
    help="For an --arch with BatchNorm (relu or identity): inputs (.npy, .npz, .h5 or .csv, "
    "rows as the data's) whose batch statistics normalise every input, as a trained "
    "network's stored statistics do (inference mode).  Without it BatchNorm normalises over "
    "the inputs of the call (training mode), and predict refuses it.")

#: --kernel, shared by predict, kernel and search.
KERNEL_OPTION = click.option(
    "--kernel", "kernel_kind", type=click.Choice(["nngp", "ntk"]), default="nngp",
    show_default=True,
    help="nngp: the Bayesian posterior of the network's Gaussian process; ntk: the "
    "infinitely wide network trained to convergence by gradient descent on the squared "
    "loss (Lee et al. 2019, eq. 16).")

#: --shape, shared by predict, kernel, search, mc and compare.
SHAPE_OPTION = click.option(
    "--shape", default=None, metavar="H,W,C",
    help="Shape of one input for an --arch with positions (Conv, AvgPool, GlobalAvgPool, "
    "Flatten, Aggregate, SimpleRNN, GRU, LSTM, SelfAttention): flattened rows are reshaped "
    "to it, row-major (NHWC; T,C for sequences, L,C for graphs).  Default: the image shape "
    "the data file stores (IDX, CIFAR-10, image arrays in .npz/.h5).")


# The data.

#: What a command reads when --data is omitted.
EMBEDDED = ("the embedded MNIST sample (the paper's class-balanced 1k training subset, 1000 "
            "validation and 10000 test images)")


def data_option(omitted=EMBEDDED, *, folders=True):
    """--data (``omitted``: what is read without it); ``folders=False`` (mc) takes a file
    only."""
    where = ("Dataset: .npz or .h5 with x_train, y_train, x_test, y_test (optionally x_val, "
             "y_val); a folder or files of MNIST-style IDX files; the CIFAR-10 python batches "
             "(folder or .tar.gz); or CSV files, with a header row or without (see the "
             "README).  Integer labels: classification; float targets: regression."
             if folders else "Dataset file (not a folder) in any format predict reads, such "
             "as .npz or .h5 with x_train, y_train, x_test, y_test.")
    return click.option("--data", "data_path", type=click.Path(dir_okay=folders),
                        default=None, help=f"{where}  Omitted: {omitted}.")


N_TRAIN_OPTION = click.option(
    "--n-train", type=click.IntRange(1), default=None,
    help="Use the paper's class-balanced subset of N training examples (first N/classes of "
    "each class, shuffled with RandomState(9999)); N equal to the training set's size takes "
    "all of it.")
N_VAL_OPTION = click.option(
    "--n-val", type=click.IntRange(1), default=None,
    help="Validation examples: the first M of the file's validation set (x_val), or, when it "
    "has none, the last M training examples (default: 1000, at most a fifth of them).")
N_TEST_OPTION = click.option(
    "--n-test", type=click.IntRange(1), default=None,
    help="Use only the first M test examples.")


def standardize_option(switch=True):
    """--standardize/--no-standardize (default None: on for the embedded sample only); with
    ``switch=False`` (kernel, whose inputs are not a dataset) a plain --standardize flag."""
    what = ("Standardise each input across its features (the paper's convention for "
            "images).")
    if not switch:
        return click.option("--standardize", is_flag=True, help=f"{what}  Default: off.")
    return click.option("--standardize/--no-standardize", default=None,
                        help=f"{what}  Default: off; on for the embedded MNIST sample (no "
                        "--data), as the paper does.")


def standardizing(standardize, data_path):
    """The --standardize/--no-standardize given, else its default: on for the embedded
    sample (no --data; the paper's convention), off for a dataset of the user's."""
    if standardize is None:
        return paper.STANDARDIZE if data_path is None else False
    return standardize


def data_options(omitted=EMBEDDED, *, n_val=False, n_test=True):
    """--data, --n-train, --n-val (with ``n_val``), --n-test (with ``n_test``) and
    --standardize/--no-standardize: a dataset as :func:`load_data` reads it."""
    subsets = [N_TRAIN_OPTION] + [N_VAL_OPTION] * n_val + [N_TEST_OPTION] * n_test
    return _group(data_option(omitted), *subsets, standardize_option())


#: --jitter, shared by predict, search and compare.
JITTER_OPTION = click.option(
    "--jitter", default="absolute", show_default=True, metavar="RULE",
    help="Noise variance: 'absolute' (the paper's: 1e-10, x10 after each failed "
    "factorisation, up to 0.1), 'relative' (the same times the kernel's mean diagonal) or a "
    "fixed number.")


def memory_option(budgets, default="auto", more=""):
    """--memory: ``budgets`` says what it bounds in that command, ``more`` what happens
    beyond it."""
    return click.option(
        "--memory", default=default, show_default=True,
        help=f"Memory budget for {budgets}, e.g. 500MB or 8GB ('auto': 75% of the available "
        f"memory).{'  ' + more if more else ''}")


# The output.

def quiet_option(summary=False):
    """--quiet/-q: no progress on stderr; with ``summary`` (build, kernel) nor the closing
    'wrote FILE' line."""
    return click.option("--quiet", "-q", is_flag=True,
                        help="No progress on stderr (bars on a terminal, stage lines in logs)"
                        + (", nor the closing 'wrote FILE' line." if summary else "."))


def output_options(writes, *, required=False, default=None,
                   force="Overwrite an existing --out file.", quiet=True):
    """--out (``writes``: what it writes; ``required``, or its ``default``), --force
    (``force``: its help, where overwriting means more) and --quiet/-q (``quiet``: True,
    "summary" for :func:`quiet_option` with ``summary``, or False for none)."""
    given = ({"default": default, "show_default": True} if default is not None else
             {} if required else {"default": None})
    options = [click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                            required=required, help=writes, **given),
               click.option("--force", is_flag=True, help=force)]
    if quiet:
        options.append(quiet_option(summary=quiet == "summary"))
    return _group(*options)


def json_option(what, report=True):
    """--json: ``what`` as one JSON object on stdout; the text report then goes to stderr
    (``report=False``: there is none)."""
    return click.option(
        "--json", "as_json", is_flag=True,
        help=f"Print {what} as one JSON object, " + (
            "the last line of stdout; the text report then goes to stderr." if report else
            "on one line, instead of the text."))


# The cluster.

#: --scheduler and --workers (the Dask backend), shared by kernel, predict and search;
#: :func:`cluster_client` checks them and connects.
cluster_options = _group(
    click.option(
        "--scheduler", metavar="ADDRESS", default=None,
        help="Run on an existing Dask cluster, e.g. tcp://10.0.0.1:8786: kernel tiles and "
        "the blocked Cholesky as task graphs (needs the distributed extra)."),
    click.option(
        "--workers", type=click.IntRange(1), default=None, metavar="N",
        help="Run on a local Dask cluster of N single-threaded worker processes, at most "
        f"one per core and {WORKER_MEMORY // 2**20} MB of available memory each; they stop "
        "with the command, whatever ends it (needs pip install \"nngp-lut[distributed]\")."))


def network_flags(arch, phi, table_path, depth, weight_var, bias_var, *, default_phi=None,
                  hint=""):
    """Check the network options before any work: --arch alone, or --phi or --table (at
    most one; one of them unless --phi has a default) with --depth, --weight-var and
    --bias-var.  Anything else is a usage error (exit 2), ``hint`` appended to a missing
    flag's.  Returns the --phi to use (None with --arch or --table)."""
    if arch is not None:
        given = [flag for flag, v in (("--phi", phi), ("--table", table_path),
                                      ("--depth", depth), ("--weight-var", weight_var),
                                      ("--bias-var", bias_var)) if v is not None]
        if given:
            raise click.UsageError(f"--arch describes the whole network: drop "
                                   f"{', '.join(given)}")
        return None
    if default_phi is None and (phi, table_path, depth, weight_var, bias_var) == (None,) * 5:
        raise click.UsageError("give the network: --arch, or --phi (or --table) with --depth, "
                               "--weight-var and --bias-var")
    phi = phi_or_table(phi, table_path, default_phi)
    missing = [flag for flag, v in (("--depth", depth), ("--weight-var", weight_var),
                                    ("--bias-var", bias_var)) if v is None]
    if missing:
        raise click.UsageError(f"give {', '.join(missing)}, or the whole network with "
                               f"--arch{hint}")
    return phi


def network_of(arch, phi=None, table_path=None, depth=None, weight_var=None, bias_var=None,
               progress=None, tol=None):
    """The Network of the checked options (:func:`network_flags`): that of --arch (with
    --tol on its layers computed to a tolerance), or the fully connected one of
    --phi/--table; the activations' tables are built into the cache with progress."""
    from nngp_lut.kernel import Activation, Network, deep_network
    from nngp_lut.kernel.arch import read_arch
    from nngp_lut.kernel.layers import with_tolerance

    if tol is not None and arch is None:
        raise click.UsageError(TOL_USAGE)
    with user_errors():
        if arch is None:
            return deep_network(table_for(phi, table_path, progress), depth, weight_var,
                                bias_var)
        layer = read_arch(arch)
        if tol is not None:
            layer, count = with_tolerance(layer, tol)
            if not count:
                raise click.UsageError(f"{TOL_USAGE}: this one computes every kernel "
                                       "exactly")
        network = Network(layer)
        for layer in network.layer.walk():
            if isinstance(layer, Activation) and isinstance(layer.phi, str) \
                    and not layer.phi.endswith((".h5", ".hdf5")):
                table_for(layer.phi, None, progress)
    return network


def load_array_spec(spec):
    """The array of FILE or FILE:KEY (a key picks an array of an .npz or .h5 file); it must
    fit in RAM."""
    from nngp_lut.data import load_array

    path, _, key = spec.partition(":") if spec.count(":") == 1 and not Path(spec).exists() \
        else (spec, "", "")
    return load_array(path, key or None, "auto")


def with_bn_reference(network, spec, shape, stored, standardize):
    """The network with --bn-reference's inputs as its BatchNorm reference batch, shaped and
    standardised as the data are (the network itself without the option)."""
    if spec is None:
        return network
    from nngp_lut.data import standardize_rows
    from nngp_lut.kernel import Network

    with user_errors():
        reference, = shaped(network, shape, stored, load_array_spec(spec))
        if standardize:
            reference = standardize_rows(reference, "--bn-reference", network.recurrent)
        return Network(network.layer, reference=reference)


def parse_shape(text):
    """--shape "28,28,1" -> (28, 28, 1) (None stays None): 2 or 3 positive integers, as
    a network with spatial axes takes (one axis would leave the rows as they are)."""
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not 2 <= len(shape) <= 3 or min(shape) < 1:
        hint = f" (for sequences of {shape[0]} values: {shape[0]},1)" if len(shape) == 1 else ""
        raise click.UsageError(f"--shape takes 2 or 3 positive integers: H,W,C or H,W for "
                               f"images, L,C for sequences and graphs; got {text!r}{hint}")
    return shape


def _images(shape):
    """An image shape with one channel written as H,W (H,W,1 holds the same images)."""
    shape = tuple(shape)
    return shape[:2] if len(shape) == 3 and shape[2] == 1 else shape


def shaped(network, shape, stored, *arrays):
    """The inputs as the network takes them: a convolutional network's rows reshaped to
    --shape (else to the data file's image shape); anything else unchanged.  --shape with
    a network of vectors, or other than the image shape the data file stores, is a usage
    error."""
    from nngp_lut.kernel.spatial import reshape_inputs

    spatial = network is not None and network.rank != 0
    if shape is not None and not spatial:
        raise click.UsageError("--shape is for networks with positions (an --arch with Conv, "
                               "pooling, Flatten, Aggregate, a recurrent layer or "
                               "SelfAttention)")
    if shape is not None and stored is not None and _images(shape) != _images(stored):
        raise click.UsageError(f"--shape {','.join(map(str, shape))} differs from the image "
                               f"shape {','.join(map(str, stored))} the data file stores; drop "
                               "--shape to use the stored one")
    target = shape or (stored if spatial else None)
    if target is None:
        return arrays
    with user_errors():
        return tuple(None if a is None else reshape_inputs(a, target, name)
                     for a, name in zip(arrays, ("x1", "x2", "x3", "x4")))


def echo_table(lines, out, as_json, payload):
    """A command's table (on stderr under --json, so that stdout is the one JSON line),
    the --out file it wrote, then the JSON ``payload`` under --json."""
    if out is not None:
        lines.append(f"wrote {out}")
    click.echo("\n".join(lines), err=as_json)
    if as_json:
        click.echo(to_json(payload))


def refuse_padding(what, **arrays):
    """A one-line error for NaN (the padding of sequences of unequal length) in inputs that
    ``what`` cannot take: the finite networks of mc and compare run sequences of one length."""
    import numpy as np

    for name, a in arrays.items():
        if a is not None and np.isnan(a).any():
            row = int(np.argwhere(np.isnan(a))[0][0])
            raise DataError(f"{name} row {row} has NaN (padding of a shorter sequence): {what} "
                            "takes sequences of one length; predict, kernel and search take "
                            "padded ones")


def cluster_client(scheduler, workers):
    """The Dask client of --scheduler / --workers (None for neither: in process), as a
    context manager; both at once is a usage error, an unreachable scheduler one line."""
    if scheduler is not None and workers is not None:
        raise click.UsageError("give --scheduler (an existing cluster) or --workers (a local "
                               "one), not both")
    from nngp_lut import cluster

    try:  # a bad flag value: a usage error, before any work
        if workers is not None:
            cluster.check_workers(workers)
        if scheduler is not None:
            cluster.check_address(scheduler)
    except ParameterError as exc:
        raise click.UsageError(str(exc)) from None
    return cluster.connect(scheduler, workers)
