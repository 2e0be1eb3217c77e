"""UVR's facts about VR files, kept as package data in our own format.

* ``band_configs.json``: UVR's band configurations (``modelparams/*.json``), by name: the
  network's bin count, the config's rate, the pre-filter bins, the channel layout the older
  networks see, and per band its rate, hop, FFT size, the bins it gives (``crop``), its
  low/high-pass fades and its input resampler.
* ``model_data.json``: UVR's model data (``vr_model_data/model_data_new.json`` as of
  TRvlvr/application_data 988aa1e, and the two entries audio-separator 0.47.1 adds), keyed by
  UVR's hash of a file (the MD5 of its last 10,240,000 bytes): the band config, the primary
  stem (UVR's spelling), and for v5.1 networks ``nout``/``nout_lstm``. Updated to the table
  at 3826b05: UVR-De-Echo-Aggressive's primary stem "No Echo" (was "Echo"; the other echo
  models and later tables agree), and the BVE model's row (944950a9...).

Standard library only (the registry reads these).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from ...errors import ModelError, UsageError

HERE = Path(__file__).resolve().parent
ARCHITECTURE_SIZES_KIB = (31191, 33966, 56817, 123821, 123812, 129605, 218409, 537238, 537227)
"""UVR's network sizes; a file's size in KiB (rounded up) picks the nearest."""
LSTM_SIZES_KIB = (56817, 218409)
"""Sizes that are v5.1 networks without ``nout`` in the model data."""
ACCOMPANIMENT_PAIRS = {"Vocals": "Instrumental", "Instrumental": "Vocals"}


@functools.lru_cache(maxsize=None)
def band_configs() -> dict[str, dict]:
    return json.loads((HERE / "band_configs.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def model_data() -> dict[str, dict]:
    return json.loads((HERE / "model_data.json").read_text(encoding="utf-8"))


def size_class(path: Path) -> int:
    """UVR's architecture size for a file: the nearest of ``ARCHITECTURE_SIZES_KIB`` to its
    size in KiB, rounded up."""
    kib = -(-path.stat().st_size // 1024)
    return min(ARCHITECTURE_SIZES_KIB, key=lambda size: abs(size - kib))


def band_config(name_or_file: str) -> dict:
    """A band config by UVR's name, or read from a UVR ``modelparams`` JSON file."""
    configs = band_configs()
    if name_or_file in configs:
        return configs[name_or_file]
    path = Path(name_or_file)
    if path.suffix.lower() == ".json" and path.is_file():
        return from_uvr_json(path)
    raise UsageError(f"--vr-params {name_or_file}: no such band config",
                     hint="one of " + ", ".join(sorted(configs)) + ", or a UVR modelparams "
                          ".json file")


def from_uvr_json(path: Path) -> dict:
    """A UVR ``modelparams`` JSON in our format."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        layout = next((key for key in ("reverse", "mid_side", "mid_side_b2", "mid_side_b",
                                       "stereo_w", "stereo_n") if raw.get(key)), "stereo")
        bands = []
        for key in sorted(raw["band"], key=int):
            band = raw["band"][key]
            entry = {"sample_rate": band["sr"], "hop": band["hl"], "n_fft": band["n_fft"],
                     "crop": [band["crop_start"], band["crop_stop"]],
                     "resampler": band["res_type"]}
            if "lpf_start" in band:
                entry["lowpass"] = [band["lpf_start"], band["lpf_stop"]]
            if band.get("hpf_start", -1) > 0:
                entry["highpass"] = [band["hpf_start"], band["hpf_stop"]]
            if band.get("convert_channels"):
                entry["convert_channels"] = band["convert_channels"]
            bands.append(entry)
        config = {"bins": raw.get("n_bins", raw.get("bins")), "sample_rate": raw.get("sr", 44100),
                  "pre_filter": [raw["pre_filter_start"], raw["pre_filter_stop"]],
                  "channels": layout, "bands": bands}
        if "aggr_correction" in raw:
            config["aggression_correction"] = raw["aggr_correction"]
        return config
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{path}: not a UVR band config ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class ModelFacts:
    """What UVR knows (or the user says) about one file."""

    params: str
    primary_stem: str
    nout: int | None = None
    nout_lstm: int | None = None

    @property
    def secondary_stem(self) -> str:
        return secondary_stem(self.primary_stem)


def secondary_stem(primary: str) -> str:
    """UVR's name of the other stem: Vocals <-> Instrumental, "No X" <-> "X"."""
    if primary in ACCOMPANIMENT_PAIRS:
        return ACCOMPANIMENT_PAIRS[primary]
    return primary[3:] if primary.startswith("No ") else f"No {primary}"


def facts_for_hash(digest: str) -> ModelFacts | None:
    row = model_data().get(digest)
    if row is None:
        return None
    return ModelFacts(params=row["params"], primary_stem=row["primary_stem"],
                      nout=row.get("nout"), nout_lstm=row.get("nout_lstm"))
