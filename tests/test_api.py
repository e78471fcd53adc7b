"""The public API (issue 11, items 4 and 6): what `import nngp_lut` exposes and sets, typed
public functions, one memory budget, tables read once per process."""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import nngp_lut
from nngp_lut import gp, kernel, tables


def run_python(code, **env):
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**clean, **env}, check=True)
    return out.stdout.strip()


def test_import_sets_no_process_wide_flag_and_the_command_does():
    assert run_python("import os, sys, nngp_lut; "
                      "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), 'numpy' in sys.modules)"
                      ) == "None False"
    assert run_python("import os, nngp_lut.cli; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
                      ) == "20"
    assert run_python("import os, nngp_lut; print(nngp_lut.set_openblas_idle_timeout(18), "
                      "os.environ['OPENBLAS_THREAD_TIMEOUT'])") == "True 18"
    # a value of the user's is kept; after numpy has loaded, nothing is set
    assert run_python("import os, nngp_lut.cli; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])",
                      OPENBLAS_THREAD_TIMEOUT="25") == "25"
    assert run_python("import numpy, os, nngp_lut; print(nngp_lut.set_openblas_idle_timeout(), "
                      "os.environ.get('OPENBLAS_THREAD_TIMEOUT'))") == "False None"


def test_submodules_and_names_as_documented():
    for name in nngp_lut.__all__:
        assert getattr(nngp_lut, name) is not None, name
    assert nngp_lut.linalg.cholesky and nngp_lut.sklearn.NNGPKernel
    assert nngp_lut.build_table is tables.build_table
    with pytest.raises(AttributeError, match="no attribute"):
        nngp_lut.nothing


def test_sklearn_submodule_names_its_extra_when_scikit_learn_is_absent(tmp_path):
    # A stand-in 'sklearn' package that fails to import, first on the path.
    (tmp_path / "sklearn").mkdir()
    (tmp_path / "sklearn" / "__init__.py").write_text("raise ImportError('absent')\n")
    code = ("import nngp_lut\ntry:\n    nngp_lut.sklearn\nexcept ImportError as e:\n"
            "    print(e)\n")
    out = run_python(f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n{code}")
    assert 'pip install "nngp-lut[sklearn]"' in out


@pytest.mark.parametrize("module", ["activations", "data", "gp", "linalg", "plots", "search",
                                    "tables", "sklearn", "kernel", "expectation"])
def test_public_functions_are_typed_and_listed(module):
    mod = getattr(nngp_lut, module)
    assert mod.__all__, module
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isfunction(obj):
            sig = inspect.signature(obj)
            assert sig.return_annotation is not inspect.Signature.empty, f"{module}.{name}"
            for p in sig.parameters.values():
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    assert p.annotation is not inspect.Parameter.empty, \
                        f"{module}.{name}({p.name})"


def test_memory_budget_reaches_the_kernel_and_the_cholesky(monkeypatch, rng):
    seen = {"kernel": set(), "cholesky": set()}
    real_kernel, real_chol = kernel.Network.kernel, gp.linalg.cholesky

    def spy_kernel(self, *a, memory=kernel.DEFAULT_MEMORY, **k):
        seen["kernel"].add(memory)
        return real_kernel(self, *a, memory=memory, **k)

    def spy_chol(*a, memory="auto", **k):
        seen["cholesky"].add(memory)
        return real_chol(*a, memory=memory, **k)

    monkeypatch.setattr(kernel.Network, "kernel", spy_kernel)
    monkeypatch.setattr(gp.linalg, "cholesky", spy_chol)
    x = rng.standard_normal((30, 4))
    res = gp.evaluate(x[:20], np.arange(20) % 2, x[20:], np.arange(10) % 2, phi="relu",
                      depth=2, weight_var=1.5, bias_var=0.1, memory="7MB")
    assert res.n_test == 10
    assert seen == {"kernel": {7_000_000}, "cholesky": {7_000_000}}


def test_tables_are_read_once_per_process(monkeypatch, rng):
    pytest.importorskip("sklearn")
    from nngp_lut.sklearn import NNGPKernel

    nngp_lut.cached_table("relu")  # built (or found) in the cache
    monkeypatch.setattr(tables, "_OPENED", {})
    reads = []
    real = tables.open_table
    monkeypatch.setattr(tables, "open_table", lambda p: reads.append(p) or real(p))
    k = NNGPKernel("relu", depth=2, weight_var=1.4, bias_var=0.2)
    x = rng.standard_normal((10, 3))
    for _ in range(3):
        k(x, eval_gradient=True)
    assert len(reads) == 1
