"""The umx family: sigsep's Open-Unmix (openunmix 1.3.0): umxhq, umxl, umx and umxse.

Weights: one state dict per target, from the URLs openunmix 1.3.0 downloads them from, each
name carrying the start of its sha256 (checked; see ``config``), or a model folder as
openunmix reads one (``separator.json``, ``<target>.json`` and ``<target>*.pth``) given
with ``--weights FOLDER``. The networks and the separator are ours
(``stemsplit/models/openunmix.py``), with openunmix's ``Separator`` semantics: centred STFT,
each target's network, the multichannel Wiener filter over windows of ``--wiener-win-len``
frames (300) with ``--niter`` EM steps (1), ``--residual`` (an extra stem, the mixture
less the targets, before the EM) and ``--softmask``. umxse (16 kHz speech enhancement)
averages the channels' magnitudes into a one-channel network and gives stereo stems.

Chunking. The bidirectional LSTM runs over the whole track and the Wiener windows start at
its first frame, so openunmix's output needs the whole track at once: that is the default
(exact) mode, one chunk holding the track; its memory grows with the track's length (see
the README for the figure per minute). ``--segment SECONDS`` runs the separator on chunks of
that length instead (``--overlap``, default 0.25, cross-faded linearly; the last chunk
ends at the track's end), with bounded
memory and stems that differ from openunmix's near the chunk edges
(``benchmarks/bench_umx.py --sdr`` prints the SDR of the chunked output against the exact).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ...errors import ModelError, UsageError
from ..base import ChunkingRequest, Family, Fetched, LoadedModel, OptionSpec
from .checkpoint import RESIDUAL_STEM, build_separator, read_state
from .config import UmxConfig, folder_targets, is_model_folder, parse_entry, read_folder

if TYPE_CHECKING:  # pragma: no cover
    from ...engine import Network
    from ...specs import ModelFile, ModelSpec

AUDIO_CHANNELS = 2
"""openunmix separates stereo (a mono input is duplicated)."""
WHOLE_TRACK = 1 << 40
"""The exact mode's chunk length in samples: longer than any track, so one chunk holds it."""
DEFAULT_OVERLAP = 0.25


class UmxFamily(Family):
    name = "umx"
    display = "Open-Unmix"
    vocabulary = (r"open-?unmix", r"\bumx", r"separator\.json", r"wiener[_-]win")
    weights_help = ("an Open-Unmix model folder (separator.json, <target>.json and "
                    "<target>*.pth files)")
    options = (
        OptionSpec("--niter", "niter", "int", "Open-Unmix: EM steps of the Wiener filter "
                   "(default 1; 0 keeps the networks' magnitudes with the mixture's phase).",
                   metavar="N"),
        OptionSpec("--residual", "residual", "bool", "Open-Unmix: add a 'residual' stem, the "
                   "mixture less the targets (before the Wiener filter's EM steps)."),
        OptionSpec("--softmask", "softmask", "bool", "Open-Unmix: start the Wiener filter "
                   "from ratio masks of the targets' magnitudes, not from the magnitudes "
                   "with the mixture's phase."),
        OptionSpec("--wiener-win-len", "wiener_win_len", "int", "Open-Unmix: frames the "
                   "Wiener filter works on at a time (default 300; 0: the whole track, "
                   "memory permitting).", metavar="FRAMES"),
    )

    # -- weights.toml --------------------------------------------------------------------
    def parse(self, name: str, table: Mapping[str, Any],
              url_files: tuple["ModelFile", ...]) -> tuple[UmxConfig, tuple["ModelFile", ...]]:
        return parse_entry(name, table, url_files)

    def details(self, spec: "ModelSpec") -> dict:
        config: UmxConfig = spec.config
        return {"n_fft": config.n_fft, "hop": config.hop,
                "targets": {file.member: file.filename for file in spec.files}}

    def detail_lines(self, spec: "ModelSpec") -> list[tuple[str, str]]:
        config: UmxConfig = spec.config
        return [("network", f"a BiLSTM per target, STFT {config.n_fft}/{config.hop}, "
                            "multichannel Wiener filter; whole track by default")]

    # -- local files ---------------------------------------------------------------------
    def sniff(self, path: Path) -> bool:
        folder = path if path.is_dir() else path.parent
        if path.is_file() and path.suffix != ".pth":
            return False
        return is_model_folder(folder) and (
            path.is_dir() or any(weights == path for weights in folder_targets(folder).values()))

    def claims(self, path: Path, options: Mapping[str, Any]) -> bool:
        """A model folder (``separator.json`` with targets), or a target's ``.pth`` in one:
        ahead of the families that take any ``.pth``."""
        return self.sniff(path)

    # -- loading -------------------------------------------------------------------------
    def load(self, spec: "ModelSpec", fetched: Fetched, options: Mapping[str, Any],
             device: Any) -> LoadedModel:
        found = {file.member: path for file, path in zip(spec.files, fetched.paths)}
        if set(found) != set(spec.stems):
            raise ModelError(f"{spec.name}: weights.toml gives files for "
                             f"{', '.join(sorted(found))}, its stems are {', '.join(spec.stems)}",
                             hint="one <target>-<sha256 prefix>.pth per stem")
        targets = {stem: found[stem] for stem in spec.stems}
        return _load(targets, spec.config, spec.sample_rate, options, spec, spec.name,
                     fetched.origin, device)

    def load_local(self, path: Path, spec: "ModelSpec | None", options: Mapping[str, Any],
                   device: Any, offline=None, known=()) -> LoadedModel:
        folder = path if path.is_dir() else path.parent
        found = read_folder(folder)
        targets = found.targets
        if spec is not None:
            missing = [stem for stem in spec.stems if stem not in targets]
            if missing:
                raise ModelError(f"--weights {folder}: no {missing[0]} target for "
                                 f"{spec.name}")
            targets = {stem: targets[stem] for stem in spec.stems}
            if (found.config, found.sample_rate) != (spec.config, spec.sample_rate):
                raise ModelError(f"--weights {folder}: its separator.json does not match "
                                 f"{spec.name}'s STFT and sample rate")
        label = spec.name if spec is not None else folder.name
        return _load(targets, found.config, found.sample_rate, options, spec, label,
                     str(folder), device)

    # -- chunking ------------------------------------------------------------------------
    def networks(self, model: LoadedModel, request: ChunkingRequest) -> list["Network"]:
        from ...engine import Chunking, Network, Window, overlap_stride

        if request.segment_seconds is None:
            if request.overlap is not None:
                raise UsageError("--overlap applies to Open-Unmix models with --segment: "
                                 "without it the whole track is one chunk")
            chunking = Chunking(length=WHOLE_TRACK, stride=WHOLE_TRACK,
                                window=Window("rectangular"), normalise=None)
        else:
            length = max(1, int(request.segment_seconds * model.sample_rate))
            overlap = DEFAULT_OVERLAP if request.overlap is None else request.overlap
            try:
                stride = overlap_stride(overlap, length)
            except ValueError as error:
                raise UsageError(f"--overlap: {error}") from None
            fade = min(length - stride, length // 2)
            window = Window("linear_fade", fade=fade) if fade > 0 else Window("rectangular")
            # align_end: the last chunk ends at the track's end, full length (not a sliver
            # that the LSTM and the STFT's reflect padding would see alone).
            chunking = Chunking(length=length, stride=stride, window=window, normalise=None,
                                last_chunk="align_end")
        return [Network(forward=network, chunking=chunking,
                        stem_weights=tuple(float(w) for w in weights))
                for network, weights in zip(model.networks, model.bag_weights)]


def _load(targets: Mapping[str, Path], config: UmxConfig, sample_rate: int,
          options: Mapping[str, Any], spec: "ModelSpec | None", label: str, origin: str,
          device: Any) -> LoadedModel:
    states = {stem: read_state(path) for stem, path in targets.items()}
    separator = build_separator(states, config, options, label)
    sources = tuple(targets) + ((RESIDUAL_STEM,) if separator.residual else ())
    model = LoadedModel(
        name=label, sources=sources, sample_rate=sample_rate, audio_channels=AUDIO_CHANNELS,
        networks=[separator], bag_weights=[[1.0] * len(sources)], origin=origin,
        family=FAMILY, spec=spec, details=config)
    return model.to(device)


FAMILY = UmxFamily()
