"""Helpers shared by the commands: progress bars and turning library errors into one line."""

import contextlib

import click
import numpy as np

from nngp_lut import tables
from nngp_lut.activations import ExpressionError
from nngp_lut.data import DataError, balanced_subset, load_dataset
from nngp_lut.tables import DomainError, TableError

#: Library exceptions that are a user's error: one line on stderr, exit status 1.
EXPECTED_ERRORS = (ExpressionError, TableError, DomainError, DataError, FileExistsError,
                   ValueError, OSError, MemoryError, np.linalg.LinAlgError)


@contextlib.contextmanager
def user_errors():
    """Re-raise expected library errors as click.ClickException (one line, exit 1)."""
    try:
        yield
    except click.ClickException:
        raise
    except EXPECTED_ERRORS as exc:
        raise click.ClickException(str(exc).splitlines()[0] if str(exc) else repr(exc)) \
            from None


@contextlib.contextmanager
def progress_bar(label, quiet):
    """A ``progress(done, total)`` callback drawing one bar on stderr (nothing if quiet)."""
    with stage_bars(quiet) as progress:
        yield progress and (lambda done, total: progress(label, done, total))


@contextlib.contextmanager
def stage_bars(quiet):
    """A ``progress(stage, done, total)`` callback: one bar per stage, on stderr."""
    if quiet:
        yield None
        return
    state = {"stage": None, "bar": None, "done": 0}

    def close():
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)
            state["bar"] = None

    def progress(stage, done, total):
        if stage != state["stage"]:
            close()
            state.update(stage=stage, done=0)
            state["bar"] = click.progressbar(length=int(total), label=f"{stage:<8}",
                                             file=click.get_text_stream("stderr"))
            state["bar"].__enter__()
        state["bar"].update(int(done) - state["done"])
        state["done"] = int(done)

    try:
        yield progress
    finally:
        close()


def load_data(data_path, n_train=None, n_val=None, need_val=False):
    """The dataset (default: the embedded sample) with the paper's class-balanced subset of
    n_train training examples; with ``need_val`` a validation set too: the first n_val of
    x_val, or, when the file has none, the last n_val (default 1000) training examples."""
    data = load_dataset(data_path)
    if need_val and data.x_val is None:
        n_val = n_val or min(1000, len(data.y_train) // 5)
        if n_val >= len(data.y_train):
            raise ValueError(f"--n-val {n_val} leaves no training examples")
        data.x_val, data.y_val = data.x_train[-n_val:], data.y_train[-n_val:]
        data.x_train, data.y_train = data.x_train[:-n_val], data.y_train[:-n_val]
    elif need_val and n_val is not None:
        data.x_val, data.y_val = data.x_val[:n_val], data.y_val[:n_val]
    if n_train is not None and n_train != len(data.y_train):
        if not data.classification:
            raise ValueError("--n-train takes a class-balanced subset: it needs integer labels")
        if n_train > len(data.y_train):
            raise ValueError(f"--n-train {n_train} is more than the {len(data.y_train)} "
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
