"""Fault injection: every command that takes files, fed damaged inputs, existing outputs,
read-only destinations, a full disk, SIGKILL and Ctrl-C (issue #10).

Each case asserts the exit status, the one-line message, that no file the user had changed
(hashes before / after) and that no half-written file sits under a final name.  Commands run
in-process (click's CliRunner) except where a real SIGKILL is needed: then a subprocess
started with ``python -c`` patches one library function to kill itself at its Nth call.
Read-only folders and a full disk are simulated (the tests may run as root, which ignores
permissions): ``os.open`` refuses to create files in the read-only folder, and ``os.fsync``
reports ENOSPC, as a full disk does at the latest when the data are flushed.
"""

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nngp_lut import _files
from nngp_lut.errors import OutputExists
from nngp_lut.cli.main import cli

from .conftest import SMALL_GRID

ROOT = Path(__file__).resolve().parents[1]
NET = ["--depth", "2", "--weight-var", "1.5", "--bias-var", "0.1"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def snapshot(folder):
    """{relative path: sha256} of every file under folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder):
    """Temporary or partial files (none may remain after a command that ended)."""
    return [p.name for p in folder.rglob("*")
            if _files.TEMP_TAG in p.name or p.name.endswith(".partial")
            or _files.LOCK_TAG in p.name]


def one_error_line(res):
    lines = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output, res.output
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory, table_of):
    """A folder with a small table, a dataset, inputs and a search's results."""
    d = tmp_path_factory.mktemp("faults")
    table_of("tanh", **SMALL_GRID).save(d / "tanh.h5")
    rng = np.random.default_rng(3)
    data = dict(x_train=rng.standard_normal((40, 5)), y_train=np.arange(40) % 4,
                x_test=rng.standard_normal((10, 5)), y_test=np.arange(10) % 4)
    np.savez(d / "data.npz", **data)
    np.save(d / "x.npy", data["x_train"][:12])
    # Out of core needs more than a tile (256) of training examples: 1000 under 7MB.
    np.savez(d / "big.npz", x_train=rng.standard_normal((1000, 5)),
             y_train=np.arange(1000) % 4, x_test=data["x_test"], y_test=data["y_test"])
    res = run("search", "--data", d / "data.npz", "--table", d / "tanh.h5", "--depths", "1,2",
              "--weight-var-grid", "1:2:2", "--bias-var-grid", "0.1:0.2:2", "--n-val", "10",
              "--out", d / "results.csv", "-q")
    assert res.exit_code == 0, res.output
    return d


@pytest.fixture
def user(work, tmp_path, monkeypatch):
    """A fresh copy of the work folder as the current directory."""
    for p in work.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- damaged inputs ------------------------------------------------------------------------------
def truncated(path):
    b = path.read_bytes()
    path.write_bytes(b[: len(b) // 2])


def bit_flipped(path):
    b = bytearray(path.read_bytes())
    for i in range(len(b) // 3, len(b) // 3 + 64):  # inside headers and data
        b[i] ^= 0xFF
    path.write_bytes(bytes(b))


def wrong_format(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n not what the name says")


DAMAGE = {"truncated": truncated, "bit-flipped": bit_flipped, "wrong-format": wrong_format}
#: (command line, the input file it reads); every output goes to out.*.
READERS = {
    "info": (["info", "tanh.h5"], "tanh.h5"),
    "kernel-table": (["kernel", "--table", "tanh.h5", *NET, "--x1", "x.npy", "--out",
                      "out.npy"], "tanh.h5"),
    "kernel-x1": (["kernel", "--table", "tanh.h5", *NET, "--x1", "x.npy", "--out", "out.npy"],
                  "x.npy"),
    "predict-data": (["predict", "--data", "data.npz", "--table", "tanh.h5", *NET, "--out",
                      "out.npz"], "data.npz"),
    "predict-table": (["predict", "--data", "data.npz", "--table", "tanh.h5", *NET, "--out",
                       "out.npz"], "tanh.h5"),
    "search-data": (["search", "--data", "data.npz", "--table", "tanh.h5", "--depths", "1",
                     "--weight-var-grid", "1", "--bias-var-grid", "0.1", "--n-val", "10",
                     "--out", "out.csv"], "data.npz"),
    "plot-phase": (["plot", "phase", "--results", "results.csv", "--depth", "1", "--phi",
                    "tanh.h5", "--out", "out.png"], "results.csv"),
    "plot-table": (["plot", "table", "--table", "tanh.h5", "--out", "out.png"], "tanh.h5"),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("reader", READERS)
def test_damaged_input_is_one_line_and_changes_nothing(user, reader, damage):
    args, victim = READERS[reader]
    DAMAGE[damage](user / victim)
    before = snapshot(user)
    res = run(*args)
    if res.exit_code == 0:
        # A flip in padding or in a CSV's digits can leave a valid file: then the command
        # must simply work (bit-flipped CSV numbers are still numbers); a results file cut
        # mid-line is plotted without its torn line, with a warning.
        assert damage == "bit-flipped" or (reader, damage) == ("plot-phase", "truncated")
        if damage == "truncated":
            assert "Warning: " in res.output and "torn" in res.output
    else:
        assert res.exit_code == 1, res.output
        one_error_line(res)
        assert not list(user.glob("out*")), res.output
    after = snapshot(user)
    assert {k: v for k, v in after.items() if k in before} == before
    assert leftovers(user) == []


def test_damaged_cached_table_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("NNGP_LUT_CACHE", str(tmp_path))
    from nngp_lut.tables import cached_table

    first = cached_table("relu")
    (path,) = tmp_path.glob("relu-*.h5")
    b = bytearray(path.read_bytes())
    b[112] ^= 0xFF  # an object header: h5py raised KeyError ("unable to determine type")
    path.write_bytes(bytes(b))
    with pytest.warns(UserWarning, match="damaged cached table"):
        again = cached_table("relu")
    np.testing.assert_array_equal(again.f_normalized, first.f_normalized)
    assert cached_table("relu").activation_name == "relu"  # the rebuilt file opens


# --- outputs -------------------------------------------------------------------------------------
#: Commands writing one output (the last entry of each is the output path).
WRITERS = {
    "build": ["build", "--phi", "relu", "-q", "--out", "out.h5"],
    "kernel-npy": ["kernel", "--table", "tanh.h5", *NET, "--x1", "x.npy", "-q", "--out",
                   "out.npy"],
    "kernel-h5": ["kernel", "--table", "tanh.h5", *NET, "--x1", "x.npy", "-q", "--out",
                  "out.h5"],
    "predict": ["predict", "--data", "data.npz", "--table", "tanh.h5", *NET, "-q", "--out",
                "out.npz"],
    "search": ["search", "--data", "data.npz", "--table", "tanh.h5", "--depths", "1",
               "--weight-var-grid", "1", "--bias-var-grid", "0.1", "--n-val", "10", "-q",
               "--out", "out.csv"],
    "plot-phase": ["plot", "phase", "--results", "results.csv", "--depth", "1", "--phi",
                   "tanh.h5", "--out", "out.png"],
    "plot-table": ["plot", "table", "--table", "tanh.h5", "--out", "out.png"],
}


@pytest.mark.parametrize("writer", WRITERS)
def test_existing_output_needs_force(user, writer):
    args = WRITERS[writer]
    out = user / args[-1]
    out.write_bytes(b"the user's precious file")
    before = snapshot(user)
    res = run(*args)
    assert res.exit_code == 1, res.output
    assert "--force" in one_error_line(res)
    assert snapshot(user) == before and leftovers(user) == []
    if writer == "search":
        return  # --force there starts the search over; tested in test_search_force
    res = run(*args, "--force")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() != b"the user's precious file" and leftovers(user) == []


def test_search_force_starts_over(user):
    res = run(*WRITERS["search"][:-1], "results.csv", "--force")
    assert res.exit_code == 0, res.output
    assert len((user / "results.csv").read_text().splitlines()) == 2  # header + 1 row


def test_a_figure_never_overwrites_its_input(user):
    before = snapshot(user)
    for extra in ([], ["--force"]):
        res = run("plot", "phase", "--results", "results.csv", "--depth", "1", "--phi",
                  "tanh.h5", "--out", "results.png", *extra)
        assert res.exit_code == 1, res.output
        assert "its input" in one_error_line(res)
    assert snapshot(user) == before and leftovers(user) == []


@pytest.fixture
def read_only(user, monkeypatch):
    """The folder ro/ refuses new files (EACCES), as a read-only folder does."""
    ro = user / "ro"
    ro.mkdir()
    real = os.open

    def guarded(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(path).resolve().parent == ro.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    return ro


@pytest.mark.parametrize("writer", WRITERS)
def test_read_only_destination_fails_before_the_work(user, read_only, writer, monkeypatch):
    args = WRITERS[writer][:-1] + [f"ro/{WRITERS[writer][-1]}"]
    from nngp_lut import gp, tables

    def no_work(*a, **k):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(gp.NNGPRegressor, "fit", no_work)
    monkeypatch.setattr(tables, "build_table", no_work)
    before = snapshot(user)
    res = run(*args)
    assert res.exit_code == 1, res.output
    assert "permission denied" in one_error_line(res)
    assert snapshot(user) == before and leftovers(user) == []


@pytest.fixture
def disk_full(monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)


@pytest.mark.parametrize("writer", WRITERS)
def test_full_disk_leaves_nothing_half_written(user, disk_full, writer):
    before = snapshot(user)
    res = run(*WRITERS[writer])
    assert res.exit_code == 1, res.output
    assert "no space left" in one_error_line(res)
    after = snapshot(user)
    assert {k: v for k, v in after.items() if k in before} == before
    # search appends row by row: its results file may hold the header, never half a row
    assert set(after) - set(before) <= ({"out.csv"} if writer == "search" else set())
    assert leftovers(user) == []


def test_predict_prints_results_before_a_failed_write(user, monkeypatch):
    from nngp_lut import _files as files

    def fail(*a, **k):
        raise files.os_failure(OSError(errno.ENOSPC, "No space"), "out.npz")

    monkeypatch.setattr(files, "atomic_write", fail)
    res = run(*WRITERS["predict"])
    assert res.exit_code == 1
    assert "test accuracy" in res.output and "no space left" in one_error_line(res)


# --- Ctrl-C (KeyboardInterrupt at a chosen call) ---------------------------------------------
def interrupt_at(monkeypatch, owner, name, n):
    """Make owner.name raise KeyboardInterrupt at its n-th call."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def patched(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(owner, name, patched)


PREDICT_OOC = ["predict", "--data", "big.npz", "--table", "tanh.h5", *NET, "--memory",
               "7MB", "--scratch", "scratch", "--json", "-q"]


def test_ctrl_c_out_of_core_says_what_was_kept_and_how_to_resume(user, monkeypatch):
    from nngp_lut import linalg

    with monkeypatch.context() as m:
        interrupt_at(m, linalg.DiskTiles, "put", 6)
        res = run(*PREDICT_OOC)
    assert res.exit_code == 130, res.output
    assert "Interrupted." in res.output and "kept:" in res.output
    resume = [line for line in res.output.splitlines() if line.startswith("To continue: ")]
    assert resume == [f"To continue: nngp-lut {' '.join(PREDICT_OOC)} --resume"]
    assert leftovers(user / "scratch") == [] and (user / "scratch").is_dir()
    import json

    res = run(*PREDICT_OOC, "--resume")
    assert res.exit_code == 0, res.output
    whole = run(*PREDICT_OOC)  # uninterrupted: the resumed run is bit-identical
    got, want = (json.loads(r.stdout.splitlines()[-1]) for r in (res, whole))
    assert {**got, "timings": 0} == {**want, "timings": 0}
    assert list((user / "scratch").iterdir()) == []


@pytest.mark.parametrize("cmd,owner,name", [
    ("build", "nngp_lut.tables._Progress", "advance"),
    ("predict", "nngp_lut.gp.NNGPRegressor", "predict"),
    ("kernel-h5", "nngp_lut.kernel.Network", "kernel"),
])
def test_ctrl_c_elsewhere_writes_nothing(user, monkeypatch, cmd, owner, name):
    import importlib

    mod, _, cls = owner.rpartition(".")
    interrupt_at(monkeypatch, getattr(importlib.import_module(mod), cls), name, 1)
    before = snapshot(user)
    res = run(*WRITERS[cmd])
    assert res.exit_code == 130, res.output
    assert "Interrupted." in res.output and "Nothing was written" in res.output
    assert snapshot(user) == before and leftovers(user) == []


def test_ctrl_c_search_keeps_rows_and_resumes_without_duplicates(user, monkeypatch):
    from nngp_lut import search

    args = ["search", "--data", "data.npz", "--table", "tanh.h5", "--depths", "1,2",
            "--weight-var-grid", "1:2:2", "--bias-var-grid", "0.1:0.2:2", "--n-val", "10",
            "--out", "new.csv", "-q"]
    with monkeypatch.context() as m:
        interrupt_at(m, search, "score_setting", 3)
        res = run(*args)
    assert res.exit_code == 130 and "kept: 2 of 4 settings" in res.output, res.output
    assert f"To continue: nngp-lut {' '.join(args)} --resume" in res.output
    assert run(*args, "--resume").exit_code == 0
    assert sorted((user / "new.csv").read_text().splitlines()) == \
        sorted((user / "results.csv").read_text().splitlines())


def test_resume_after_a_torn_line_has_no_duplicates(user):
    text = (user / "results.csv").read_text()
    for cut in (1, 7, 20, len(text.splitlines()[-1]) + 3):
        (user / "r.csv").write_text(text[:-cut])
        res = run("search", "--data", "data.npz", "--table", "tanh.h5", "--depths", "1,2",
                  "--weight-var-grid", "1:2:2", "--bias-var-grid", "0.1:0.2:2", "--n-val",
                  "10", "--out", "r.csv", "--resume", "-q")
        assert res.exit_code == 0, res.output
        assert sorted((user / "r.csv").read_text().splitlines()) == \
            sorted(text.splitlines()), cut


# --- concurrency -----------------------------------------------------------------------------------
def test_second_run_on_the_same_scratch_is_refused(user, monkeypatch):
    from nngp_lut import linalg

    with monkeypatch.context() as m:
        interrupt_at(m, linalg.DiskTiles, "put", 6)
        assert run(*PREDICT_OOC).exit_code == 130
    (job,) = (user / "scratch").iterdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from nngp_lut._files import Lock
            Lock({str(job / 'lock')!r}, what="x").acquire()
            print("locked", flush=True)
            time.sleep(120)""")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(user)
        res = run(*PREDICT_OOC, "--resume")
        assert res.exit_code == 1, res.output
        assert f"pid {holder.pid}" in one_error_line(res) and job.name in res.output
        assert snapshot(user) == before
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert run(*PREDICT_OOC, "--resume").exit_code == 0


# --- SIGKILL (a subprocess that kills itself at a chosen call) ----------------------------------
def killed_run(cwd, target, n, args):
    """Run nngp-lut ARGS in a subprocess whose ``target`` (module:attribute path) sends
    SIGKILL to its own process at its n-th call, after the call's work when ``after``."""
    mod, attr = target.split(":")
    owner, _, name = attr.rpartition(".")
    code = textwrap.dedent(f"""
        import importlib, os, signal, sys
        mod = importlib.import_module({mod!r})
        owner = mod
        for part in {owner!r}.split(".") if {owner!r} else []:
            owner = getattr(owner, part)
        real = getattr(owner, {name!r})
        calls = [0]
        def patched(*a, **k):
            calls[0] += 1
            out = real(*a, **k)
            if calls[0] == {n}:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        setattr(owner, {name!r}, patched)
        from nngp_lut.cli.main import cli
        cli([{", ".join(repr(str(a)) for a in args)}])
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc


def test_sigkill_while_saving_a_table_leaves_a_recognisable_temp_that_is_cleaned(user):
    killed_run(user, "nngp_lut.tables:_write", 1,
               ["build", "--phi", "relu", "-q", "--out", "t.h5"])
    assert not (user / "t.h5").exists()
    (tmp,) = [p.name for p in user.iterdir() if _files.TEMP_TAG in p.name]
    assert tmp.startswith(".t.h5" + _files.TEMP_TAG)
    assert run("build", "--phi", "relu", "-q", "--out", "t.h5").exit_code == 0
    assert leftovers(user) == [] and (user / "t.h5").is_file()


def test_sigkill_while_streaming_a_kernel_then_rerun(user):
    args = ["kernel", "--table", "tanh.h5", *NET, "--x1", "x.npy", "--memory", "1KB", "-q",
            "--out", "k.h5"]
    killed_run(user, "nngp_lut.kernel.executor:_write_panel", 1, args)
    assert not (user / "k.h5").exists()
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert leftovers(user) == []


def test_sigkill_out_of_core_predict_resumes(user):
    killed_run(user, "nngp_lut.linalg:DiskTiles.put", 8, PREDICT_OOC)
    (job,) = (user / "scratch").iterdir()
    assert (job / "state.json").is_file()
    res = run(*PREDICT_OOC)
    assert res.exit_code == 1 and "--resume" in one_error_line(res)
    res = run(*PREDICT_OOC, "--resume")
    assert res.exit_code == 0, res.output
    assert list((user / "scratch").iterdir()) == []


def test_sigkill_mid_row_of_a_search_resumes_without_duplicates(user):
    args = ["search", "--data", "data.npz", "--table", "tanh.h5", "--depths", "1,2",
            "--weight-var-grid", "1:2:2", "--bias-var-grid", "0.1:0.2:2", "--n-val", "10",
            "--out", "new.csv", "-q"]
    killed_run(user, "nngp_lut.search:_Appender.append", 2, args)
    with open(user / "new.csv", "a") as f:
        f.write("tanh,2,2.0,0.3,0.5")  # what a kill in the middle of a write leaves
    assert run(*args, "--resume").exit_code == 0
    assert sorted((user / "new.csv").read_text().splitlines()) == \
        sorted((user / "results.csv").read_text().splitlines())
    assert leftovers(user) == []


# --- bugs, warnings, JSON, extras, umask ------------------------------------------------------
def test_a_bug_keeps_its_traceback_and_exits_3(user, monkeypatch):
    from nngp_lut import gp

    def bug(*a, **k):
        raise ValueError("an internal bug")

    monkeypatch.setattr(gp, "regression_targets", bug)
    res = run(*WRITERS["predict"])
    assert res.exit_code == 3
    assert "Traceback" in res.output and "ValueError: an internal bug" in res.output
    assert "bug in nngp-lut" in res.output


def test_one_class_and_collapsed_kernels_warn(user):
    d = dict(np.load(user / "data.npz"))
    np.savez(user / "one.npz", **dict(d, y_train=np.zeros(40, int), y_test=np.zeros(10, int)))
    res = run("predict", "--data", "one.npz", "--table", "tanh.h5", *NET, "-q")
    assert res.exit_code == 0 and "Warning: the training labels hold a single class" in \
        res.output
    res = run("predict", "--data", "data.npz", "--phi", "relu", "--depth", "200",
              "--weight-var", "1.5", "--bias-var", "0.1", "-q")
    assert res.exit_code == 0 and "Warning: the kernel has collapsed" in res.output
    res = run("predict", "--data", "data.npz", "--phi", "relu", *NET, "-q")
    assert "Warning" not in res.output


def test_search_json_of_a_regression_is_strict_json(user):
    import json

    d = dict(np.load(user / "data.npz"))
    rng = np.random.default_rng(0)
    np.savez(user / "reg.npz", **dict(d, y_train=rng.standard_normal(40),
                                      y_test=rng.standard_normal(10)))
    res = run("search", "--data", "reg.npz", "--table", "tanh.h5", "--depths", "1",
              "--weight-var-grid", "1", "--bias-var-grid", "0.1", "--n-val", "10", "--out",
              "reg.csv", "--json", "-q")
    assert res.exit_code == 0, res.output
    line = res.stdout.splitlines()[-1]
    summary = json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert summary["best"]["val_accuracy"] is None and summary["test_accuracy"] is None


@pytest.mark.parametrize("blocked,command", [
    ("matplotlib", "from nngp_lut.cli.main import cli; "
     "cli(['plot', 'table', '--phi', 'relu', '--out', 't.png'])"),
    ("sklearn", "import nngp_lut.sklearn"),
])
def test_missing_extras_are_named_before_any_work(tmp_path, blocked, command):
    proc = subprocess.run([sys.executable, "-c", f"import sys; sys.modules[{blocked!r}] = None; "
                           + command], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    extra = {"matplotlib": "plot", "sklearn": "sklearn"}[blocked]
    assert f'nngp-lut[{extra}]' in proc.stderr
    if blocked == "matplotlib":
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert list(tmp_path.iterdir()) == []  # nothing computed, nothing written


def test_written_files_get_the_umask(user):
    old = os.umask(0o022)
    try:
        assert run(*WRITERS["kernel-npy"]).exit_code == 0
        assert run(*WRITERS["build"]).exit_code == 0
    finally:
        os.umask(old)
    assert (user / "out.npy").stat().st_mode & 0o777 == 0o644
    assert (user / "out.h5").stat().st_mode & 0o777 == 0o644


def test_kernel_checks_free_disk_before_the_work(user, monkeypatch):
    import shutil

    usage = shutil.disk_usage(user)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10**5))
    before = snapshot(user)
    res = run("kernel", "--table", "tanh.h5", *NET, "--x1", "big.npz:x_train", "--memory",
              "1MB", "--out", "k.h5")
    assert res.exit_code == 1 and "GB free" in one_error_line(res)
    assert snapshot(user) == before and leftovers(user) == []


def test_atomic_target_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "k.h5"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with _files.atomic_target(path) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []
    with _files.atomic_target(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and leftovers(tmp_path) == []
    with pytest.raises(OutputExists):
        with _files.atomic_target(path, force=False):
            pass
