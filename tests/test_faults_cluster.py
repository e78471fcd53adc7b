"""The local cluster (--workers) is quiet and bounded, and no process or file outlives the
command, whatever ends it (issue 21): Ctrl-C, SIGTERM, SIGKILL of the parent, an error.

Runs that are signalled are subprocesses with their own TMPDIR; each waits for a marker
line the run prints once its work is on the workers, so the signal lands mid-work.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from nngp_lut.cli.main import cli  # noqa: E402

from .conftest import SMALL_GRID  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a dead parent's workers may take to go.
GONE_WITHIN = 10.0


def descendants(pid):
    """Pids of every live process below pid (from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def workers(pids):
    """The dask worker processes among pids (multiprocessing's resource tracker, a helper
    of this process that lives as long as it, is not one)."""
    def cmdline(p):
        try:
            return Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            return b""

    return [p for p in pids if b"resource_tracker" not in cmdline(p)]


def alive(pids):
    out = []
    for p in pids:
        try:
            if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(p)
        except OSError:
            pass
    return out


def wait_gone(pids, within=GONE_WITHIN):
    deadline = time.monotonic() + within
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = alive(pids)
    for p in left:  # never leave them behind, even when the test fails
        os.kill(p, signal.SIGKILL)
    return left


@pytest.fixture(scope="module")
def job(tmp_path_factory, table_of):
    """A folder with a table and a dataset whose --workers 2 fit takes a few seconds."""
    d = tmp_path_factory.mktemp("cluster_faults")
    table_of("tanh", **SMALL_GRID).save(d / "tanh.h5")
    rng = np.random.default_rng(21)
    np.savez(d / "data.npz", x_train=rng.standard_normal((6000, 20)),
             y_train=np.arange(6000) % 3, x_test=rng.standard_normal((50, 20)),
             y_test=np.arange(50) % 3)
    return d


PREDICT = ["predict", "--data", "data.npz", "--table", "tanh.h5", "--depth", "2",
           "--weight-var", "1.5", "--bias-var", "0.1", "--workers", "2", "-q"]


def start(cwd, tmp, args):
    """nngp-lut ARGS in a new session (as a terminal's foreground job), printing "working"
    on stderr once the inputs are on the workers."""
    code = textwrap.dedent(f"""
        import sys
        from nngp_lut import cluster
        real = cluster.scatter_once
        def marked(*a, **k):
            out = real(*a, **k)
            print("working", file=sys.stderr, flush=True)
            return out
        cluster.scatter_once = marked
        from nngp_lut.cli.main import cli
        cli({[str(a) for a in args]!r})
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if line.strip() == "working" or not line:
            break
    return proc, lines


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_is_quiet_and_leaves_nothing(job, tmp_path, how):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc, lines = start(job, tmp, PREDICT)
    try:
        assert lines[-1].strip() == "working", "".join(lines)
        workers = descendants(proc.pid)
        time.sleep(0.5)
        if how == "ctrl-c":  # the terminal sends SIGINT to every process of the job
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "ERROR" not in err, err
    told = [line for line in err.splitlines() if line != "working"]
    assert told == ["Interrupted.", "Nothing was written: outputs are written only once "
                    "complete."], err
    assert wait_gone(workers) == []
    assert list(tmp.iterdir()) == []


def test_sigkill_of_the_parent_ends_its_busy_workers(tmp_path):
    """The workers hold the GIL in a long call (so no Python thread of theirs can run):
    they still die with their parent, and the next run removes the dead run's folder."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = textwrap.dedent("""
        import ctypes, sys, time
        from nngp_lut.cluster import connect

        def hold_the_gil(seconds):
            ctypes.PyDLL(None).sleep(seconds)  # PyDLL keeps the GIL during the call

        with connect(workers=2) as client:
            futures = [client.submit(hold_the_gil, 60, pure=False) for _ in range(2)]
            time.sleep(1)
            print("working", flush=True)
            time.sleep(120)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().strip() == "working"
        workers = descendants(proc.pid)
        assert len(workers) >= 2
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert wait_gone(workers) == []
    (stale,) = tmp.iterdir()  # a SIGKILLed process cannot clean up after itself
    assert stale.name.startswith(f"nngp-lut-dask-{proc.pid}-")
    again = subprocess.run([sys.executable, "-c", "from nngp_lut.cluster import connect\n"
                            "with connect(workers=1): pass"], env=env, timeout=120,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert list(tmp.iterdir()) == []


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_an_error_on_the_cluster_leaves_nothing(job, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(job)
    before = set(descendants(os.getpid()))
    res = run(*PREDICT[:2], "missing.npz", *PREDICT[3:])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: missing.npz: no such file") and \
        "Traceback" not in res.output
    assert wait_gone(workers(set(descendants(os.getpid())) - before)) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag,value,message", [
    ("--workers", "1000", "is more than this machine runs: at most"),
    ("--scheduler", "", "--scheduler needs the address of a running Dask scheduler"),
])
def test_bad_cluster_flags_are_usage_errors_before_any_process(job, monkeypatch, flag, value,
                                                               message):
    monkeypatch.chdir(job)
    before = set(descendants(os.getpid()))
    res = run(*PREDICT[:-3], flag, value)
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("Error")]
    assert message in line
    assert set(descendants(os.getpid())) == before
