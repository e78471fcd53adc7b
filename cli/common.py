"""Helpers shared by the commands: progress bars and turning library errors into one line."""

import contextlib

import click

from nngp_lut.activations import ExpressionError
import numpy as np

from nngp_lut.data import DataError
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
    """A ``progress(done, total)`` callback drawing a bar on stderr (nothing if quiet)."""
    if quiet:
        yield None
        return
    state = {"bar": None, "done": 0}

    def progress(done, total):
        if state["bar"] is None:
            state["bar"] = click.progressbar(length=total, label=label, file=click.get_text_stream("stderr"))
            state["bar"].__enter__()
        state["bar"].update(done - state["done"])
        state["done"] = done

    try:
        yield progress
    finally:
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)


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
