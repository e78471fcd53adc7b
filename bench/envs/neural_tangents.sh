#!/usr/bin/env bash
# Bench-only environment for the peer library neural-tangents 0.6.5.
#
# neural-tangents 0.6.5 imports only with jax/jaxlib 0.4.30 (and, via
# neural_tangents.experimental, TensorFlow + tf2jax).  It is NEVER a dependency
# of nngp-lut: it lives in its own venv, used only by bench/nt_peer.py.
#
# Usage:   bash bench/envs/neural_tangents.sh            # full env (TF-cpu)
#          NT_LITE=1 bash bench/envs/neural_tangents.sh  # no TensorFlow (~1.5 GB less)
# Env:     NT_VENV  venv location (default $HOME/.cache/nngp-lut-bench/nt-venv)
#          PYTHON   interpreter to build the venv from (default python3; 3.9-3.12)
#          NT_LITE  1 = skip tensorflow-cpu/tf2jax; bench/nt_peer.py then stubs
#                   out neural_tangents.experimental (the only TF user).
# Idempotent: creates the venv only if absent, then installs the exact lock
# below with --no-deps (a no-op when already satisfied), checks the import and
# prints the venv's python path as the last line of output.
set -euo pipefail

NT_VENV="${NT_VENV:-$HOME/.cache/nngp-lut-bench/nt-venv}"
PYTHON="${PYTHON:-python3}"
NT_LITE="${NT_LITE:-0}"

# Core lock: enough for `import neural_tangents` + stax kernels on CPU when
# neural_tangents.experimental is stubbed (NT_LITE=1).
CORE_PINS=(
  neural-tangents==0.6.5
  jax==0.4.30
  jaxlib==0.4.30
  numpy==1.26.4
  scipy==1.17.1
  ml-dtypes==0.4.1
  opt_einsum==3.4.0
  frozendict==2.5.1
)
# TensorFlow lock (plain `import neural_tangents` needs it).  tensorflow-cpu is
# used instead of `tensorflow` (same code, no CUDA), which is why everything is
# installed with --no-deps: neural-tangents/tf2jax declare `tensorflow`, and a
# resolver would otherwise pull the ~600 MB GPU-capable wheel.  tf2jax 0.3.7+
# requires jax>=0.4.34, so 0.3.6 is the newest that fits jax 0.4.30.
TF_PINS=(
  tensorflow-cpu==2.17.1
  tf2jax==0.3.6
  dm-tree==0.1.10
  absl-py==2.5.1
  astunparse==1.6.3
  attrs==26.1.0
  certifi==2026.10.18
  charset-normalizer==3.5.2
  flatbuffers==25.12.19
  gast==0.7.0
  google-pasta==0.2.0
  grpcio==1.85.1
  h5py==3.16.0
  idna==3.20
  keras==3.15.1
  libclang==18.1.1
  Markdown==3.11.3
  markdown-it-py==4.3.0
  MarkupSafe==3.0.4
  mdurl==0.1.2
  namex==0.1.0
  optree==0.20.0
  packaging==26.3
  protobuf==4.25.9
  Pygments==2.21.0
  requests==2.34.2
  rich==15.0.0
  six==1.17.0
  tensorboard==2.17.1
  tensorboard-data-server==0.7.2
  tensorflow-io-gcs-filesystem==0.37.1
  termcolor==3.3.0
  typing_extensions==4.16.0
  urllib3==2.8.0
  Werkzeug==3.1.9
  wrapt==2.5.2
  wheel==0.48.0
)

if [[ ! -x "$NT_VENV/bin/python" ]]; then
  echo "creating venv $NT_VENV (from $PYTHON)" >&2
  mkdir -p "$(dirname "$NT_VENV")"
  "$PYTHON" -m venv "$NT_VENV"
fi
PY="$NT_VENV/bin/python"

PINS=("${CORE_PINS[@]}")
if [[ "$NT_LITE" != 1 ]]; then
  PINS+=("${TF_PINS[@]}")
fi
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "${PINS[@]}" 2>&1 \
  | grep -v "^WARNING: Location 'file:" >&2 || true
"$PY" -m pip show --quiet neural-tangents >/dev/null  # fail loudly if install failed

# Import check (float64, CPU).  In lite mode stub the TF-only subpackage first,
# exactly as bench/nt_peer.py does.
NT_LITE="$NT_LITE" "$PY" - <<'PYEOF' >&2
import os, sys, types, warnings
warnings.simplefilter("ignore")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("NT_LITE") == "1":
    sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import neural_tangents as nt
from neural_tangents import stax
_, _, kfn = stax.serial(stax.Dense(8, 1.0, 0.1), stax.Relu(), stax.Dense(1, 1.0, 0.1))
k = kfn(jnp.ones((2, 3)), None, "nngp")
assert k.dtype == jnp.float64, k.dtype
print(f"ok: neural_tangents {nt.__version__}, jax {jax.__version__}, "
      f"devices {jax.devices()}, lite={os.environ.get('NT_LITE') == '1'}")
PYEOF

echo "$PY"
