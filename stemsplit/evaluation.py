"""How good a separation is: stems scored against reference stems.

Nothing here prints or imports the terminal; ``cli.eval`` draws the results. torch is only
imported by :func:`evaluate_with_model` (through the pipeline), museval only for ``bss_v4``.

Layouts
-------
* Reference (as MUSDB18-HQ): ``REFERENCE_DIR/<track>/mixture.wav`` and
  ``REFERENCE_DIR/<track>/<stem>.wav`` (vocals, drums, bass, other; any audio format ffmpeg
  reads is accepted).
* Estimates: ``ESTIMATES_DIR/<track>/<stem>.<ext>`` (stemsplit's layout below ``-o DIR/<model>``),
  or one level deeper, ``ESTIMATES_DIR/<model>/<track>/<stem>.<ext>`` (what ``-o DIR`` of
  stemsplit and of other separators writes). Tracks are matched by folder name.
* Stem names are spelled as :mod:`stemsplit.stems` does (``instrumental`` -> accompaniment);
  a file ``no_<stem>`` names the complement of ``<stem>``, so ``no_vocals`` is the
  accompaniment. A complement the reference lacks (``accompaniment``, ``no_drums``) is
  derived from the reference as the sum of its other stems.

Metrics (all in dB, over the whole track and every channel, samples at the reference's rate)
-------------------------------------------------------------------------------------------
With ``s`` the reference, ``ŝ`` the estimate, ``e = ŝ - s`` and ``eps = 1e-8``:

* ``sdr``: the global SDR of the music demixing challenges (2021, 2023) and of MVSEP's
  leaderboard: ``10 log10((Σ s² + eps) / (Σ e² + eps))``.
* ``si_sdr``: scale-invariant SDR (Le Roux et al., "SDR - half-baked or well done?", 2019),
  with the eps placement of torchmetrics (``zero_mean=False``): ``α = (Σ s ŝ + eps) / (Σ s² +
  eps)``, ``10 log10((Σ (α s)² + eps) / (Σ (α s - ŝ)² + eps))``. No mean is removed (music
  stems carry no DC offset worth removing, and removing it would need a second pass). A
  silent reference gives ``α = 1`` and ``10 log10(eps / (Σ ŝ² + eps))``; a silent reference
  and estimate give 0 dB, as ``sdr`` does.
* Both are computed as a stream from decoded blocks: running float64 sums of ``Σ s²``,
  ``Σ e²`` and ``Σ s e`` (from which ``Σ (α s - ŝ)² = (α - 1)² Σ s² - 2 (α - 1) Σ s e + Σ e²``,
  exact algebra with ``α - 1 = Σ s e / (Σ s² + eps)``), so memory does not grow with the track.
* ``bss_v4``: BSSEval v4 through museval (``museval.evaluate``, 1 s windows and hops, 512-tap
  distortion filters over the whole track): SDR, SIR, ISR and SAR per 1 s frame, the median
  over frames (silent frames, NaN, left out) per track; over tracks, the median is what the
  published tables give (the mean is reported too). museval needs every stem of a track in
  memory at once. Stems are evaluated together as museval's MUSDB evaluation does: a stem and
  its complement (vocals and accompaniment) as a pair, the stem's scores taken from the pair;
  the other stems jointly. A lone stem (BSSEval needs two sources) and a group holding an
  all-silent reference stem (museval refuses it) get no bss_v4 values, with a warning.
* ``pesq``, ``stoi``, ``estoi``: speech metrics (:mod:`stemsplit.speech_metrics`), for the
  speech-like stems only (vocals, speech, ...): PESQ wideband (MOS-LQO, 1.0-4.64) and STOI /
  extended STOI (intelligibility, 0-1) of the mean of the channels resampled to 16 kHz. Not in
  dB. Each such stem is held in memory, one at a time (with bss_v4: all, as museval's).

Each metric is one row of :data:`METRIC_TABLE`: the values it reports, how it is computed
(``streamed`` sums, BSSEval's ``joint`` groups, or one ``speech`` stem at a time) and the
package it needs (the ``eval`` extra).

Reference and estimate are decoded at the reference's sample rate and channel count. Lengths
differing by up to :data:`MAX_LENGTH_DIFFERENCE_SECONDS` (codec padding) are cut to the
shorter, with a warning; a larger difference is the track's error.
"""

from __future__ import annotations

import importlib
import math
import shutil
import statistics
import tempfile
import time
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import audio, speech_metrics
from .errors import InputError, StemsplitError, UsageError
from .plan import OutputOptions
from .stem_plan import StemSelection
from .stems import complement_name, stem_name

if TYPE_CHECKING:  # pragma: no cover
    from .engine import SeparationSettings
    from .ensemble import Ensemble
    from .families.base import ChunkingRequest
    from .loading import LoadedModel

__all__ = [
    "BSS_V4_KEYS", "DEFAULT_METRICS", "EPS", "METRICS", "METRIC_TABLE",
    "MAX_LENGTH_DIFFERENCE_SECONDS", "EvaluationObserver", "EvaluationReport", "Metric",
    "ReferenceTrack", "StemScore", "StemSums",
    "TrackScore", "aggregate", "bss_v4", "evaluate_folders", "evaluate_with_model",
    "find_estimate_folders", "find_reference_tracks", "parse_metrics", "read_stem_files",
    "require_packages", "score_track", "sdr", "si_sdr",
]

EPS = 1e-8
"""Added to numerator and denominator of ``sdr`` and ``si_sdr`` (and of ``α``)."""

BSS_V4_KEYS = ("bss_v4_sdr", "bss_v4_sir", "bss_v4_isr", "bss_v4_sar")
"""The values the ``bss_v4`` metric reports for each stem."""


@dataclass(frozen=True)
class Metric:
    """One ``--metrics`` name: the values it reports per stem, how it is computed
    (``streamed``: running sums over blocks; ``joint``: a track's stems together, in memory;
    ``speech``: one speech-like stem at a time, in memory) and the module it imports."""

    name: str
    keys: tuple[str, ...]
    kind: str
    module: str | None = None


METRIC_TABLE: dict[str, Metric] = {metric.name: metric for metric in (
    Metric("sdr", ("sdr",), "streamed"),
    Metric("si_sdr", ("si_sdr",), "streamed"),
    Metric("bss_v4", BSS_V4_KEYS, "joint", "museval"),
    *(Metric(name, (name,), "speech", speech_metrics.MODULES[name])
      for name in speech_metrics.METRICS),
)}
METRICS = tuple(METRIC_TABLE)
DEFAULT_METRICS = ("sdr", "si_sdr")

MAX_LENGTH_DIFFERENCE_SECONDS = 0.1
"""Reference and estimate lengths may differ by this much (cut to the shorter)."""

BLOCK_FRAMES = audio.DEFAULT_BLOCK_FRAMES
MIXTURE_NAMES = ("mixture", "mix", "linear_mixture")
"""File names (without extension) that hold a mixture, never a stem."""
STEM_ORDER = ("vocals", "drums", "bass", "other", "guitar", "piano", "accompaniment")
EVAL_INSTALL = 'pip install "stemsplit-cli[eval]"'
"""How to install the packages of the metrics that need one (museval, pesq, pystoi)."""


# -- metrics -------------------------------------------------------------------------------
def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"sdr,si_sdr"`` (or a list of names) as a checked tuple, in the order given."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in items:
        name = item.strip().lower().replace("-", "_")
        if not name:
            continue
        if name not in METRICS:
            raise UsageError(f"unknown metric '{item.strip()}'", hint=f"choose from {', '.join(METRICS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError("no metric given", hint=f"choose from {', '.join(METRICS)}")
    return tuple(names)


def metric_keys(metrics: Sequence[str]) -> list[str]:
    """The value names ``metrics`` produce per stem (``bss_v4`` gives four)."""
    return [key for metric in metrics for key in METRIC_TABLE[metric].keys]


def _of_kind(metrics: Sequence[str], kind: str) -> list[str]:
    return [metric for metric in metrics if METRIC_TABLE[metric].kind == kind]


def require_packages(metrics: Sequence[str]) -> None:
    """Import the package of each metric of ``metrics`` that needs one, or raise a one-line
    error naming it and how to install it (before any work)."""
    for metric in metrics:
        module = METRIC_TABLE[metric].module
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except Exception as error:  # ImportError, or a package whose own imports fail
            raise StemsplitError(f"--metrics {metric} needs {module} "
                                 f"({type(error).__name__}: {error}); "
                                 f"install it with: {EVAL_INSTALL}") from None


def require_museval():
    """The museval module, or a one-line error saying how to install it."""
    require_packages(("bss_v4",))
    import museval

    return museval


class StemSums:
    """Running float64 sums over (channels, frames) blocks of one reference and estimate.

    ``reference_energy`` = Σ s², ``error_energy`` = Σ (ŝ - s)², ``projection`` = Σ s (ŝ - s).
    """

    def __init__(self) -> None:
        self.reference_energy = 0.0
        self.error_energy = 0.0
        self.projection = 0.0
        self.frames = 0

    def update(self, reference: np.ndarray, estimate: np.ndarray) -> None:
        s = np.asarray(reference, dtype=np.float64)
        error = np.asarray(estimate, dtype=np.float64) - s
        if s.shape != error.shape:
            raise ValueError(f"reference {s.shape} and estimate {error.shape} differ in shape")
        self.reference_energy += float(np.dot(s.ravel(), s.ravel()))
        self.error_energy += float(np.dot(error.ravel(), error.ravel()))
        self.projection += float(np.dot(s.ravel(), error.ravel()))
        self.frames += s.shape[-1] if s.ndim else 1

    def sdr(self) -> float:
        return 10.0 * math.log10((self.reference_energy + EPS) / (self.error_energy + EPS))

    def si_sdr(self) -> float:
        energy = self.reference_energy
        alpha_minus_1 = self.projection / (energy + EPS)
        alpha = 1.0 + alpha_minus_1
        target = alpha * alpha * energy
        noise = (alpha_minus_1 * alpha_minus_1 * energy - 2.0 * alpha_minus_1 * self.projection
                 + self.error_energy)
        return 10.0 * math.log10((target + EPS) / (max(noise, 0.0) + EPS))

    def value(self, metric: str) -> float:
        return self.sdr() if metric == "sdr" else self.si_sdr()


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Global SDR of one stem (any shape; the arrays are compared as a whole)."""
    sums = StemSums()
    sums.update(reference, estimate)
    return sums.sdr()


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR of one stem over every sample (channels flattened)."""
    sums = StemSums()
    sums.update(reference, estimate)
    return sums.si_sdr()


def bss_v4(references: Sequence[np.ndarray], estimates: Sequence[np.ndarray],
           sample_rate: int) -> list[dict[str, float]]:
    """BSSEval v4 of sources evaluated together: each a (channels, frames) array, all of one
    shape. One dict per source (``bss_v4_sdr``, ``_sir``, ``_isr``, ``_sar``): the median over
    1 s frames (``museval.evaluate(win=hop=sample_rate)``), NaN frames left out."""
    museval = require_museval()
    refs = np.stack([np.asarray(r, dtype=np.float64).T for r in references])
    ests = np.stack([np.asarray(e, dtype=np.float64).T for e in estimates])
    window = int(sample_rate)
    sdr_, isr, sir, sar = museval.evaluate(refs, ests, win=window, hop=window)
    results = []
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)  # all frames silent: NaN
        for index in range(len(refs)):
            results.append({
                "bss_v4_sdr": float(np.nanmedian(sdr_[index])),
                "bss_v4_sir": float(np.nanmedian(sir[index])),
                "bss_v4_isr": float(np.nanmedian(isr[index])),
                "bss_v4_sar": float(np.nanmedian(sar[index])),
            })
    return results


# -- layouts ---------------------------------------------------------------------------------
def estimate_stem_name(file_stem: str) -> str | None:
    """Our stem name for an estimate file named ``file_stem`` (None for a mixture)."""
    name = stem_name(file_stem)
    if name in MIXTURE_NAMES:
        return None
    if name.startswith("no_"):
        rest = name[3:]
        if rest and complement_name(rest) != name:  # no_vocals: the accompaniment
            return complement_name(rest)
    return name


def is_complement(stem: str) -> bool:
    """Whether ``stem`` names everything but another stem (accompaniment, no_<stem>)."""
    return stem == "accompaniment" or stem.startswith("no_")


def _audio_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and audio.is_audio_path(p)
            and p.is_file()]


def _subfolders(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and p.is_dir()]


def sort_stems(names: Iterable[str]) -> list[str]:
    order = {name: index for index, name in enumerate(STEM_ORDER)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def read_stem_files(folder: Path, *, estimates: bool) -> tuple[dict[str, Path], list[str], Path | None]:
    """The stem files of one track folder: ({stem: path}, problems, mixture path).

    ``estimates``: names as estimates are named (``no_<stem>`` complements). A stem given by
    two files is left out, and said in ``problems``.
    """
    found: dict[str, list[Path]] = {}
    mixture = None
    for path in _audio_files(folder):
        base = path.name.rsplit(".", 1)[0]
        name = estimate_stem_name(base) if estimates else stem_name(base)
        if name is None or name in MIXTURE_NAMES:
            mixture = mixture or path
            continue
        found.setdefault(name, []).append(path)
    stems, problems = {}, []
    for name in sort_stems(found):
        paths = found[name]
        if len(paths) > 1:
            problems.append(f"{name}: several files ({', '.join(p.name for p in paths)}); "
                            "none used")
        else:
            stems[name] = paths[0]
    return stems, problems, mixture


@dataclass(frozen=True)
class ReferenceTrack:
    """One reference track folder."""

    name: str
    folder: Path
    stems: Mapping[str, Path]
    mixture: Path | None = None
    problems: tuple[str, ...] = ()


def find_reference_tracks(reference_dir: str | Path) -> list[ReferenceTrack]:
    """Every track folder of ``reference_dir`` (or the folder itself when it holds stems)."""
    root = Path(reference_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder", hint="give the folder of reference track folders")

    def track(folder: Path) -> ReferenceTrack:
        stems, problems, mixture = read_stem_files(folder, estimates=False)
        return ReferenceTrack(folder.name, folder, stems, mixture, tuple(problems))

    tracks = [track(folder) for folder in _subfolders(root) if _audio_files(folder)]
    if tracks:
        return tracks
    if _audio_files(root):
        return [track(root)]
    nested = [folder for folder in _subfolders(root)
              if any(_audio_files(sub) for sub in _subfolders(folder))]
    hint = (f"point at one of {', '.join(str(f) for f in nested[:4])}" if nested else
            "expected <track>/mixture.wav and <track>/<stem>.wav (as MUSDB18-HQ)")
    raise UsageError(f"{root}: no reference track folders", hint=hint)


def find_estimate_folders(estimates_dir: str | Path, names: Sequence[str]
                          ) -> tuple[dict[str, Path], list[str]]:
    """The estimate folder of each track in ``names``, and notes (unmatched folders).

    Looked for as ``estimates_dir/<track>``, then ``estimates_dir/<model>/<track>``; the
    folder itself counts when it holds stems and is named like a track. Several model
    folders holding the same tracks are a usage error (which one is meant?).
    """
    root = Path(estimates_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder", hint="give the folder of estimate track folders")
    wanted = set(names)
    direct = {folder.name: folder for folder in _subfolders(root) if _audio_files(folder)}
    if root.name in wanted and _audio_files(root) and root.name not in direct:
        direct[root.name] = root
    matched = {name: direct[name] for name in names if name in direct}
    notes = []
    if not matched:
        models: dict[Path, dict[str, Path]] = {}
        for model in _subfolders(root):
            tracks = {folder.name: folder for folder in _subfolders(model)
                      if folder.name in wanted and _audio_files(folder)}
            if tracks:
                models[model] = tracks
        if len(models) > 1:
            raise UsageError(f"{root} holds the estimates of several models "
                             f"({', '.join(m.name for m in models)})",
                             hint=f"give one of them, e.g. {next(iter(models))}")
        if models:
            (model, matched), = models.items()
            direct = {folder.name: folder for folder in _subfolders(model) if _audio_files(folder)}
    unmatched = sorted(set(direct) - wanted)
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (", ..." if len(unmatched) > 5 else "")
        notes.append(f"{len(unmatched)} estimate folder"
                     f"{'s match' if len(unmatched) != 1 else ' matches'} no reference track: "
                     f"{shown}")
    return matched, notes


# -- results -------------------------------------------------------------------------------
@dataclass
class StemScore:
    """One stem of one track: its values by metric key (None where not defined)."""

    stem: str
    values: dict[str, float | None]
    reference: str
    """The reference file, or how it was derived ("sum of drums, bass, other")."""
    estimate: str
    frames: int


@dataclass
class TrackScore:
    """One reference track's results."""

    track: str
    status: str
    """'done', 'failed', or 'missing' (no estimates)."""
    stems: dict[str, StemScore] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Stems not scored, with the reason."""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    estimates: str | None = None
    seconds_taken: float = 0.0

    def as_dict(self) -> dict:
        return {
            "track": self.track, "status": self.status, "error": self.error,
            "sample_rate": self.sample_rate, "channels": self.channels,
            "estimates": self.estimates,
            "stems": {name: {"reference": s.reference, "estimate": s.estimate,
                             "frames": s.frames,
                             "duration_seconds": (s.frames / self.sample_rate
                                                  if self.sample_rate else None),
                             **{k: _finite(v) for k, v in s.values.items()}}
                      for name, s in self.stems.items()},
            "skipped": dict(self.skipped), "warnings": list(self.warnings),
            "seconds_taken": round(self.seconds_taken, 3),
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def aggregate(tracks: Sequence[TrackScore], keys: Sequence[str]) -> dict[str, dict[str, dict]]:
    """Per stem and metric key: mean and median over the scored tracks, and their count
    (values that are not finite are left out)."""
    result: dict[str, dict[str, dict]] = {}
    stems = sort_stems({name for t in tracks if t.status == "done" for name in t.stems})
    for stem in stems:
        per_key = {}
        for key in keys:
            values = [v for t in tracks if t.status == "done" and stem in t.stems
                      for v in [t.stems[stem].values.get(key)]
                      if v is not None and math.isfinite(v)]
            per_key[key] = {"mean": statistics.fmean(values) if values else None,
                            "median": statistics.median(values) if values else None,
                            "tracks": len(values)}
        result[stem] = per_key
    return result


@dataclass
class EvaluationReport:
    """Every track's scores, and the aggregates over tracks."""

    metrics: tuple[str, ...]
    tracks: list[TrackScore]
    reference_dir: str
    estimates_dir: str | None = None
    model: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return metric_keys(self.metrics)

    @property
    def failed(self) -> list[TrackScore]:
        return [t for t in self.tracks if t.status == "failed"]

    @property
    def missing(self) -> list[TrackScore]:
        return [t for t in self.tracks if t.status == "missing"]

    @property
    def scored(self) -> list[TrackScore]:
        return [t for t in self.tracks if t.status == "done"]

    def aggregate(self) -> dict[str, dict[str, dict]]:
        return aggregate(self.tracks, self.keys)

    def skipped_summary(self) -> list[tuple[tuple[str, ...], str, list[str]]]:
        """The stems left unscored, grouped as (stems, reason, tracks): one entry per reason
        and set of stems, in the order first met. A 2-stem model scored against 4-stem
        references gives one entry (drums, bass, other; "no estimate"; every track) where
        each track lists its own skipped stems."""
        groups: dict[tuple[tuple[str, ...], str], list[str]] = {}
        for track in self.tracks:
            by_reason: dict[str, list[str]] = {}
            for stem, reason in track.skipped.items():
                by_reason.setdefault(reason, []).append(stem)
            for reason, stems in by_reason.items():
                groups.setdefault((tuple(stems), reason), []).append(track.track)
        return [(stems, reason, tracks) for (stems, reason), tracks in groups.items()]

    def as_dict(self) -> dict:
        """One JSON-ready document with every number (null where a value is not finite)."""
        return {
            "reference": self.reference_dir, "estimates": self.estimates_dir,
            "model": self.model, "metrics": list(self.metrics), "values": self.keys,
            "eps": EPS, "max_length_difference_seconds": MAX_LENGTH_DIFFERENCE_SECONDS,
            "tracks": [t.as_dict() for t in self.tracks],
            "aggregate": self.aggregate(),
            "failed": [t.track for t in self.failed],
            "missing": [t.track for t in self.missing],
            "notes": list(self.notes),
        }

    CSV_COLUMNS = ("scope", "track", "stem", "metric", "value", "tracks")

    def csv_rows(self) -> list[tuple]:
        """One row per track x stem x metric key (scope 'track'), then per stem and key
        the 'mean' and 'median' over tracks; empty values where not finite."""
        rows: list[tuple] = []
        keys = self.keys
        for track in self.scored:
            for stem, score in track.stems.items():
                for key in keys:
                    rows.append(("track", track.track, stem, key,
                                 _csv_value(score.values.get(key)), 1))
        for stem, per_key in self.aggregate().items():
            for statistic in ("mean", "median"):
                for key in keys:
                    entry = per_key[key]
                    rows.append((statistic, "", stem, key, _csv_value(entry[statistic]),
                                 entry["tracks"]))
        return rows


def _csv_value(value: float | None) -> str:
    return repr(float(value)) if value is not None and math.isfinite(value) else ""


class EvaluationObserver:
    """Progress of an evaluation; the command line draws it. All methods are optional."""

    def tracks_found(self, total: int) -> None: ...

    def track_started(self, track: str, index: int, stage: str) -> None:
        """``stage``: 'scoring' or 'separating'."""

    def track_progress(self, track: str, done: int, total: int) -> None: ...

    def track_finished(self, score: TrackScore) -> None: ...

    def message(self, text: str) -> None: ...


# -- scoring one track ---------------------------------------------------------------------
class _Lockstep:
    """Equal-length (channels, n) blocks from several decoders read side by side; after the
    shortest ends, ``lengths`` holds each one's length (the longer ones read on at most
    ``limit`` frames past the shortest)."""

    def __init__(self, decoders: Sequence[Iterator[np.ndarray]], limit: int) -> None:
        self.decoders = list(decoders)
        self.limit = limit
        self.lengths: list[int] = []

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        count = len(self.decoders)
        current: list[np.ndarray | None] = [None] * count
        offset = [0] * count
        consumed = 0
        ended = [False] * count
        while True:
            for i in range(count):
                while not ended[i] and (current[i] is None or offset[i] >= current[i].shape[1]):
                    current[i] = next(self.decoders[i], None)
                    offset[i] = 0
                    if current[i] is None:
                        ended[i] = True
            if any(ended):
                break
            take = min(block.shape[1] - at for block, at in zip(current, offset))
            yield [block[:, at:at + take] for block, at in zip(current, offset)]
            offset = [at + take for at in offset]
            consumed += take
        lengths = []
        for i in range(count):
            extra = 0
            if not ended[i]:
                extra = current[i].shape[1] - offset[i]
                while extra <= self.limit:
                    block = next(self.decoders[i], None)
                    if block is None:
                        break
                    extra += block.shape[1]
            lengths.append(consumed + extra)
        self.lengths = lengths


@dataclass
class _StemPlan:
    stem: str
    reference_parts: list[Path]
    estimate: Path
    derived: bool


def plan_stems(reference: ReferenceTrack, estimates: Mapping[str, Path],
               mixture_as: Iterable[str] = ()) -> tuple[list[_StemPlan], dict[str, str]]:
    """What to score: each estimate with its reference (a file, or the sum of the reference's
    other stems for a complement; the reference's mixture for a stem of ``mixture_as``, such
    as a restoration model's ``restored`` when the mixture is the clean original), and the
    stems skipped with the reason."""
    plans, skipped = [], {}
    mixture_as = frozenset(mixture_as)
    for stem in sort_stems(estimates):
        if stem in mixture_as:
            if reference.mixture is None:
                skipped[stem] = "no mixture file to score it against (--mixture-as)"
            else:
                plans.append(_StemPlan(stem, [reference.mixture], estimates[stem], False))
            continue
        if stem in reference.stems:
            plans.append(_StemPlan(stem, [reference.stems[stem]], estimates[stem], False))
            continue
        base = (next((name for name in reference.stems if complement_name(name) == stem), None)
                if is_complement(stem) else None)
        # the reference's other stems, not its complements (a reference holding drums,
        # bass, other and accompaniment must not count the accompaniment twice)
        others = [path for name, path in reference.stems.items()
                  if name != base and not is_complement(name)]
        if base is not None and others:
            plans.append(_StemPlan(stem, others, estimates[stem], True))
        elif reference.mixture is not None and not reference.stems:
            skipped[stem] = (f"no reference {stem} file; give --mixture-as {stem} to score it "
                             f"against {reference.mixture.name}")
        else:
            skipped[stem] = "no reference stem"
    for stem in reference.stems:
        if stem not in estimates and stem not in mixture_as:
            skipped[stem] = "no estimate"
    return plans, {stem: skipped[stem] for stem in sort_stems(skipped)}


def _bss_groups(stems: Sequence[str]) -> tuple[list[tuple[list[str], set[str]]], list[str]]:
    """museval's grouping (``museval.eval_mus_track``): ([stems evaluated together], {stems
    whose scores it gives}), and the stems left without a score.

    A stem and its complement (vocals and accompaniment) are evaluated as a pair; the
    others jointly, with the paired stems among them but their scores taken from the pair.
    BSSEval needs two sources at least: a lone stem gets no score, as in museval.
    """
    paired = [(base, stem) for stem in stems if is_complement(stem) for base in stems
              if base != stem and complement_name(base) == stem]
    in_pairs = {name for pair in paired for name in pair}
    complements = {stem for _, stem in paired}
    joint = [stem for stem in stems if stem not in complements]
    groups = []
    reported = {stem for stem in joint if stem not in in_pairs}
    alone: list[str] = []
    if len(joint) >= 2:
        if reported:
            groups.append((joint, reported))
    else:
        alone = sorted(reported)
    for base, stem in paired:
        groups.append(([base, stem], {base, stem}))
    return groups, alone


def score_track(
    reference: ReferenceTrack,
    estimates: Mapping[str, Path],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    block_frames: int = BLOCK_FRAMES,
    estimates_label: str | None = None,
    mixture_as: Iterable[str] = (),
) -> TrackScore:
    """Score one track's estimate files against its reference, reading both in blocks.

    Errors the user can cause (undecodable files, lengths too far apart) make the track
    'failed' with the reason; they are not raised.
    """
    started = time.monotonic()
    result = TrackScore(reference.name, "done", estimates=estimates_label)
    try:
        _score_into(result, reference, estimates, tuple(metrics), block_frames,
                    frozenset(mixture_as))
    except StemsplitError as error:
        result.status = "failed"
        result.error = f"{reference.name}: {error.message}"
        result.stems = {}
    result.seconds_taken = time.monotonic() - started
    return result


def _score_into(result: TrackScore, reference: ReferenceTrack, estimates: Mapping[str, Path],
                metrics: tuple[str, ...], block_frames: int, mixture_as: frozenset) -> None:
    if reference.problems:
        raise InputError(f"reference {reference.problems[0]}")
    if not reference.stems and reference.mixture is None:
        raise InputError("no reference stems (expected <track>/<stem>.wav)")
    plans, skipped = plan_stems(reference, estimates, mixture_as)
    result.skipped = skipped
    if not plans:  # the skipped stems' reasons say how to score them against a mixture
        raise InputError("no reference stems (expected <track>/<stem>.wav)" if not reference.stems
                         else "no estimate matches a reference stem")
    first = next(iter(reference.stems.values()), plans[0].reference_parts[0])
    info = audio.probe(first)
    rate = info.sample_rate
    channels = info.channels or 2
    result.sample_rate, result.channels = rate, channels
    limit = int(round(MAX_LENGTH_DIFFERENCE_SECONDS * rate))
    streaming = _of_kind(metrics, "streamed")
    joint = bool(_of_kind(metrics, "joint"))
    speech = _of_kind(metrics, "speech")
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    infos = {first: info}  # each file probed once (a summed reference reads stems again)

    def probed(path: Path) -> audio.AudioInfo:
        if path not in infos:
            infos[path] = audio.probe(path)
        return infos[path]

    for plan in plans:
        decoders = [audio.decode_blocks(path, rate, channels, block_frames, info=probed(path))
                    for path in [*plan.reference_parts, plan.estimate]]
        sums = StemSums()
        reference_blocks: list[np.ndarray] = []
        estimate_blocks: list[np.ndarray] = []
        whole = joint or bool(speech and speech_metrics.is_speech_stem(plan.stem))
        try:
            lockstep = _Lockstep(decoders, limit)
            for blocks in lockstep:
                *parts, estimate = blocks
                ref = parts[0] if len(parts) == 1 else np.sum(parts, axis=0, dtype=np.float64)
                sums.update(ref, estimate)
                if whole:
                    reference_blocks.append(np.asarray(ref, dtype=np.float32).copy())
                    estimate_blocks.append(estimate.copy())
        finally:
            for decoder in decoders:
                decoder.close()
        for decoder, path in zip(decoders, [*plan.reference_parts, plan.estimate]):
            if decoder.nonfinite_samples:
                result.warnings.append(f"{plan.stem}: {path.name}: {decoder.nonfinite_samples} "
                                       "NaN/Inf samples read as 0")
        _check_lengths(result, plan, lockstep.lengths, rate, limit)
        values: dict[str, float | None] = {m: sums.value(m) for m in streaming}
        label = (f"sum of {', '.join(p.name.rsplit('.', 1)[0] for p in plan.reference_parts)}"
                 if plan.derived else str(plan.reference_parts[0]))
        result.stems[plan.stem] = StemScore(plan.stem, values, label, str(plan.estimate),
                                            sums.frames)
        if whole:
            kept[plan.stem] = (_join(reference_blocks, channels), _join(estimate_blocks, channels))
        if whole and speech:  # a speech-like stem: scored now, and let go unless joint needs it
            speech_values, reasons = speech_metrics.score_stem(*kept[plan.stem], rate, speech)
            values.update(speech_values)
            result.warnings.extend(f"{plan.stem}: {reason}" for reason in reasons)
            if not joint:
                del kept[plan.stem]
    if joint:
        groups, alone = _bss_groups(list(kept))
        for stem in alone:
            result.warnings.append(f"{stem}: no bss_v4 (BSSEval scores two stems or more "
                                   "together; this one has no other)")
        for group, reported in groups:
            frames = min(kept[stem][0].shape[1] for stem in group)
            names = ", ".join(sort_stems(reported))
            silent = [stem for stem in group if not np.any(kept[stem][0][:, :frames])]
            if silent:  # museval refuses it: which silent source would the estimate be?
                result.warnings.append(f"{names}: no bss_v4 (the {', '.join(silent)} reference "
                                       "is silent, and BSSEval scores no silent source)")
                continue
            try:
                scores = bss_v4([kept[stem][0][:, :frames] for stem in group],
                                [kept[stem][1][:, :frames] for stem in group], rate)
            except ValueError as error:  # museval refusing what it cannot score
                reason = str(error).split(", which")[0].split(". ")[0]
                result.warnings.append(f"{names}: no bss_v4 (museval: {reason})")
                continue
            for stem, values in zip(group, scores):
                if stem in reported:
                    result.stems[stem].values.update(values)
    for score in result.stems.values():  # the order of the keys: as metrics asks
        score.values = {key: score.values.get(key) for key in metric_keys(metrics)}


def _join(blocks: list[np.ndarray], channels: int) -> np.ndarray:
    if not blocks:
        return np.zeros((channels, 0), dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)


def _check_lengths(result: TrackScore, plan: _StemPlan, lengths: list[int], rate: int,
                   limit: int) -> None:
    *reference_lengths, estimate_length = lengths
    reference_length = min(reference_lengths)
    if max(reference_lengths) - reference_length > limit:
        raise InputError(f"{plan.stem}: the reference stems summed for it differ in length by "
                         f"more than {MAX_LENGTH_DIFFERENCE_SECONDS} s")
    difference = estimate_length - reference_length
    if abs(difference) > limit:
        longer = "longer" if difference > 0 else "shorter"
        raise InputError(
            f"{plan.stem}: the estimate is more than {MAX_LENGTH_DIFFERENCE_SECONDS} s {longer} "
            f"than the reference ({reference_length / rate:.2f} s; {plan.estimate})")
    if difference or max(reference_lengths) != reference_length:
        what = (f"{abs(difference)} samples {'longer' if difference > 0 else 'shorter'} than "
                "the reference" if difference else "reference stems of different lengths")
        result.warnings.append(f"{plan.stem}: estimate {what}; both cut to the shorter")


# -- whole evaluations ---------------------------------------------------------------------
def _note_speech_metrics(report: EvaluationReport, observer: EvaluationObserver) -> None:
    """Say once (in the notes and to the observer) which scored stems the speech metrics
    leave without a value: they are given for speech-like stems only."""
    speech = _of_kind(report.metrics, "speech")
    others = sort_stems({stem for track in report.scored for stem in track.stems
                         if not speech_metrics.is_speech_stem(stem)})
    if not speech or not others:
        return
    note = (f"{', '.join(speech)}: speech metrics, given for speech-like stems only "
            f"({', '.join(speech_metrics.SPEECH_STEMS)}); none for {', '.join(others)}")
    report.notes.append(note)
    observer.message(note)


def _select(tracks: list[ReferenceTrack], only: Sequence[str] | None) -> list[ReferenceTrack]:
    if not only:
        return tracks
    names = {t.name for t in tracks}
    unknown = [name for name in only if name not in names]
    if unknown:
        raise UsageError(f"--track {', '.join(unknown)}: no such reference track")
    return [t for t in tracks if t.name in only]


def evaluate_folders(
    reference_dir: str | Path,
    estimates_dir: str | Path,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    tracks: Sequence[str] | None = None,
    observer: EvaluationObserver | None = None,
    block_frames: int = BLOCK_FRAMES,
    mixture_as: Sequence[str] = (),
) -> EvaluationReport:
    """Score the estimates in ``estimates_dir`` (any tool's) against ``reference_dir``
    (``mixture_as``: stems scored against the reference's mixture; see ``plan_stems``)."""
    observer = observer or EvaluationObserver()
    metrics = parse_metrics(metrics)
    require_packages(metrics)
    every_track = find_reference_tracks(reference_dir)
    references = _select(every_track, tracks)
    # matched against every reference track, so that --track leaves no "unmatched" note
    folders, notes = find_estimate_folders(estimates_dir, [t.name for t in every_track])
    folders = {t.name: folders[t.name] for t in references if t.name in folders}
    if not folders:
        raise InputError(f"no track of {reference_dir} has estimates in {estimates_dir}",
                         hint="estimates are found as <track>/<stem>.<ext> or "
                              "<model>/<track>/<stem>.<ext>, the track folders named as the "
                              "reference's")
    report = EvaluationReport(metrics, [], str(reference_dir), str(estimates_dir), notes=notes)
    for note in notes:
        observer.message(note)
    observer.tracks_found(len(references))
    for index, reference in enumerate(references):
        folder = folders.get(reference.name)
        if folder is None:
            score = TrackScore(reference.name, "missing", skipped={},
                               error=f"{reference.name}: no estimates in {estimates_dir}")
        else:
            observer.track_started(reference.name, index, "scoring")
            stems, problems, _ = read_stem_files(folder, estimates=True)
            score = score_track(reference, stems, metrics, block_frames=block_frames,
                                estimates_label=str(folder), mixture_as=mixture_as)
            score.warnings[:0] = [f"estimate {problem}" for problem in problems]
        report.tracks.append(score)
        observer.track_finished(score)
    _note_speech_metrics(report, observer)
    return report


def evaluate_with_model(
    reference_dir: str | Path,
    model: "Ensemble | LoadedModel",
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    settings: "SeparationSettings | None" = None,
    chunking: "ChunkingRequest | None" = None,
    selection: "StemSelection | None" = None,
    out_dir: str | Path | None = None,
    force: bool = False,
    tracks: Sequence[str] | None = None,
    observer: EvaluationObserver | None = None,
    block_frames: int = BLOCK_FRAMES,
    mixture_as: Sequence[str] = (),
) -> EvaluationReport:
    """Separate each reference mixture with ``model`` (one model or an ensemble) and score
    the stems.

    The stems are written as 32-bit float wav (no clip handling) into a temporary folder,
    scored from the files in blocks and deleted, so memory stays flat with the track's
    length; with ``out_dir`` they are kept there in stemsplit's layout
    (``out_dir/<model>/<track>/<stem>.wav``), and a track whose stems exist already is
    scored from them unless ``force``.
    """
    from . import pipeline
    from .engine import SeparationSettings
    from .ensemble import as_ensemble
    from .families.base import ChunkingRequest

    observer = observer or EvaluationObserver()
    metrics = parse_metrics(metrics)
    require_packages(metrics)
    settings = settings or SeparationSettings()
    chunking = chunking or ChunkingRequest()
    selection = selection or StemSelection()
    model = as_ensemble(model)
    model.plan(selection)  # a bad selection is a usage error, before any work
    references = _select(find_reference_tracks(reference_dir), tracks)
    report = EvaluationReport(metrics, [], str(reference_dir),
                              str(out_dir) if out_dir is not None else None, model=model.name)
    observer.tracks_found(len(references))

    class Relay(pipeline.Observer):
        def __init__(self, track: str) -> None:
            self.track = track

        def track_progress(self, track: str, done: int, total: int) -> None:
            observer.track_progress(self.track, done, total)

    for index, reference in enumerate(references):
        started = time.monotonic()
        observer.track_started(reference.name, index, "separating")
        base = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="stemsplit-eval-"))
        try:
            if reference.mixture is None:
                score = TrackScore(reference.name, "failed",
                                   error=f"{reference.name}: no mixture file to separate "
                                         "(expected <track>/mixture.wav)")
            else:
                options = OutputOptions(out_dir=base, format="wav", float32=True,
                                                 clip_mode="none", force=force)
                try:
                    # name_as keeps a dot in the track's name (output names drop an extension)
                    separated = pipeline.separate_file(
                        reference.mixture, model, settings=settings, chunking=chunking,
                        selection=selection, options=options, observer=Relay(reference.name),
                        name_as=f"{reference.name}.wav")
                except StemsplitError as error:
                    score = TrackScore(reference.name, "failed",
                                       error=f"{reference.name}: {error.message}")
                else:
                    observer.track_started(reference.name, index, "scoring")
                    score = score_track(reference, dict(separated.outputs), metrics,
                                        block_frames=block_frames,
                                        estimates_label=str(next(iter(separated.outputs.values())).parent)
                                        if out_dir is not None and separated.outputs else None,
                                        mixture_as=mixture_as)
                    score.warnings[:0] = separated.warnings
                    if separated.status == "skipped":
                        score.warnings.insert(0, "stems exist already: scored as found "
                                                 "(--force separates again)")
        finally:
            if out_dir is None:
                shutil.rmtree(base, ignore_errors=True)
        score.seconds_taken = time.monotonic() - started
        report.tracks.append(score)
        observer.track_finished(score)
    _note_speech_metrics(report, observer)
    return report
