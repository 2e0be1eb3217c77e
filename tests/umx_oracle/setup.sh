#!/usr/bin/env bash
# The Open-Unmix test oracle: sigsep's openunmix 1.3.0 from the package index, installed
# without its dependencies into a folder of its own, run by the project's python (its torch
# and numpy). Its pins want torchaudio, which cannot import against the project's torch:
# openunmix imports torchaudio at the top of utils.py and transforms.py but uses it only to
# read files and resample, so the folder also holds a stub `torchaudio` that raises when
# anything in it is touched. The stub lives here, in the oracle's folder, never in stemsplit.
#
#   tests/umx_oracle/setup.sh [PYTHON]     (default python: <repo>/.venv-test, else python3)
#
# Idempotent: a complete folder (the stamp file below) returns at once. The tests find it at
# <repo>/.openunmix-oracle, or $STEMSPLIT_UMX_ORACLE names it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${1:-${PYTHON:-python3}}"
target="${STEMSPLIT_UMX_ORACLE:-$repo/.openunmix-oracle}"
stamp="$target/.stemsplit-oracle-ready"
version="openunmix 1.3.0 (--no-deps), torchaudio stub v1"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ] && [ -f "$target/openunmix/model.py" ]; then
    exit 0
fi
rm -rf "$target.part"
"$python" -m pip --disable-pip-version-check -q install --no-deps --no-compile \
    --target "$target.part" "openunmix==1.3.0"
mkdir -p "$target.part/torchaudio"
cat > "$target.part/torchaudio/__init__.py" <<'PY'
"""A stand-in for torchaudio in stemsplit's Open-Unmix oracle: importable, unusable."""


def __getattr__(name):
    raise ImportError(f"torchaudio.{name}: torchaudio is a stub in this oracle (file I/O "
                      "and resampling are not available)")
PY
printf '*\n' > "$target.part/.gitignore"
printf '%s' "$version" > "$target.part/.stemsplit-oracle-ready"
rm -rf "$target"
mv "$target.part" "$target"
echo "openunmix oracle ready in $target"
