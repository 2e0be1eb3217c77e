#!/usr/bin/env bash
# Everything the tests need, then the tests: README's test command, and what .ci/run calls.
#
#   bash tests/install_and_test.sh [PYTEST ARGS...]
#
# 1. A virtual environment for the project (reused when it exists): $STEMSPLIT_TEST_VENV,
#    default <repo>/.venv-test; the one already active when $VIRTUAL_ENV is set.
# 2. stemsplit from this checkout with the test and ray extras, on the CPU build of torch 2.13.0
#    (a plain `pip install torch` on Linux pulls the CUDA build, several GB).
# 3. audio-separator 0.47.1 without its dependencies: a test oracle only (its RoFormer and
#    MDX23C classes and its MDX-Net command line); its own pins would replace torch.
# 4. The Spleeter oracle (Deezer's spleeter on TensorFlow, which needs numpy <= 1.24.3) in a
#    venv of its own (tests/spleeter_oracle/setup.sh); the Open-Unmix oracle (openunmix 1.3.0
#    without its dependencies, in <repo>/.openunmix-oracle, run by the project's python with
#    a stub torchaudio: tests/umx_oracle/setup.sh).
# 5. A system ffmpeg beside the bundled imageio-ffmpeg binary, where apt-get and root allow
#    it: the suite runs with the system one, then the audio tests with the bundled one.
# 6. pytest, with CI=true unless set: a parity test whose oracle is missing fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${VIRTUAL_ENV:-}" ] && [ -z "${STEMSPLIT_TEST_VENV:-}" ]; then
    venv="$VIRTUAL_ENV"
else
    venv="${STEMSPLIT_TEST_VENV:-.venv-test}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
fi
python="$venv/bin/python"
"$python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$python" -m pip install -q "torch==2.13.0" -e ".[test,ray]"
"$python" -m pip install -q --no-deps "audio-separator==0.47.1"
bash tests/spleeter_oracle/setup.sh
bash tests/umx_oracle/setup.sh "$python"
if ! command -v ffmpeg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q --no-install-recommends ffmpeg >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 \
             && apt-get install -y -q --no-install-recommends ffmpeg >/dev/null 2>&1; } \
        || echo "warning: could not install a system ffmpeg; the suite runs with the bundled one only"
fi
export CI="${CI:-true}"
"$python" -m pytest -q "$@"
if [ $# -eq 0 ] && command -v ffmpeg >/dev/null 2>&1; then
    echo "audio tests with the bundled ffmpeg (STEMSPLIT_FFMPEG=bundled):"
    STEMSPLIT_FFMPEG=bundled "$python" -m pytest -q tests/test_audio.py tests/test_robustness.py
fi
