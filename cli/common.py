"""Helpers shared by the commands: progress bars and turning library errors into one line."""

import contextlib
import sys
import time
import warnings

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
    """Re-raise expected library errors as click.ClickException (one line, exit 1); library
    warnings become one line each on stderr ("warning: ...")."""
    def show(message, category, *args, **kwargs):
        click.echo(f"warning: {message}", err=True)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
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
