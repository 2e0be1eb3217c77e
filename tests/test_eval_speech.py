"""``stemsplit eval --metrics pesq,stoi,estoi``: the speech metrics against direct calls of
pesq and pystoi, their bounds (identical signals, noisier copies), the stems and clips they
cannot score, and the command line end to end (estimates folder and ``-n MODEL``).

The signals are tests/songs.py's synthesised vocals (voiced, formant-filtered, phrased) and
drums, a few seconds long: PESQ finds utterances in the vocals as in speech.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from stemsplit import audio, speech_metrics
from stemsplit.evaluation import evaluate_folders
from stemsplit.speech_metrics import SAMPLE_RATE, score_stem
from tests import songs
from tests.eval_tracks import read_audio, write_track
from tests.test_eval import run_eval

pesq = pytest.importorskip("pesq", reason="the eval extra (pesq) is not installed")
pystoi = pytest.importorskip("pystoi", reason="the eval extra (pystoi) is not installed")

PESQ_WIDEBAND_MAX = 4.643888473510742
"""P.862.2's score of a reference against itself (MOS-LQO, the wideband mapping's top)."""
SPEECH = ("pesq", "stoi", "estoi")


@pytest.fixture(scope="module")
def voice() -> dict[str, np.ndarray]:
    """A 3 s stereo song at 16 kHz (vocals, drums, bass, other)."""
    return songs.song(3, seconds=3.0, rate=SAMPLE_RATE)


def noisy(samples: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """``samples`` plus white noise ``level`` times its RMS."""
    rng = np.random.default_rng(seed)
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return (samples + level * rms * rng.standard_normal(samples.shape)).astype(np.float32)


def direct(reference: np.ndarray, estimate: np.ndarray, rate: int) -> dict[str, float]:
    """pesq and pystoi called here on the mean of the channels at 16 kHz (ffmpeg's resampler,
    as stemsplit.audio.convert)."""
    ref, est = (audio.convert(np.mean(np.asarray(x, dtype=np.float64), axis=0)
                              .astype(np.float32), rate, SAMPLE_RATE, 1)[0].astype(np.float64)
                for x in (reference, estimate))
    return {"pesq": pesq.pesq(SAMPLE_RATE, ref, est, "wb"),
            "stoi": pystoi.stoi(ref, est, SAMPLE_RATE, extended=False),
            "estoi": pystoi.stoi(ref, est, SAMPLE_RATE, extended=True)}


def same(values: dict, expected: dict) -> bool:
    """PESQ (single-threaded C) to the bit; STOI to 1e-12 (numpy's BLAS may sum in another
    order from one call to the next)."""
    return values.keys() <= expected.keys() and all(
        values[key] == expected[key] if key == "pesq"
        else math.isclose(values[key], expected[key], rel_tol=1e-12) for key in values)


def test_a_reference_against_itself_scores_the_maximum(voice):
    values, reasons = score_stem(voice["vocals"], voice["vocals"], SAMPLE_RATE, SPEECH)
    assert reasons == []
    assert math.isclose(values["pesq"], PESQ_WIDEBAND_MAX, abs_tol=1e-6)
    assert math.isclose(values["stoi"], 1.0, abs_tol=1e-9)
    assert math.isclose(values["estoi"], 1.0, abs_tol=1e-9)


def test_noisier_copies_score_lower(voice):
    clean = voice["vocals"]
    scores = [score_stem(clean, noisy(clean, level), SAMPLE_RATE, SPEECH)[0]
              for level in (0.1, 0.5, 2.0)]
    for metric in SPEECH:
        series = [s[metric] for s in scores]
        assert series == sorted(series, reverse=True) and len(set(series)) == 3, (metric, series)
    assert scores[0]["pesq"] < PESQ_WIDEBAND_MAX - 0.5 and scores[-1]["pesq"] < 1.5
    assert scores[0]["stoi"] < 0.999 and scores[-1]["stoi"] < 0.9


def test_the_figures_equal_pesq_and_pystoi_on_the_downmix_at_16_khz():
    """At 44.1 kHz stereo: our values are the packages' own on the mean of the channels
    resampled to 16 kHz, to the last bit."""
    stems = songs.song(4, seconds=2.5, rate=44100)
    reference = stems["vocals"]
    estimate = noisy(reference + 0.3 * stems["drums"], 0.2)
    values, reasons = score_stem(reference, estimate, 44100, SPEECH)
    assert reasons == []
    assert same(values, direct(reference, estimate, 44100))
    frames = round(reference.shape[1] * SAMPLE_RATE / 44100)
    assert speech_metrics.prepare(reference, 44100).shape == (frames,)


def test_silent_short_and_unvoiced_references_give_a_reason_not_a_value(voice):
    clean = voice["vocals"]
    values, reasons = score_stem(np.zeros_like(clean), clean, SAMPLE_RATE, SPEECH)
    assert values == dict.fromkeys(SPEECH)
    assert reasons == ["no pesq, stoi, estoi (the reference is silent)"]
    short = clean[:, 4000:7200]  # 0.2 s of singing
    values, reasons = score_stem(short, short, SAMPLE_RATE, SPEECH)
    assert values == dict.fromkeys(SPEECH)
    assert reasons == ["no pesq (PESQ needs 0.25 s at least; 0.20 s here)",
                       "no stoi, estoi (STOI needs 0.4 s of reference above its silence threshold)"]
    # 600 dB below the estimate: the pesq package scales both by their common peak, and
    # P.862's voice activity detection finds no utterance in what is left of the reference
    whisper = (clean * 1e-30).astype(np.float32)
    values, reasons = score_stem(whisper, clean, SAMPLE_RATE, ("pesq",))
    assert values == {"pesq": None}
    assert reasons == ["no pesq (PESQ found no speech in the reference)"]


def _speech_set(root, voice):
    """One reference track (vocals, drums, mixture) and noisy estimates of both."""
    references = {stem: voice[stem] for stem in ("vocals", "drums")}
    estimates = {stem: noisy(samples, 0.3, seed=index)
                 for index, (stem, samples) in enumerate(references.items())}
    write_track(root / "ref" / "song", references, SAMPLE_RATE, mixture=True)
    write_track(root / "est" / "song", estimates, SAMPLE_RATE)
    return root / "ref", root / "est"


def test_speech_stems_only_and_one_note_for_the_others(tmp_path, voice):
    ref, est = _speech_set(tmp_path, voice)
    report = evaluate_folders(ref, est, ("sdr", "pesq", "stoi"))
    (track,) = report.tracks
    assert report.keys == ["sdr", "pesq", "stoi"]
    vocals, drums = track.stems["vocals"].values, track.stems["drums"].values
    expected = direct(read_audio(ref / "song" / "vocals.wav"),
                      read_audio(est / "song" / "vocals.wav"), SAMPLE_RATE)
    assert same({key: vocals[key] for key in ("pesq", "stoi")}, expected)
    assert drums["pesq"] is None and drums["stoi"] is None and drums["sdr"] is not None
    assert track.warnings == []
    assert report.notes == ["pesq, stoi: speech metrics, given for speech-like stems only "
                            f"({', '.join(speech_metrics.SPEECH_STEMS)}); none for drums"]


def test_the_command_line_reports_pesq_and_stoi(tmp_path, capsys, voice):
    ref, est = _speech_set(tmp_path, voice)
    code, out, err = run_eval(capsys, ref, est, "--metrics", "pesq,stoi", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["values"] == ["pesq", "stoi"]
    stems = document["tracks"][0]["stems"]
    assert stems["drums"]["pesq"] is None and stems["drums"]["stoi"] is None
    assert 1.0 < stems["vocals"]["pesq"] < PESQ_WIDEBAND_MAX and 0.5 < stems["vocals"]["stoi"] < 1.0
    assert document["aggregate"]["vocals"]["pesq"]["median"] == stems["vocals"]["pesq"]
    assert "pesq, stoi: speech metrics, given for speech-like stems only" in err

    code, out, err = run_eval(capsys, ref, est, "--metrics", "pesq,stoi")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["track", "stem", "pesq", "stoi"]
    assert rows[0].split() == ["song", "vocals", f"{stems['vocals']['pesq']:.3f}",
                               f"{stems['vocals']['stoi']:.3f}"]
    assert rows[1].split() == ["drums", "-", "-"]


@pytest.mark.parametrize("module", ["pesq", "pystoi"])
def test_a_missing_package_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import pesq` fails
    metric = "pesq" if module == "pesq" else "stoi"
    # -n htdemucs is not cached here: reaching the model would be another error
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    (tmp_path / "ref").mkdir()
    code, out, err = run_eval(capsys, tmp_path / "ref", "-n", "htdemucs", "--metrics",
                              f"sdr,{metric}")
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"error: --metrics {metric} needs {module} (")
    assert line.endswith('install it with: pip install "stemsplit-cli[eval]"')


def test_an_unknown_metric_is_a_usage_error_before_any_work(tmp_path, capsys):
    code, out, err = run_eval(capsys, tmp_path / "nowhere", "-n", "htdemucs", "--metrics",
                              "pesq,mos")
    assert code == 2 and out == ""
    assert err.splitlines()[0].startswith("error: unknown metric 'mos'")


def test_with_a_model_the_vocals_get_speech_scores(tmp_path, capsys, monkeypatch, tiny_hf_home):
    monkeypatch.setenv("HF_HOME", str(tiny_hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STEMSPLIT_MALLOC_TUNING", "0")
    stems = songs.song(5, seconds=1.5, rate=44100)
    write_track(tmp_path / "ref" / "a", stems, 44100, mixture=True)
    code, out, err = run_eval(capsys, tmp_path / "ref", "-n", "htdemucs", "--two-stems",
                              "vocals", "-o", tmp_path / "out", "--metrics", "si_sdr,pesq,stoi",
                              "--json")
    assert code == 0, err
    scored = json.loads(out)["tracks"][0]["stems"]
    assert set(scored) == {"vocals", "accompaniment"}
    separated = read_audio(tmp_path / "out" / "htdemucs" / "a" / "vocals.wav")
    expected = direct(read_audio(tmp_path / "ref" / "a" / "vocals.wav"), separated, 44100)
    assert same({key: scored["vocals"][key] for key in ("pesq", "stoi")}, expected)
    assert scored["accompaniment"]["pesq"] is None and scored["accompaniment"]["si_sdr"] is not None
