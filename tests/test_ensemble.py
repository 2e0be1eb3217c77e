"""Ensembles: several models' stems combined per stem (stemsplit/ensemble.py).

The algorithms are checked against whole-track references written here (numpy, float64,
explicit frame loops) for every algorithm, on lengths shorter than a hop and a frame, not
multiples of the hop, and cut into uneven blocks; and against audio-separator 0.47.1's
``Ensembler`` (audio_separator/separator/ensembler.py). Where they agree with our definition
they agree to 1e-6. They do not agree on:

* ``median_fft`` for 3+ models: audio-separator takes the median of the real and of the
  imaginary parts separately (a complex value none of the models gave); ours ranks the
  complex values by magnitude and keeps the middle one (for 2 models both are the mean);
* the last ``n % 1024`` samples of every *_fft algorithm: audio-separator's STFT has
  ``1 + n // 1024`` frames, so those samples lie under the falling edge of one window and
  are divided by its square (down to 1e-10): after min/max/median changed the spectrum
  they blow up (peaks of thousands on a 2047-sample track). We zero-pad each estimate to a
  multiple of the hop first: the same frames elsewhere, and a divisor of at least 0.5.

End to end, a tiny random-weight htdemucs (tests.checkpoints, the ``tiny_hf_home`` cache)
and a random-weight MDX-Net ONNX model (tests.mdx_models) served from a loopback server
form a cross-family ensemble through the CLI, compared with each model run alone.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tomllib
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from stemsplit.errors import ModelError, UsageError
from stemsplit.ensemble import (ALGORITHMS, FRAME, HOP, Ensemble, StreamingCombiner,
                                combine_arrays, run_ensemble)
from stemsplit.resolve import Recipe as EnsembleRecipe
from stemsplit.spool import ArrayMixture, StemSpool
from stemsplit.stem_plan import plan_stems
from stemsplit.families.mdx.onnx_runner import uvr_hash
from tests.checkpoints import FileServer, closed_port
from tests.mdx_models import KIM_VOCAL_2, write_mdx_onnx

ROOT = Path(__file__).resolve().parent.parent
RATE = 44100
DIM_T = 32
WAVE = [a for a in ALGORITHMS if a.endswith("_wave")]
SPECTRAL = [a for a in ALGORITHMS if a.endswith("_fft")]


# -- whole-track references ---------------------------------------------------------------------
def reference(algorithm: str, estimates: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Our definitions, over the whole track at once (float64)."""
    stack = np.stack([e.astype(np.float64) for e in estimates])
    if algorithm.endswith("_wave"):
        return _combine(algorithm, stack, weights, complex_median=False)
    n = stack.shape[-1]
    padded_n = -(-n // HOP) * HOP
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / FRAME)
    frames = 1 + padded_n // HOP
    padded = np.pad(stack, ((0, 0), (0, 0), (FRAME // 2, padded_n - n + FRAME // 2)))
    spectra = np.stack([np.fft.rfft(padded[..., t * HOP:t * HOP + FRAME] * window)
                        for t in range(frames)], axis=-2)  # (K, C, frames, bins)
    combined = _combine(algorithm, spectra, weights, complex_median=True)
    out = np.zeros((stack.shape[1], (frames - 1) * HOP + FRAME))
    squares = np.zeros(out.shape[-1])
    for t in range(frames):
        out[:, t * HOP:t * HOP + FRAME] += np.fft.irfft(combined[:, t], n=FRAME) * window
        squares[t * HOP:t * HOP + FRAME] += window ** 2
    return (out[:, FRAME // 2:] / squares[FRAME // 2:])[:, :n]


def _combine(algorithm, values, weights, complex_median):
    kind = algorithm.split("_")[0]
    if kind == "avg":
        w = np.array(weights, dtype=np.float64).reshape((-1,) + (1,) * (values.ndim - 1))
        return (values * w).sum(0) / w.sum()
    if kind == "median" and not complex_median:
        return np.median(values, axis=0)
    if kind == "median":  # by magnitude, stable; even count: mean of the two middle ones
        out = np.empty(values.shape[1:], dtype=values.dtype)
        flat_values = values.reshape(values.shape[0], -1)
        flat_out = out.reshape(-1)
        count = values.shape[0]
        for i in range(flat_values.shape[1]):
            ranked = sorted(range(count), key=lambda k: abs(flat_values[k, i]))
            middle = flat_values[ranked[(count - 1) // 2], i]
            flat_out[i] = middle if count % 2 else (middle + flat_values[ranked[count // 2], i]) / 2
        return out
    magnitude = np.abs(values)
    best = magnitude.min(0) if kind == "min" else magnitude.max(0)
    first = np.argmax(magnitude == best, axis=0)  # the first model of equal magnitude
    return np.take_along_axis(values, first[None], 0)[0]


def streamed(algorithm, estimates, weights, blocks):
    """Our combiner, fed in blocks of the given sizes (cycled)."""
    combiner = StreamingCombiner(algorithm, weights, estimates[0].shape[0])
    out, begin, index = [], 0, 0
    n = estimates[0].shape[-1]
    while begin < n:
        size = blocks[index % len(blocks)]
        piece = combiner.push([e[:, begin:begin + size] for e in estimates])
        out += [piece] if piece is not None else []
        begin, index = begin + size, index + 1
    rest = combiner.finish()
    out += [rest] if rest is not None else []
    result = np.concatenate(out, axis=-1)
    assert result.dtype == np.float32 and result.shape == estimates[0].shape
    return result


def noise(count, n, seed, channels=2):
    rng = np.random.default_rng(seed)
    return [(0.3 * rng.standard_normal((channels, n))).astype(np.float32) for _ in range(count)]


# -- the algorithms -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 700, 1024, 2047, 2048, 3001, 70001])
@pytest.mark.parametrize("count", [2, 3])
def test_every_algorithm_equals_the_whole_track_reference(n, count):
    estimates = noise(count, n, seed=n + count)
    for algorithm in ALGORITHMS:
        weights = [2.0, 1.0, 0.5][:count] if algorithm.startswith("avg") else [1.0] * count
        expected = reference(algorithm, estimates, weights)
        for blocks in ([n], [1000], [333, 5000, 1]):
            got = streamed(algorithm, estimates, weights, blocks)
            assert np.abs(got - expected).max() <= 1e-5, (algorithm, n, count, blocks)


def test_one_estimate_passes_through_and_mono_works():
    (single,) = noise(1, 5000, seed=1)
    for algorithm in ALGORITHMS:
        assert np.array_equal(combine_arrays(algorithm, [single]), single)
    mono = noise(3, 4000, seed=2, channels=1)
    for algorithm in ALGORITHMS:
        expected = reference(algorithm, mono, [1.0] * 3)
        assert np.abs(combine_arrays(algorithm, mono, block_frames=999) - expected).max() <= 1e-5


def test_ties_go_to_the_model_given_first():
    first = np.array([[0.5, -0.25, 0.0, 0.75]], dtype=np.float32)
    second = np.array([[-0.5, 0.25, -0.0, -0.75]], dtype=np.float32)
    for algorithm in ("min_wave", "max_wave"):
        assert np.array_equal(combine_arrays(algorithm, [first, second]), first)
        assert np.array_equal(combine_arrays(algorithm, [second, first]), second)
    # median_wave of three with a tie in the middle: numpy's median of the values
    third = np.array([[0.1, 0.1, 0.1, 0.1]], dtype=np.float32)
    assert np.allclose(combine_arrays("median_wave", [first, second, third]),
                       np.median(np.stack([first, second, third]), axis=0))
    # spectral: a sign-flipped copy has equal magnitudes in every bin: min and max keep the
    # first model's bins; the median ranks ties in model order and keeps the middle model's
    (x,) = noise(1, 5000, seed=3)
    for algorithm in ("min_fft", "max_fft"):
        assert np.abs(combine_arrays(algorithm, [x, -x, -x]) - x).max() <= 1e-5
        assert np.abs(combine_arrays(algorithm, [-x, x]) + x).max() <= 1e-5
    assert np.abs(combine_arrays("median_fft", [x, -x, x]) + x).max() <= 1e-5
    assert np.abs(combine_arrays("median_fft", [-x, x, -x]) - x).max() <= 1e-5


def test_streaming_combine_holds_a_block_not_the_track(tmp_path):
    """tracemalloc around the whole spool -> combine path (spool writers, readers, live
    combine) on synthetic 'models': the peak does not grow with the track's length."""
    block = 1 << 16

    def peak(seconds: float, algorithm: str) -> int:
        total = int(seconds * RATE)
        members = [SimpleNamespace(name=f"m{i}", sources=("vocals", "accompaniment"),
                                   sample_rate=RATE, audio_channels=2, device="cpu",
                                   runs_outside_torch=False) for i in range(3)]
        recipe = EnsembleRecipe("m0+m1+m2", ("m0", "m1", "m2"), (1.0, 1.0, 1.0), algorithm)
        ensemble = Ensemble(recipe, members)
        plan = ensemble.plan()

        def run_member(member, names, emit, progress):
            rng = np.random.default_rng(int(member.name[1:]))
            for begin in range(0, total, block):
                size = min(block, total - begin)
                for name in names:
                    emit(name, (0.1 * rng.standard_normal((2, size))).astype(np.float32))
                progress(begin + size, total)

        emitted = {name: 0 for name in plan.names}

        def emit(name, out):
            emitted[name] += out.shape[-1]

        spool = StemSpool(str(tmp_path))
        tracemalloc.start()
        try:
            run_ensemble(ensemble, plan, run_member=run_member, spool=spool,
                         mixture=ArrayMixture(np.zeros((2, 0), np.float32)), emit=emit)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            spool.close()
        assert emitted == {name: total for name in plan.names}
        assert spool.held == 0
        return top

    for algorithm in ("avg_wave", "max_fft"):
        short, long = peak(5, algorithm), peak(60, algorithm)
        # 60 s of 3 models x 2 stems x stereo float32 is 127 MB; a block is 0.5 MB
        assert long < short * 1.25 + (1 << 20), (algorithm, short, long)
        assert long < 40 << 20, (algorithm, long)


def test_the_spool_is_released_when_a_model_fails(tmp_path):
    members = [SimpleNamespace(name=f"m{i}", sources=("vocals",), sample_rate=RATE,
                               audio_channels=2, device="cpu", runs_outside_torch=False)
               for i in range(2)]
    ensemble = Ensemble(EnsembleRecipe("m0+m1", ("m0", "m1"), (1.0, 1.0), "avg_wave"), members)

    def run_member(member, names, emit, progress):
        emit("vocals", np.zeros((2, 100), np.float32))
        if member.name == "m1":
            raise KeyboardInterrupt

    spool = StemSpool(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run_ensemble(ensemble, ensemble.plan(), run_member=run_member, spool=spool,
                     mixture=ArrayMixture(np.zeros((2, 0), np.float32)),
                     emit=lambda name, block: None)
    assert spool.held == 1  # m0's vocals, until closed
    assert list(tmp_path.iterdir()) == []  # unnamed: nothing to leave behind, even on SIGKILL
    spool.close()
    assert spool.held == 0


def test_a_track_job_reports_each_model_and_spans_the_bar(tmp_path, monkeypatch):
    """The pipeline's glue, with stand-in models (the engine replaced): the stage names,
    one progress bar over every model, the outputs and the removed spool."""
    import stemsplit.pipeline as pipeline

    mix = 0.2 * noise(1, 30000, seed=4)[0]  # the writer clamps to +-1, even float32
    soundfile.write(tmp_path / "in.wav", mix.T, RATE, subtype="FLOAT")
    members = [SimpleNamespace(name=name, sources=sources, sample_rate=RATE, audio_channels=2,
                               device="cpu", runs_outside_torch=False)
               for name, sources in (("four", ("drums", "bass", "other", "vocals")),
                                     ("pair", ("vocals", "accompaniment")))]
    ensemble = Ensemble(EnsembleRecipe("four+pair", ("four", "pair"), (1.0, 3.0), "avg_wave"),
                        members)
    asked = []

    def fake_engine(model, blocks, statistics, settings, chunking, names, emit, progress):
        asked.append((model.name, tuple(names)))
        done = 0
        for block in blocks(7000):
            for index, name in enumerate(names):
                emit(name, block * (index + 1) * (2 if model.name == "pair" else 1))
            done += block.shape[-1]
            progress(done, statistics.frames)

    monkeypatch.setattr(pipeline, "_run_engine", fake_engine)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)

    class Recorder(pipeline.Observer):
        events: list = []

        def track_stage(self, track, stage):
            self.events.append(("stage", stage))

        def track_progress(self, track, done, total):
            self.events.append(("progress", done, total))

    observer = Recorder()
    options = pipeline.OutputOptions(out_dir=tmp_path / "out", float32=True, clip_mode="none")
    selection = pipeline.StemSelection(two_stems="vocals", other_method="minus")
    result = pipeline.separate_file(tmp_path / "in.wav", ensemble, options=options,
                                    selection=selection, observer=observer)
    assert asked == [("four", ("vocals",)), ("pair", ("vocals", "accompaniment"))]
    stages = [e[1] for e in observer.events if e[0] == "stage"]
    assert stages == ["model 1/2 four", "model 2/2 pair"]
    progress = [e[1:] for e in observer.events if e[0] == "progress"]
    assert len({total for _, total in progress}) == 1
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert progress[-1][0] == progress[-1][1]
    assert progress[len(progress) // 2 - 1][0] == progress[-1][1] // 2  # model 1: first half
    vocals, accompaniment = read(result.outputs["vocals"]), read(result.outputs["accompaniment"])
    assert np.abs(vocals - (mix + 3 * 2 * mix) / 4).max() <= 1e-6
    assert np.abs(accompaniment - ((mix - mix) + 3 * 4 * mix) / 4).max() <= 1e-6
    assert result.outputs["vocals"] == tmp_path / "out/four+pair/in/vocals.wav"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("stemsplit-")]


def test_stem_plan_rules():
    four, vocal, drums = ("drums", "bass", "other", "vocals"), ("vocals", "accompaniment"), \
        ("drums", "no_drums")
    plan = plan_stems([four, vocal], ["a", "b"])
    assert plan.names == ("drums", "bass", "other", "vocals", "accompaniment")
    assert plan.members[0].derived == (("accompaniment", "vocals", "add"),)
    assert plan.members[0].needed == four
    assert plan.contributors("accompaniment") == [0, 1] and plan.contributors("drums") == [0]
    plan = plan_stems([four, vocal], ["a", "b"], two_stems="vocals", other_method="minus")
    assert plan.names == ("vocals", "accompaniment")
    assert plan.members[0].derived == (("accompaniment", "vocals", "minus"),)
    assert plan.members[0].needed == ("vocals",) and plan.members[1].direct == vocal
    plan = plan_stems([four, vocal, drums], ["a", "b", "c"], only=("no_drums", "vocals"))
    assert plan.names == ("vocals", "no_drums")
    assert plan.members[0].derived == (("no_drums", "drums", "add"),)
    assert plan.members[0].needed == ("bass", "other", "vocals")  # in the model's order
    plan = plan_stems([four, vocal], ["a", "b"], two_stems="accompaniment")
    assert plan.members[0].derived == (("accompaniment", "vocals", "add"),)
    with pytest.raises(UsageError, match="stem 'guitar' is not produced by any model"):
        plan_stems([four, vocal], ["a", "b"], two_stems="guitar")
    with pytest.raises(UsageError, match="model b gives none of this run's stems"):
        plan_stems([four, vocal], ["a", "b"], two_stems="drums")
    with pytest.raises(UsageError, match="--stem piano"):
        plan_stems([four, vocal], ["a", "b"], only=("piano",))


# -- audio-separator 0.47.1 ---------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large")
def test_agrees_with_audio_separator_where_the_definitions_agree():
    """See the module docstring for where they differ, and why."""
    from tests.oracles import require

    require("librosa")
    ensembler_module = require("audio_separator.separator.ensembler")
    logger = logging.getLogger("audio-separator")
    for n in (3000, 8192, 44100 + 17):
        for count in (2, 3):
            estimates = noise(count, n, seed=n * count)
            for algorithm in ALGORITHMS:
                weighted = algorithm.startswith("avg")
                weights = [2.0, 1.0, 0.5][:count] if weighted else None
                ours = combine_arrays(algorithm, estimates, weights, block_frames=4321)
                peer = ensembler_module.Ensembler(logger, algorithm, weights).ensemble(
                    [e.copy() for e in estimates])
                agree = n - n % HOP if algorithm in SPECTRAL else n
                difference = np.abs(ours[:, :agree] - peer[:, :agree]).max()
                if algorithm == "median_fft" and count == 3:
                    assert difference > 0.1  # componentwise median: another definition
                else:
                    assert difference <= 1e-6, (algorithm, n, count, difference)
    # The tail: audio-separator divides by a vanishing window there; we do not.
    estimates = noise(2, 2047, seed=5)
    peer = ensembler_module.Ensembler(logger, "max_fft").ensemble([e.copy() for e in estimates])
    ours = combine_arrays("max_fft", estimates)
    assert np.abs(peer).max() > 100 and np.abs(ours).max() < 3


# -- presets ------------------------------------------------------------------------------------
def test_the_packaged_presets_parse_and_resolve():
    from stemsplit.resolve import resolve_ensemble
    from stemsplit.registry import load_registry

    registry = load_registry(ROOT / "weights.toml")
    assert {"vocals_best", "instrumental_best", "four_stems_best"} <= set(registry.presets)
    for preset in registry.presets.values():
        recipe = resolve_ensemble([preset.name], registry)
        assert recipe.name == preset.name and recipe.models == preset.models
        assert recipe.algorithm == preset.algorithm and len(recipe.weights) == len(preset.models)
        plan_stems([registry.get(m).stems for m in recipe.models], recipe.models)
    assert registry.preset("VOCALS_BEST").models == ("bs_roformer_1297", "mel_roformer_kim")
    assert ("vocals_best" in [name for name, _ in registry.completions("vocals_")])
    recipe = resolve_ensemble(["vocals_best"], registry, algorithm="max_fft")
    assert recipe.name == "vocals_best.max_fft"
    recipe = resolve_ensemble(["instrumental_best"], registry, weights=[1, 1, 1])
    assert recipe.name == "instrumental_best.w1-1-1" and recipe.weights == (1, 1, 1)


GOOD_MODELS = '''
[models.a]
family = "mdx"
description = "x"
stems = ["vocals", "accompaniment"]
sample_rate = 44100
files = [{ url = "http://127.0.0.1:9/a.onnx" }]
parameters = { n_fft = 7680, dim_f = 3072, dim_t = 256, hop = 1024, compensate = 1.0 }

[models.b]
family = "mdx"
description = "x"
aliases = ["bee"]
stems = ["vocals", "accompaniment"]
sample_rate = 44100
files = [{ url = "http://127.0.0.1:9/b.onnx" }]
parameters = { n_fft = 7680, dim_f = 3072, dim_t = 256, hop = 1024, compensate = 1.0 }

[models.slow]
family = "mdx"
description = "x"
stems = ["vocals", "accompaniment"]
sample_rate = 16000
files = [{ url = "http://127.0.0.1:9/c.onnx" }]
parameters = { n_fft = 7680, dim_f = 3072, dim_t = 256, hop = 1024, compensate = 1.0 }
'''


@pytest.mark.parametrize("table,message", [
    ('models = ["a", "b"]\nalgorithm = "avg_wave"\ndescription = "x"\nweigths = [1, 2]',
     "unknown key 'weigths'"),
    ('models = ["a", "zzz"]\nalgorithm = "avg_wave"\ndescription = "x"', "unknown model 'zzz'"),
    ('models = ["a"]\nalgorithm = "avg_wave"\ndescription = "x"', "two or more"),
    ('models = ["a", "bee", "b"]\nalgorithm = "avg_wave"\ndescription = "x"', "listed twice"),
    ('models = ["a", "b"]\nalgorithm = "mean"\ndescription = "x"', "unknown algorithm"),
    ('models = ["a", "b"]\nalgorithm = "min_wave"\ndescription = "x"\nweights = [1, 2]',
     "weights apply to avg_wave and avg_fft"),
    ('models = ["a", "b"]\nalgorithm = "avg_wave"\ndescription = "x"\nweights = [1]',
     "weights must be 2 positive numbers"),
    ('models = ["a", "b"]\nalgorithm = "avg_wave"\ndescription = "x"\nweights = [1, -1]',
     "weights must be 2 positive numbers"),
    ('models = ["a", "b"]\nalgorithm = "avg_wave"', "lacks the field 'description'"),
    ('models = ["a", "slow"]\nalgorithm = "avg_wave"\ndescription = "x"', "sample rates"),
])
def test_bad_presets_are_refused_when_the_registry_is_read(tmp_path, table, message):
    from stemsplit.registry import load_registry

    path = tmp_path / "weights.toml"
    path.write_text(GOOD_MODELS + f"\n[presets.p]\n{table}\n")
    with pytest.raises(ModelError, match=message):
        load_registry(path)
    path.write_text(GOOD_MODELS + '\n[presets.bee]\nmodels = ["a", "b"]\nalgorithm = '
                    '"avg_wave"\ndescription = "x"\n')
    with pytest.raises(ModelError, match="the name is a model's already"):
        load_registry(path)


def test_recipes_refuse_what_cannot_be_combined(tmp_path):
    from stemsplit.resolve import parse_weights, resolve_ensemble
    from stemsplit.registry import load_registry

    path = tmp_path / "weights.toml"
    path.write_text(GOOD_MODELS + '\n[presets.pair]\nmodels = ["a", "b"]\nalgorithm = '
                    '"avg_fft"\nweights = [3, 1]\ndescription = "x"\n')
    registry = load_registry(path)
    assert resolve_ensemble(["a"], registry) is None
    assert resolve_ensemble(["a", "bee"], registry).name == "a+b"
    assert resolve_ensemble(["pair"], registry).weights == (3.0, 1.0)
    assert resolve_ensemble(["pair"], registry, algorithm="min_fft").name == "pair.min_fft"
    cases = [
        (dict(names=["a"], algorithm="max_wave"), "combine several models"),
        (dict(names=["a", "a"]), "named twice"),
        (dict(names=["pair", "a"]), "give it alone"),
        (dict(names=["a", "b"], weights=(1.0,)), "1 weights for 2 models"),
        (dict(names=["a", "b"], algorithm="median_wave", weights=(1.0, 2.0)),
         "applies to avg_wave and avg_fft"),
        (dict(names=["a", "slow"]), "one sample rate"),
        (dict(names=["a", "nope"]), "unknown model 'nope'"),
    ]
    for arguments, message in cases:
        names = arguments.pop("names")
        with pytest.raises(UsageError, match=message):
            resolve_ensemble(names, registry, **arguments)
    with pytest.raises(UsageError, match="positive"):
        parse_weights("1,0")
    with pytest.raises(UsageError, match="not a list of numbers"):
        parse_weights("1;2")
    long_names = [f"model_with_a_long_name_{i}" for i in range(6)]
    path.write_text("\n".join(
        f'[models.{n}]\nfamily = "mdx"\ndescription = "x"\nstems = ["vocals"]\n'
        f'sample_rate = 44100\nfiles = [{{ url = "http://127.0.0.1:9/{n}.onnx" }}]\n'
        'parameters = { n_fft = 7680, dim_f = 3072, dim_t = 256, hop = 1024, compensate = 1.0 }'
        for n in long_names))
    name = resolve_ensemble(long_names, load_registry(path)).name
    assert len(name) == 80 and name.startswith("model_with_a_long_name_0+")


# -- end to end through the command line ---------------------------------------------------------
def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value)


@pytest.fixture(scope="module")
def world(tiny_hf_home, tmp_path_factory):
    """A registry with the tiny htdemucs/htdemucs_6s (Hugging Face cache) and a random
    kim_vocal_2 (downloaded once from a loopback server, then cached), plus a preset."""
    root = tmp_path_factory.mktemp("ensemble")
    served = root / "served"
    onnx = write_mdx_onnx(served / "Kim_Vocal_2.onnx", KIM_VOCAL_2["dim_f"], DIM_T, seed=21)
    real = tomllib.loads((ROOT / "weights.toml").read_text())["models"]
    with FileServer(served) as server:
        lines = ['default_model = "htdemucs"']
        tables = {"htdemucs": real["htdemucs"], "htdemucs_6s": real["htdemucs_6s"],
                  "kim_vocal_2": dict(
                      family="mdx", architecture="MDX-Net (ONNX)", description="test",
                      stems=["vocals", "accompaniment"], sample_rate=RATE,
                      files=[{"url": f"{server.url}Kim_Vocal_2.onnx"}],
                      parameters={**{k: v for k, v in KIM_VOCAL_2.items()}, "dim_t": DIM_T,
                                  "hop": 1024, "uvr_hash": uvr_hash(onnx)})}
        for name, table in tables.items():
            lines.append(f"\n[models.{name}]")
            lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
        lines.append('\n[presets.tiny_pair]\ndescription = "test preset"\n'
                     'models = ["htdemucs", "kim_vocal_2"]\nalgorithm = "max_fft"\n')
        registry = root / "weights.toml"
        registry.write_text("\n".join(lines) + "\n")
        env = {**os.environ, "HF_HOME": str(tiny_hf_home), "STEMSPLIT_WEIGHTS_TOML": str(registry),
               "STEMSPLIT_CACHE": str(root / "cache"), "XDG_CACHE_HOME": str(root / "xdg"),
               "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "TMPDIR": str(root / "tmp")}
        (root / "tmp").mkdir()
        for variable in ("HF_HUB_OFFLINE", "STEMSPLIT_OFFLINE", "STEMSPLIT_MODEL"):
            env.pop(variable, None)
        fetched = subprocess.run([sys.executable, "-m", "stemsplit", "models", "download",
                                  "kim_vocal_2"], env=env, capture_output=True, text=True)
        assert fetched.returncode == 0, fetched.stderr
        env["HF_HUB_OFFLINE"] = "1"
        yield SimpleNamespace(root=root, env=env, server=server, tmp=root / "tmp")


@pytest.fixture
def cli(world, tmp_path):
    def run(*args, loads=False, torch_check=False, env=None):
        command = [sys.executable, "-m", "stemsplit", *args]
        if torch_check:  # say on stderr whether torch was ever imported
            command = [sys.executable, "-c", (
                "import sys, stemsplit.cli as c\n"
                "try:\n"
                "    c.main(sys.argv[1:])\n"
                "finally:\n"
                "    print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n"), *args]
        if loads:  # print a line on stderr for every model loaded
            command = [sys.executable, "-c", (
                "import sys, stemsplit.loading as l, stemsplit.cli as c\n"
                "real = l._load_named\n"
                "def counted(spec, *args, **kw):\n"
                "    print('LOAD', spec.name, file=sys.stderr)\n"
                "    return real(spec, *args, **kw)\n"
                "l._load_named = counted\n"
                "c.main(sys.argv[1:])\n"), *args]
        return subprocess.run(command, cwd=tmp_path, env={**world.env, **(env or {})},
                              capture_output=True, text=True, timeout=300)
    return run


def write_mix(path: Path, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    mix = np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.2 * np.sin(2 * np.pi * 550 * t)])
    mix = (mix + 0.05 * rng.standard_normal(mix.shape)).astype(np.float32)
    soundfile.write(path, mix.T, RATE, subtype="FLOAT")
    return mix


def leftovers(folder: Path) -> list[Path]:
    """stemsplit's temporary files and folders (other libraries leave their own there)."""
    return [path for path in folder.iterdir() if path.name.startswith("stemsplit")]


def read(path: Path) -> np.ndarray:
    return soundfile.read(path, dtype="float32")[0].T


def alone(cli, tmp_path, track: str, model: str) -> dict[str, np.ndarray]:
    result = cli(track, "-n", model, "--float32", "--clip-mode", "none", "-o", "alone")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "alone" / model / Path(track).stem
    return {path.stem: read(path) for path in folder.iterdir()}


def test_cross_family_ensemble_on_20_s_is_the_weighted_mean(cli, world, tmp_path):
    mix = write_mix(tmp_path / "long.wav", 20.0, seed=1)
    demucs, mdx = alone(cli, tmp_path, "long.wav", "htdemucs"), alone(cli, tmp_path, "long.wav", "kim_vocal_2")
    result = cli("long.wav", "-n", "htdemucs", "-n", "kim_vocal_2", "--ensemble-weights", "2,1",
                 "--float32", "--clip-mode", "none", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"] == "htdemucs+kim_vocal_2.w2-1"
    outputs = {stem: tmp_path / path for stem, path in document["tracks"][0]["outputs"].items()}
    assert list(outputs) == ["drums", "bass", "other", "vocals", "accompaniment"]
    assert outputs["vocals"] == tmp_path / "separated/htdemucs+kim_vocal_2.w2-1/long/vocals.wav"
    stems = {stem: read(path) for stem, path in outputs.items()}
    for stem in ("drums", "bass", "other"):  # one model only: its stem as it is
        assert np.array_equal(stems[stem], demucs[stem])
    assert np.abs(stems["vocals"] - (2 * demucs["vocals"].astype(np.float64) + mdx["vocals"]) / 3
                  ).max() <= 1e-6
    summed = demucs["drums"] + demucs["bass"] + demucs["other"]  # the --two-stems sum rule
    assert np.abs(stems["accompaniment"] - (2 * summed.astype(np.float64) + mdx["accompaniment"]) / 3
                  ).max() <= 1e-6
    assert stems["vocals"].shape == mix.shape
    assert leftovers(world.tmp) == []  # no spool left behind


def test_preset_two_stems_minus_and_spectral_on_3_s(cli, world, tmp_path):
    mix = write_mix(tmp_path / "short.wav", 3.0, seed=2)
    demucs, mdx = alone(cli, tmp_path, "short.wav", "htdemucs"), alone(cli, tmp_path, "short.wav", "kim_vocal_2")
    result = cli("short.wav", "-n", "tiny_pair", "--two-stems", "vocals", "--other-method",
                 "minus", "--float32", "--clip-mode", "none")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "separated/tiny_pair/short"
    assert result.stdout.split() == [str(Path("separated/tiny_pair/short") / f"{s}.wav")
                                     for s in ("vocals", "accompaniment")]
    vocals, accompaniment = read(folder / "vocals.wav"), read(folder / "accompaniment.wav")
    expected = reference("max_fft", [demucs["vocals"], mdx["vocals"]], [1, 1])
    assert np.abs(vocals - expected).max() <= 1e-5
    # minus: htdemucs' accompaniment is the mixture minus its vocals; kim's is its own
    expected = reference("max_fft", [mix - demucs["vocals"], mdx["accompaniment"]], [1, 1])
    assert np.abs(accompaniment - expected).max() <= 1e-5
    # --stem and another format apply as for one model
    one = cli("short.wav", "-n", "tiny_pair", "--stem", "vocals", "--flac", "-o", "flac")
    assert one.returncode == 0, one.stderr
    assert one.stdout.split() == ["flac/tiny_pair/short/vocals.flac"]
    assert soundfile.info(tmp_path / "flac/tiny_pair/short/vocals.flac").format == "FLAC"


def test_batch_loads_every_model_once_and_resumes(cli, world, tmp_path):
    album = tmp_path / "album"
    album.mkdir()
    for index in range(3):
        write_mix(album / f"{index}.wav", 0.6, seed=index)
    args = ["batch", "album", "-n", "htdemucs", "-n", "htdemucs_6s", "--ensemble", "median_wave",
            "-o", "out", "--json"]
    first = cli(*args, loads=True)
    assert first.returncode == 0, first.stderr
    assert sorted(line for line in first.stderr.splitlines() if line.startswith("LOAD")) == [
        "LOAD htdemucs", "LOAD htdemucs_6s"]
    records = [json.loads(line) for line in first.stdout.splitlines()]
    assert [r["status"] for r in records] == ["done"] * 3
    folder = tmp_path / "out/htdemucs+htdemucs_6s.median_wave"
    assert sorted(p.name for p in (folder / "0").iterdir()) == sorted(
        f"{s}.wav" for s in ("drums", "bass", "other", "vocals", "guitar", "piano"))
    kept = (folder / "0/vocals.wav").stat().st_mtime_ns
    (folder / "1/vocals.wav").unlink()
    again = cli(*args, loads=True)
    assert again.returncode == 0, again.stderr
    assert len([line for line in again.stderr.splitlines() if line.startswith("LOAD")]) <= 2
    status = {Path(r["input"]).name: r["status"] for r in map(json.loads, again.stdout.splitlines())}
    assert status == {"0.wav": "skipped", "1.wav": "done", "2.wav": "skipped"}
    assert (folder / "0/vocals.wav").stat().st_mtime_ns == kept
    assert (folder / "1/vocals.wav").is_file()
    assert leftovers(world.tmp) == []


@pytest.mark.parametrize("args,code,message", [
    (["-n", "htdemucs", "-n", "kim_vocal_2", "--two-stems", "guitar"], 2,
     "stem 'guitar' is not produced by any model of the ensemble"),
    (["-n", "htdemucs", "-n", "kim_vocal_2", "--stem", "piano"], 2, "--stem piano"),
    (["-n", "htdemucs", "-n", "kim_vocal_2", "--two-stems", "drums"], 2,
     "model kim_vocal_2 gives none of this run's stems"),
    (["-n", "htdemucs", "--ensemble", "max_fft"], 2, "combine several models"),
    (["-n", "tiny_pair", "--ensemble-weights", "1,2"], 2, "applies to avg_wave and avg_fft"),
    (["-n", "htdemucs", "-n", "kim_vocal_2", "--model-type", "bs_roformer"], 2,
     "--model-type applies to"),
    (["-n", "htdemucs", "-n", "kim_vocal_2", "--weights", "x.wav"], 2, "does not join"),
])
def test_ensemble_errors_come_before_any_work(cli, world, tmp_path, args, code, message):
    write_mix(tmp_path / "x.wav", 0.5, seed=0)
    before = world.server.count
    family_option = "--model-type" in args  # checked once torch is in, before any load
    result = cli("x.wav", *args, loads=family_option, torch_check=not family_option)
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    if family_option:
        assert "LOAD" not in result.stderr
    else:
        assert "TORCH False" in result.stderr
    assert world.server.count == before and not (tmp_path / "separated").exists()


def test_models_lists_and_describes_presets(cli, world):
    table = cli("models", env={"COLUMNS": "250"})  # wide enough for the whole description
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if line.startswith("tiny_pair"))
    assert "htdemucs + kim_vocal_2" in line and "max_fft" in line
    rows = json.loads(cli("models", "--json").stdout)
    preset = next(row for row in rows if row["name"] == "tiny_pair")
    assert preset["kind"] == "preset" and preset["models"] == ["htdemucs", "kim_vocal_2"]
    assert preset["algorithm"] == "max_fft" and preset["cached"] is True
    assert preset["stems"] == ["drums", "bass", "other", "vocals", "accompaniment"]
    assert all(row["kind"] == "model" for row in rows if row["name"] != "tiny_pair")
    info = json.loads(cli("models", "info", "tiny_pair", "--json").stdout)
    assert [m["name"] for m in info["members"]] == ["htdemucs", "kim_vocal_2"]
    text = cli("models", "info", "tiny_pair")
    assert text.returncode == 0 and "algorithm     max_fft" in text.stdout
