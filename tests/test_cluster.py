"""The Dask backend (issue 14): on a 2-worker LocalCluster the kernel, the factor, the solves
and the predictions equal the in-process path; a SIGKILLed worker changes nothing; a run
whose cluster dies resumes from its finished panels; the CLI flags and their errors."""

import os
import signal
import sys

import numpy as np
import pytest
from click.testing import CliRunner

distributed = pytest.importorskip("distributed")

from nngp_lut import cluster, linalg  # noqa: E402
from nngp_lut.cli.main import cli  # noqa: E402
from nngp_lut.errors import NotPositiveDefinite  # noqa: E402
from nngp_lut.gp import NNGPRegressor, evaluate  # noqa: E402
from nngp_lut.kernel import (Activation, Dense, FanInSum, FanOut, Network,  # noqa: E402
                             deep_network, parallel, serial)

from .conftest import SMALL_GRID  # noqa: E402

#: The issue's target: the cluster equals the in-process path to this relative error.
REL = 1e-12
#: Fixed noise variance of the comparisons: well conditioned, so 1e-12 measures the
#: algorithm and not the condition number.
JITTER = 1e-2


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as lc, \
            distributed.Client(lc) as c:
        yield c


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((420, 12))
    return x, rng.standard_normal((420, 3)), rng.standard_normal((60, 12))


@pytest.fixture(scope="module")
def net(table_of):
    return deep_network(table_of("relu"), 3, 1.6, 0.2)


def test_kernel_tiles_equal_the_in_process_kernel(client, data, net, table_of):
    x, _, xt = data
    assert rel(cluster.kernel(client, net, x, tile=128), net.kernel(x)) < REL
    assert rel(cluster.kernel(client, net, xt, x, tile=128), net.kernel(xt, x)) < REL
    # Any network of the layer algebra, every depth, the NTK.
    # (Tables, not names: the workers then need no table cache.)
    branchy = Network(serial(Dense(1.3, 0.1), FanOut(2), parallel(
        serial(Activation(table_of("tanh", **SMALL_GRID)), Dense(1.1, 0.05)),
        Activation(table_of("relu"))), FanInSum(), Dense(1.1, 0.05)))
    got = cluster.kernel(client, branchy, x[:200], get="ntk", all_depths=True, tile=64)
    assert got.shape == (branchy.depth + 1, 200, 200)
    assert rel(got, branchy.kernel(x[:200], get="ntk", all_depths=True)) < REL


def test_factor_solves_and_predictions_equal_the_in_process_path(client, data, net):
    x, y, xt = data
    ours = NNGPRegressor(network=net, jitter=JITTER, tile=128, client=client).fit(x, y)
    ref = NNGPRegressor(network=net, jitter=JITTER, tile=128).fit(x, y)
    assert isinstance(ours.factor_, cluster.DistributedCholesky)
    assert rel(ours.factor_.to_dense(), ref.factor_.to_dense()) < REL
    assert rel(ours.alpha_, ref.alpha_) < REL
    b = y[:, 0]
    assert rel(ours.factor_.solve_lower(b), ref.factor_.solve_lower(b)) < REL
    assert rel(ours.factor_.solve_upper(b), ref.factor_.solve_upper(b)) < REL
    assert abs(ours.factor_.logdet() - ref.factor_.logdet()) < REL * abs(ref.factor_.logdet())
    (m1, v1), (m0, v0) = ours.predict(xt, True), ref.predict(xt, True)
    assert rel(m1, m0) < REL and rel(v1, v0) < REL
    # And against an independent truth: scipy's dense solve of K + jitter I.
    k = net.kernel(x) + JITTER * np.eye(len(x))
    assert rel(ours.alpha_, np.linalg.solve(k, y)) < 1e-9


def test_jitter_ladder_picks_the_same_jitter(client, table_of):
    # A rank-5 kernel (depth 0: the linear model of 5 features) fails at small jitters.
    x = np.random.default_rng(5).standard_normal((300, 5))
    net0 = deep_network(table_of("relu"), 0, 1.0, 0.0)
    ladder = (0.0, 1e-3)
    tiles = lambda r, c: net0.kernel(x[c[0]:c[1]], x[r[0]:r[1]]).T  # noqa: E731
    ref = linalg.cholesky(tiles, 300, jitters=ladder, tile=64)
    ours = cluster.cholesky(client, cluster.kernel_tile, (net0, x), 300, jitters=ladder,
                            tile=64)
    assert ours.jitter == ref.jitter == 1e-3
    assert rel(ours.to_dense(), ref.to_dense()) < REL
    with pytest.raises(NotPositiveDefinite, match="not positive definite"):
        cluster.cholesky(client, cluster.kernel_tile, (net0, x), 300, jitters=(0.0,), tile=64)


def test_the_two_backends_agree_bit_for_bit(client, data, net, tmp_path):
    # One task graph run by both backends: with OpenBLAS single-threaded in process, as on
    # every worker, the factor, the solves and log det are identical, in RAM and out of core,
    # after a failed rung of the jitter ladder, with tiles that do not divide n.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, y, _ = data
    n, tile, ladder = len(x), 96, (-1.0, JITTER)  # -1 fails in the first tile column
    args = (net, x, None, "nngp")

    def make_tile(rows, cols):  # the very tiles the workers make
        return client.submit(cluster.kernel_tile, rows, cols, *args, pure=False).result()

    ours = cluster.cholesky(client, cluster.kernel_tile, args, n, jitters=ladder, tile=tile)
    budget = 8 * (n * tile + 3 * tile * tile) + 4096  # out of core, tiles of 96
    assert linalg.plan(n, budget, tile=tile) == (False, tile)
    want = {"factor": ours.to_dense(), "solve": ours.solve(y), "lower": ours.solve_lower(y),
            "upper": ours.solve_upper(y), "vector": ours.solve(y[:, 0]),
            "logdet": ours.logdet()}
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        for memory in ("auto", budget):
            ref = linalg.cholesky(make_tile, n, jitters=ladder, tile=tile, memory=memory,
                                  scratch=tmp_path, fingerprint="same")
            assert isinstance(ref.store, linalg.DiskTiles) == (memory == budget)
            got = {"factor": ref.to_dense(), "solve": ref.solve(y),
                   "lower": ref.solve_lower(y), "upper": ref.solve_upper(y),
                   "vector": ref.solve(y[:, 0]), "logdet": ref.logdet()}
            ref.remove()
            assert ref.jitter == ours.jitter == JITTER
            for name, value in want.items():
                assert np.array_equal(got[name], value), (memory, name)


def test_sigkill_of_a_worker_mid_factorisation_gives_the_identical_factor(client, data, net):
    x = np.random.default_rng(9).standard_normal((1600, 12))
    args = (net, x, None, "nngp")
    clean = cluster.cholesky(client, cluster.kernel_tile, args, 1600, jitters=(JITTER,),
                             tile=128).to_dense()
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = []

    def kill_halfway(stage, done, total):
        if not killed and done >= total // 2:
            os.kill(victim, signal.SIGKILL)
            killed.append(done)

    got = cluster.cholesky(client, cluster.kernel_tile, args, 1600, jitters=(JITTER,),
                           tile=128, progress=kill_halfway)
    assert killed and victim not in client.run(os.getpid).values()
    assert np.array_equal(got.to_dense(), clean)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests


def test_a_run_whose_cluster_died_resumes_from_its_finished_panels(client, data, net,
                                                                    tmp_path):
    x, _, _ = data
    args = (net, x, None, "nngp")

    class ClusterDied(Exception):
        pass

    def die_halfway(stage, done, total):
        if done >= total // 2:
            raise ClusterDied

    with pytest.raises(ClusterDied) as info:
        cluster.cholesky(client, cluster.kernel_tile, args, len(x), jitters=(JITTER,),
                         tile=64, scratch=tmp_path, fingerprint="t", progress=die_halfway)
    assert "resume" in info.value.__notes__[0]
    state = linalg.DiskTiles(tmp_path / "nngp-lut-t").load_state()
    assert 0 < state["panels_done"] < len(linalg.tile_bounds(len(x), 64))
    seen = []
    got = cluster.cholesky(client, cluster.kernel_tile, args, len(x), jitters=(JITTER,),
                           tile=64, scratch=tmp_path, fingerprint="t", resume=True,
                           progress=lambda s, d, t: seen.append(t))
    ref = cluster.cholesky(client, cluster.kernel_tile, args, len(x), jitters=(JITTER,),
                           tile=64)
    assert np.array_equal(got.to_dense(), ref.to_dense())
    # Only the tiles of the unfinished panels were factored again.
    nt = len(got.bounds)
    assert seen[-1] == sum(nt - j for j in range(state["panels_done"], nt))
    got.remove()
    assert not (tmp_path / "nngp-lut-t").exists()


def test_evaluate_on_the_cluster_matches(client, data, net):
    x, _, xt = data
    labels = np.arange(len(x)) % 3
    a = evaluate(x, labels, xt, np.arange(len(xt)) % 3, network=net, jitter=JITTER,
                 client=client)
    b = evaluate(x, labels, xt, np.arange(len(xt)) % 3, network=net, jitter=JITTER)
    assert a.accuracy == b.accuracy and rel(a.mean, b.mean) < REL


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_on_a_scheduler_and_on_local_workers(client, data, tmp_path):
    x, _, _ = data
    np.save(tmp_path / "x.npy", x[:150])
    common = ["kernel", "--phi", "relu", "--depth", "2", "--weight-var", "1.5", "--bias-var",
              "0.1", "--x1", str(tmp_path / "x.npy"), "-q"]
    res = run(*common, "--out", str(tmp_path / "ref.npy"))
    assert res.exit_code == 0, res.output
    res = run(*common, "--out", str(tmp_path / "k.h5"), "--workers", "2")
    assert res.exit_code == 0, res.output
    import h5py

    with h5py.File(tmp_path / "k.h5") as h5:
        assert rel(h5["kernel"][...], np.load(tmp_path / "ref.npy")) < REL
    # predict on the running cluster, against the in-process run.
    pred = ["predict", "--n-test", "200", "-q", "--json"]
    a = run(*pred, "--scheduler", client.scheduler.address)
    b = run(*pred)
    assert a.exit_code == 0 and b.exit_code == 0, a.output
    import json

    ja, jb = json.loads(a.output.splitlines()[-1]), json.loads(b.output.splitlines()[-1])
    # The paper's jitter 1e-10: K + jitter I has a condition number ~1e10, so the 1e-16
    # rounding differences of the tiles (two BLAS threads here, one per worker) reach 1e-11.
    assert ja["jitter"] == jb["jitter"] == 1e-10
    assert ja["accuracy"] == jb["accuracy"] and abs(ja["mse"] - jb["mse"]) < 1e-9 * jb["mse"]


def test_cli_errors_are_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 1.0)
    res = run("predict", "--n-test", "10", "-q", "--scheduler", "tcp://127.0.0.1:9")
    assert res.exit_code == 1
    assert res.output.startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert len(res.output.strip().splitlines()) == 1
    res = run("predict", "--n-test", "10", "-q", "--workers", "2", "--scheduler", "tcp://x:1")
    assert res.exit_code == 2 and "not both" in res.output
    monkeypatch.setitem(sys.modules, "distributed", None)
    res = run("predict", "--n-test", "10", "-q", "--workers", "2")
    assert res.exit_code == 1
    assert res.output.strip() == ('Error: the Dask backend needs dask.distributed: pip install '
                                  '"nngp-lut[distributed]"')
