"""Blocked Cholesky (issue #4): scipy's dense solvers as truth, tiles that do not divide n,
out of core, jitter retries, a killed and resumed run, resource errors."""

import json
import shutil

import numpy as np
import pytest
import scipy.linalg

from nngp_lut import linalg

#: Tolerance against scipy's dense factor and solves, stated once (relative, float64).
TOL = 1e-11


def spd(n, seed=0):
    g = np.random.default_rng(seed).standard_normal((n, n + 3))
    return g @ g.T / n + 0.05 * np.eye(n)


def maker(a, calls=None):
    def make_tile(rows, cols):
        if calls is not None:
            calls.append((rows, cols))
        return a[rows[0]:rows[1], cols[0]:cols[1]].copy()
    return make_tile


def rel(x, ref):
    return np.abs(x - ref).max() / np.abs(ref).max()


@pytest.mark.parametrize("n, tile", [(1, 4), (50, 50), (97, 32), (130, 7), (64, 200)])
def test_factor_and_solves_match_scipy_in_ram(n, tile):
    a = spd(n)
    f = linalg.cholesky(maker(a), n, tile=tile)
    assert isinstance(f.store, linalg.MemoryTiles)
    ref = scipy.linalg.cholesky(a, lower=True)
    assert rel(f.to_dense(), ref) < TOL
    b = np.random.default_rng(1).standard_normal((n, 3))
    assert rel(f.solve(b), scipy.linalg.cho_solve((ref, True), b)) < TOL
    assert rel(f.solve_lower(b), scipy.linalg.solve_triangular(ref, b, lower=True)) < TOL
    assert f.solve(b[:, 0]).shape == (n,)
    assert f.logdet() == pytest.approx(np.linalg.slogdet(a)[1], rel=1e-12, abs=1e-10)
    assert f.jitter == 0.0


@pytest.mark.parametrize("n, tile, order", [(97, 32, "C"), (40, 64, "F")])
def test_the_callers_matrix_is_left_alone(n, tile, order):
    # Tiles that are views of the caller's matrix and already Fortran-ordered (the last row
    # when n = 1 mod tile; the one tile of a Fortran array) are not factored in place.
    a = np.array(spd(n), order=order)
    before = a.copy()
    f = linalg.cholesky(lambda r, c: a[r[0]:r[1], c[0]:c[1]], n, tile=tile,
                        jitters=(-1.0, 0.0))  # a failed rung makes the tiles again
    assert np.array_equal(a, before)
    assert rel(f.to_dense(), scipy.linalg.cholesky(before, lower=True)) < TOL


def test_out_of_core_matches_scipy_and_cleans_up(tmp_path):
    n = 301
    a = spd(n, seed=2)
    budget = 8 * (n * 40 + 3 * 40 * 40)  # a panel of 40 columns: tiles of 40 (7 per side + 1)
    in_ram, tile = linalg.plan(n, budget, tile=40)
    assert not in_ram and tile == 40 and n % tile
    f = linalg.cholesky(maker(a), n, memory=budget, tile=40, scratch=tmp_path,
                        fingerprint="t")
    assert isinstance(f.store, linalg.DiskTiles)
    ref = scipy.linalg.cholesky(a, lower=True)
    assert rel(f.to_dense(), ref) < TOL
    b = np.random.default_rng(3).standard_normal((n, 2))
    assert rel(f.solve(b), scipy.linalg.cho_solve((ref, True), b)) < TOL
    # Each factor tile is written once and the matrix tiles are gone.
    names = sorted(p.name for p in f.store.dir.iterdir())
    assert not [x for x in names if x.startswith("a_") or x.endswith(".partial")]
    assert len([x for x in names if x.startswith("l_")]) == 8 * 9 // 2
    f.remove()
    assert list(tmp_path.iterdir()) == []


def test_killed_run_resumes_without_redoing_finished_panels(tmp_path):
    n, tile = 200, 50
    a = spd(n, seed=4)
    budget = 8 * (n * tile + 3 * tile * tile)
    ref = linalg.cholesky(maker(a), n, tile=tile).to_dense()

    def kill_after_two_panels(stage, done, total):
        if stage == "cholesky" and done >= sum(linalg._panel_flops(
                linalg.tile_bounds(n, tile), j) for j in range(2)):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        linalg.cholesky(maker(a), n, memory=budget, tile=tile, scratch=tmp_path,
                        fingerprint="job", progress=kill_after_two_panels)
    job = tmp_path / "nngp-lut-job"
    assert json.loads((job / "state.json").read_text())["panels_done"] == 2
    # Without --resume the tiles are not thrown away.
    with pytest.raises(linalg.ScratchError, match="--resume"):
        linalg.cholesky(maker(a), n, memory=budget, tile=tile, scratch=tmp_path,
                        fingerprint="job")
    calls = []
    f = linalg.cholesky(maker(a, calls), n, memory=budget, tile=tile, scratch=tmp_path,
                        fingerprint="job", resume=True)
    assert calls == []  # every matrix tile was made before the kill; none made again
    assert rel(f.to_dense(), ref) < TOL
    f.remove()
    assert not job.exists()


def test_resume_of_another_matrix_is_refused(tmp_path):
    n, tile = 200, 40
    a = spd(n)
    budget = 8 * (n * tile + 3 * tile * tile)

    def stop(stage, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        linalg.cholesky(maker(a), n, memory=budget, tile=tile, scratch=tmp_path,
                        fingerprint="x", progress=stop)
    (tmp_path / "nngp-lut-x" / "state.json").write_text(json.dumps(
        {"n": n + 1, "tile": tile, "fingerprint": "x", "jitter_index": 0, "panels_done": 0}))
    with pytest.raises(linalg.ScratchError, match="another matrix"):
        linalg.cholesky(maker(a), n, memory=budget, tile=tile, scratch=tmp_path,
                        fingerprint="x", resume=True)


def test_jitter_ladder_retries_and_reports_the_jitter(tmp_path):
    n = 90
    g = np.random.default_rng(5).standard_normal((n, 10))
    a = g @ g.T  # rank 10: singular
    calls = []
    ladder = (0.0, -1.0, 1e-6)  # 0 and -1 fail, 1e-6 works
    f = linalg.cholesky(maker(a, calls), n, tile=32, jitters=ladder)
    assert f.jitter == 1e-6
    shifted = a + 1e-6 * np.eye(n)
    assert rel(f.to_dense(), scipy.linalg.cholesky(shifted, lower=True)) < 1e-9
    assert len(calls) > 6  # consumed tiles were made again for the retries


def test_not_positive_definite_at_the_largest_jitter_removes_scratch(tmp_path):
    n = 100
    a = -spd(n)
    budget = 8 * (n * 20 + 3 * 400)
    assert not linalg.plan(n, budget, tile=20)[0]
    with pytest.raises(linalg.NotPositiveDefinite, match="even with jitter 0.1"):
        linalg.cholesky(maker(a), n, memory=budget, tile=20, scratch=tmp_path,
                        fingerprint="np", jitters=linalg.PAPER_JITTERS)
    assert list(tmp_path.iterdir()) == []


def test_paper_jitter_ladder():
    assert linalg.PAPER_JITTERS[0] == 1e-10 and linalg.PAPER_JITTERS[-1] == pytest.approx(0.1)
    assert np.allclose(np.diff(np.log10(linalg.PAPER_JITTERS)), 1.0)


def test_budget_too_small_for_one_panel():
    with pytest.raises(MemoryError, match="--memory"):
        linalg.plan(100000, "10MB")


def test_too_little_disk_is_caught_before_starting(tmp_path, monkeypatch):
    n = 400
    budget = 8 * (n * 50 + 3 * 2500)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(linalg.shutil, "disk_usage",
                        lambda p: usage._replace(free=1000))
    calls = []
    with pytest.raises(linalg.ScratchError, match="GB free"):
        linalg.cholesky(maker(spd(n), calls), n, memory=budget, tile=50, scratch=tmp_path)
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_tile_bounds_cover_range_exactly():
    for n in (1, 5, 64, 65, 1000):
        for tile in (1, 7, 64, 5000):
            b = linalg.tile_bounds(n, tile)
            assert b[0][0] == 0 and b[-1][1] == n
            assert all(lo < hi <= lo + tile for lo, hi in b)
            assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
    assert linalg.packed_bytes(10, 4) == 8 * (4 * 10 + 4 * 6 + 2 * 2)
