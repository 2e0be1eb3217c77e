"""``stemsplit eval``: the metrics against whole-array formulas and museval, the folder
layouts, the outputs (table, JSON, CSV), exits, and ``-n MODEL`` end to end."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from stemsplit import evaluation
from stemsplit.evaluation import StemSums, evaluate_folders, find_reference_tracks, score_track
from tests.eval_tracks import (STEMS, direct_sdr, direct_si_sdr, estimates_of, read_audio,
                               synthetic_stems, write_audio, write_track)

RATE = 8000
"""Most layout tests run at 8 kHz: the rules do not depend on the rate, and it is cheap."""
TWO = ("vocals", "drums")
"""Most layout tests score two stems: each file costs two ffmpeg runs (probe, decode)."""


def run_eval(capsys, *args: str) -> tuple[int, str, str]:
    """``stemsplit eval ARGS`` in this process: (exit code, stdout, stderr)."""
    from stemsplit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["eval", *map(str, args)])
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out, captured.err


def make_set(root: Path, tracks=("a", "b", "c"), seconds: float = 1.0, rate: int = RATE,
             stems=TWO, layout: str = "{track}"):
    """Reference tracks under root/ref and estimates under root/est/<layout>; returns
    (ref dir, est dir, {track: reference arrays}, {track: estimate arrays})."""
    references, estimates = {}, {}
    for number, track in enumerate(tracks):
        references[track] = synthetic_stems(seconds, rate, seed=10 + number, stems=stems)
        estimates[track] = estimates_of(references[track], seed=20 + number,
                                        leak=0.05 * (number + 1))
        write_track(root / "ref" / track, references[track], rate, mixture=True)
        write_track(root / "est" / layout.format(track=track), estimates[track], rate)
    return root / "ref", root / "est", references, estimates


def close(value: float, expected: float) -> bool:
    return math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-6)


# -- the metrics ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["noisy", "scaled", "inverted", "mono-shaped"])
def test_sdr_and_si_sdr_equal_the_whole_array_formulas(case):
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((2, 5000)).astype(np.float32) * 0.2
    noise = rng.standard_normal(reference.shape).astype(np.float32) * 0.05
    estimate = {"noisy": reference + noise, "scaled": 0.5 * reference + noise,
                "inverted": -0.8 * reference + noise, "mono-shaped": reference + noise}[case]
    if case == "mono-shaped":
        reference, estimate = reference[0], estimate[0]
    assert close(evaluation.sdr(reference, estimate), direct_sdr(reference, estimate))
    assert close(evaluation.si_sdr(reference, estimate), direct_si_sdr(reference, estimate))
    if case == "scaled":  # SI-SDR ignores the gain; SDR does not
        assert evaluation.si_sdr(reference, estimate) > evaluation.sdr(reference, estimate) + 0.5


def test_the_streamed_sums_over_many_blocks_equal_one_pass():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal((2, 100_000)) * 0.3
    estimate = 0.9 * reference + 0.1 * rng.standard_normal(reference.shape)
    cuts = np.sort(rng.choice(np.arange(1, 100_000), size=300, replace=False))
    sums = StemSums()
    for start, end in zip([0, *cuts], [*cuts, 100_000]):
        sums.update(reference[:, start:end], estimate[:, start:end])
    assert sums.frames == 100_000
    assert close(sums.sdr(), direct_sdr(reference, estimate))
    assert close(sums.si_sdr(), direct_si_sdr(reference, estimate))


def test_silent_reference_or_estimate():
    rng = np.random.default_rng(2)
    sound = rng.standard_normal((2, 1000)) * 0.1
    silence = np.zeros_like(sound)
    energy = float(np.sum(sound ** 2))
    # Silent reference: the whole estimate is error (alpha = 1 for SI-SDR).
    expected = 10 * math.log10(1e-8 / (energy + 1e-8))
    for metric, direct in ((evaluation.sdr, direct_sdr), (evaluation.si_sdr, direct_si_sdr)):
        assert close(metric(silence, sound), expected)
        assert close(metric(silence, sound), direct(silence, sound))
        assert metric(silence, silence) == 0.0  # nothing to find, nothing found
        assert close(metric(sound, silence), 0.0)  # a silent estimate: 0 dB, as SDR gives
        assert close(metric(sound, silence), direct(sound, silence))


def test_scoring_reads_in_blocks_and_memory_stays_flat(tmp_path):
    rate, peaks = 44100, {}
    for seconds in (4, 24):
        reference = synthetic_stems(seconds, rate, seed=seconds, stems=("vocals",))
        estimate = estimates_of(reference, seed=seconds + 1)
        track = find_reference_tracks(write_track(tmp_path / f"ref{seconds}" / "t",
                                                  reference, rate).parent)[0]
        estimates = {"vocals": write_audio(tmp_path / f"est{seconds}" / "vocals.wav",
                                           estimate["vocals"], rate)}
        tracemalloc.start()
        try:
            score = score_track(track, estimates, ("sdr", "si_sdr"), block_frames=4096)
            peaks[seconds] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert score.status == "done", score.error
        values = score.stems["vocals"].values
        assert score.stems["vocals"].frames == seconds * rate
        assert close(values["sdr"], direct_sdr(reference["vocals"], estimate["vocals"]))
        assert close(values["si_sdr"], direct_si_sdr(reference["vocals"], estimate["vocals"]))
    whole_track_float64 = 24 * rate * 2 * 8
    assert peaks[24] < whole_track_float64 / 20, peaks
    assert peaks[24] < 1.5 * peaks[4] + 200_000, peaks  # flat: 6x the audio, same memory


# -- bss_v4 ----------------------------------------------------------------------------------
# museval's cost is in its 512-tap filters (a linear system of sources x channels x 512
# unknowns): four stereo sources take about 10 s on the 2-core machine, four mono ones 2 s.
# The four-stem track is mono; the stereo layout is checked on a vocals/accompaniment pair.
def _recording_museval(patch: pytest.MonkeyPatch) -> list:
    """Record each museval.evaluate call: (references, estimates, args, kwargs, result)."""
    import museval

    calls = []
    real = museval.evaluate

    def recording(references, estimates, *args, **kwargs):
        result = real(references, estimates, *args, **kwargs)
        calls.append((np.array(references), np.array(estimates), args, kwargs, result))
        return result

    patch.setattr(museval, "evaluate", recording)
    return calls


def _medians(scores) -> list[dict[str, float]]:
    """museval.evaluate's (SDR, ISR, SIR, SAR) as the median over frames, per source."""
    names = ("bss_v4_sdr", "bss_v4_isr", "bss_v4_sir", "bss_v4_sar")
    return [{name: float(np.nanmedian(values[i])) for name, values in zip(names, scores)}
            for i in range(len(scores[0]))]


def _museval_medians(refs, ests, group, rate) -> dict[str, dict[str, float]]:
    """museval.evaluate called here on (sources, samples, channels) float64 arrays."""
    import museval

    scores = museval.evaluate(np.stack([refs[stem].T for stem in group]),
                              np.stack([ests[stem].T for stem in group]), win=rate, hop=rate)
    return dict(zip(group, _medians(scores)))


def _read_folder(folder: Path, stems) -> dict[str, np.ndarray]:
    return {stem: read_audio(folder / f"{stem}.wav").astype(np.float64) for stem in stems}


@pytest.fixture(scope="module")
def four_stem_track(tmp_path_factory):
    """A 6 s, 44.1 kHz mono track with vocals, drums, bass, other; estimates of the four and
    of the accompaniment; scored once with sdr and bss_v4, each museval call recorded."""
    root = tmp_path_factory.mktemp("bss")
    rate = 44100
    references = synthetic_stems(6.0, rate, seed=3, channels=1)
    estimates = estimates_of(references, seed=4, leak=0.15, noise=0.05)
    estimates["accompaniment"] = (estimates["drums"] + estimates["bass"]
                                  + estimates["other"]).astype(np.float32)
    write_track(root / "ref" / "song", references, rate, mixture=True)
    write_track(root / "est" / "song", estimates, rate)
    with pytest.MonkeyPatch.context() as patch:
        calls = _recording_museval(patch)
        report = evaluate_folders(root / "ref", root / "est", ("sdr", "bss_v4"))
    return root, rate, report, calls


def test_bss_v4_equals_museval_and_pairs_vocals_with_the_accompaniment(four_stem_track):
    root, rate, report, calls = four_stem_track
    track = report.tracks[0]
    assert track.status == "done", track.error
    refs = _read_folder(root / "ref/song", STEMS)
    ests = _read_folder(root / "est/song", (*STEMS, "accompaniment"))
    # the derived accompaniment reference, summed as the evaluation sums it
    refs["accompaniment"] = ((refs["drums"] + refs["bass"] + refs["other"])
                             .astype(np.float32).astype(np.float64))
    # As museval's MUSDB evaluation: the four stems together, then vocals/accompaniment,
    # with 1 s windows and hops (v4, museval's default mode).
    joint, pair = list(STEMS), ["vocals", "accompaniment"]
    assert [len(call[0]) for call in calls] == [4, 2]
    assert all(call[2] == () and call[3] == {"win": rate, "hop": rate} for call in calls)
    from_joint = _museval_medians(refs, ests, joint, rate)
    from_pair = _museval_medians(refs, ests, pair, rate)
    expected = {**{stem: from_joint[stem] for stem in ("drums", "bass", "other")}, **from_pair}
    for stem in (*STEMS, "accompaniment"):
        values = track.stems[stem].values
        assert list(values) == ["sdr", "bss_v4_sdr", "bss_v4_sir", "bss_v4_isr", "bss_v4_sar"]
        for key, value in expected[stem].items():
            assert values[key] == value, (stem, key)  # exact: the same call on the same data
    assert from_pair["vocals"] != from_joint["vocals"]  # the pair rule matters
    # global SDR of every stem, the accompaniment against the sum of the other stems
    for stem in (*STEMS, "accompaniment"):
        assert close(track.stems[stem].values["sdr"], direct_sdr(refs[stem], ests[stem]))
    assert track.stems["accompaniment"].reference == "sum of drums, bass, other"


def test_bss_v4_of_a_stereo_vocals_no_vocals_pair(tmp_path):
    rate = 44100
    references = synthetic_stems(6.0, rate, seed=11)
    estimates = estimates_of(references, seed=12, leak=0.1)
    write_track(tmp_path / "ref/t", references, rate)
    write_track(tmp_path / "est/t", {"vocals": estimates["vocals"],
                                     "no_vocals": estimates["drums"] + estimates["bass"]
                                     + estimates["other"]}, rate)
    track = evaluate_folders(tmp_path / "ref", tmp_path / "est", ("bss_v4",)).tracks[0]
    assert track.status == "done" and track.channels == 2
    refs = _read_folder(tmp_path / "ref/t", STEMS)
    ests = _read_folder(tmp_path / "est/t", ("vocals", "no_vocals"))
    refs["accompaniment"] = ((refs["drums"] + refs["bass"] + refs["other"])
                             .astype(np.float32).astype(np.float64))
    ests["accompaniment"] = ests.pop("no_vocals")
    expected = _museval_medians(refs, ests, ["vocals", "accompaniment"], rate)
    for stem in ("vocals", "accompaniment"):
        assert track.stems[stem].values == expected[stem]


def test_bss_v4_medians_over_tracks_in_the_aggregate(four_stem_track):
    _, _, report, _ = four_stem_track
    aggregate = report.aggregate()
    assert set(aggregate) == {*STEMS, "accompaniment"}
    for stem, per_key in aggregate.items():
        for key, entry in per_key.items():
            value = report.tracks[0].stems[stem].values[key]
            assert entry == {"mean": value, "median": value, "tracks": 1}


def test_a_lone_stem_gets_no_bss_v4_but_its_sdr(tmp_path):
    references = synthetic_stems(1.5, RATE, seed=5)
    write_track(tmp_path / "ref/t", references, RATE)
    write_track(tmp_path / "est/t", {"bass": references["bass"] * 0.9}, RATE)
    track = evaluate_folders(tmp_path / "ref", tmp_path / "est", ("sdr", "bss_v4")).tracks[0]
    assert track.status == "done"
    values = track.stems["bass"].values
    assert close(values["sdr"], direct_sdr(references["bass"], 0.9 * references["bass"]))
    assert all(values[key] is None for key in evaluation.BSS_V4_KEYS)
    assert any("bass: no bss_v4" in warning for warning in track.warnings)


def test_a_silent_reference_stem_gets_no_bss_v4_but_its_sdr(tmp_path):
    references = synthetic_stems(1.5, RATE, seed=9, channels=1, stems=TWO)
    references["vocals"][:] = 0.0  # an instrumental track: museval refuses silent references
    estimates = estimates_of(references, seed=10)
    write_track(tmp_path / "ref/t", references, RATE)
    write_track(tmp_path / "est/t", estimates, RATE)
    track = evaluate_folders(tmp_path / "ref", tmp_path / "est", ("sdr", "bss_v4")).tracks[0]
    assert track.status == "done"
    for stem in TWO:
        values = track.stems[stem].values
        assert close(values["sdr"], direct_sdr(references[stem], estimates[stem]))
        assert all(values[key] is None for key in evaluation.BSS_V4_KEYS)
    assert "vocals, drums: no bss_v4 (the vocals reference is silent, and BSSEval scores no " \
        "silent source)" in track.warnings


def test_museval_missing_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    ref, est, _, _ = make_set(tmp_path, tracks=("a",))
    monkeypatch.setitem(sys.modules, "museval", None)  # `import museval` fails
    code, out, err = run_eval(capsys, ref, est, "--metrics", "sdr,bss_v4")
    lines = err.splitlines()
    assert code == 1 and out == ""
    assert len(lines) == 1, err
    assert lines[0].startswith("error: --metrics bss_v4 needs museval")
    assert 'pip install "stemsplit-cli[eval]"' in lines[0]
    code, _, err = run_eval(capsys, ref, est)  # the default metrics do not need it
    assert code == 0, err


# -- layouts -----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["{track}", "htdemucs/{track}"])
def test_both_layouts_score_every_stem(tmp_path, layout):
    ref, est, references, estimates = make_set(tmp_path, tracks=("a", "b"), layout=layout)
    report = evaluate_folders(ref, est)
    assert [t.track for t in report.tracks] == ["a", "b"]
    for track in report.tracks:
        assert track.status == "done" and not track.skipped and not track.warnings
        assert list(track.stems) == list(TWO)
        for stem, score in track.stems.items():
            r, e = references[track.track][stem], estimates[track.track][stem]
            assert close(score.values["sdr"], direct_sdr(r, e))
            assert close(score.values["si_sdr"], direct_si_sdr(r, e))
            assert score.frames == RATE
        assert Path(track.estimates) == est / layout.format(track=track.track)


def test_several_model_folders_are_a_usage_error(tmp_path, capsys):
    ref, est, _, estimates = make_set(tmp_path, tracks=("a",), layout="one/{track}")
    write_track(est / "two" / "a", estimates["a"], RATE)
    code, _, err = run_eval(capsys, ref, est)
    assert code == 2 and err.startswith("error: ") and "several models (one, two)" in err


def test_track_selects_and_unmatched_folders_are_said(tmp_path, capsys):
    ref, est, _, estimates = make_set(tmp_path, tracks=("a", "b"), stems=("vocals",))
    write_track(est / "zz", estimates["a"], RATE)
    code, out, err = run_eval(capsys, ref, est, "--track", "b", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert [t["track"] for t in document["tracks"]] == ["b"]
    assert document["notes"] == ["1 estimate folder matches no reference track: zz"]
    assert "1 estimate folder matches no reference track: zz" in err
    shutil.rmtree(est / "a")  # a track without estimates: said, not a failure
    code, out, err = run_eval(capsys, ref, est, "--json")
    assert code == 0, err
    assert f"warning: a: no estimates in {est}" in err and "1 track without estimates" in err
    assert json.loads(out)["missing"] == ["a"]
    code, out, err = run_eval(capsys, ref, est)  # the table, on stdout
    assert code == 0 and re.search(r"^a\s+\(no estimates\)$", out, re.M)


@pytest.mark.parametrize("name", ["no_vocals", "instrumental", "accompaniment"])
def test_the_accompaniment_is_scored_against_the_sum_of_the_other_stems(tmp_path, name):
    references = synthetic_stems(1.0, RATE, seed=6)
    hand_sum = (references["drums"].astype(np.float64) + references["bass"]
                + references["other"])
    vocals = estimates_of(references, seed=7)["vocals"]
    accompaniment = (hand_sum * 0.95).astype(np.float32) + 0.01 * vocals
    write_track(tmp_path / "ref/t", references, RATE, mixture=True)
    write_track(tmp_path / "est/t", {"vocals": vocals, name: accompaniment}, RATE)
    track = evaluate_folders(tmp_path / "ref", tmp_path / "est").tracks[0]
    assert list(track.stems) == ["vocals", "accompaniment"]
    score = track.stems["accompaniment"]
    assert score.reference == "sum of drums, bass, other"
    assert close(score.values["sdr"], direct_sdr(hand_sum, accompaniment))
    assert close(score.values["si_sdr"], direct_si_sdr(hand_sum, accompaniment))
    if name == "no_vocals":  # against an accompaniment summed by hand, written to a file
        write_track(tmp_path / "summed/t", {"accompaniment": hand_sum.astype(np.float32)}, RATE)
        by_hand = evaluate_folders(tmp_path / "summed", tmp_path / "est").tracks[0]
        for key in ("sdr", "si_sdr"):  # the file holds the sum rounded to float32
            assert abs(score.values[key] - by_hand.stems["accompaniment"].values[key]) < 1e-4
    assert track.skipped == {"drums": "no estimate", "bass": "no estimate",
                             "other": "no estimate"}
    assert close(track.stems["vocals"].values["sdr"], direct_sdr(references["vocals"], vocals))


def test_no_stem_is_the_sum_of_the_others(tmp_path):
    references = synthetic_stems(1.0, RATE, seed=8)
    rest = references["vocals"].astype(np.float64) + references["bass"] + references["other"]
    estimate = (0.9 * rest).astype(np.float32)
    write_track(tmp_path / "ref/t", references, RATE)
    write_track(tmp_path / "est/t", {"drums": references["drums"], "no_drums": estimate}, RATE)
    track = evaluate_folders(tmp_path / "ref", tmp_path / "est").tracks[0]
    assert track.stems["no_drums"].reference == "sum of vocals, bass, other"
    assert close(track.stems["no_drums"].values["sdr"], direct_sdr(rest, estimate))
    assert close(track.stems["drums"].values["sdr"], 10 * math.log10(
        (float(np.sum(references["drums"].astype(np.float64) ** 2)) + 1e-8) / 1e-8))


def test_missing_stems_are_skipped_and_said(tmp_path, capsys):
    ref, est, references, estimates = make_set(tmp_path, tracks=("a", "b"),
                                               stems=("vocals", "bass"))
    (est / "a" / "bass.wav").unlink()
    write_audio(est / "b" / "piano.wav", estimates["b"]["vocals"], RATE)
    code, out, err = run_eval(capsys, ref, est, "--json")
    assert code == 0, err
    assert "skipped bass in track a: no estimate" in err.splitlines()
    assert "skipped piano in track b: no reference stem" in err.splitlines()
    document = json.loads(out)
    a, b = document["tracks"]
    assert set(a["stems"]) == {"vocals"} and a["skipped"] == {"bass": "no estimate"}
    assert set(b["stems"]) == {"vocals", "bass"} and b["skipped"] == {"piano": "no reference stem"}
    assert document["aggregate"]["bass"]["sdr"]["tracks"] == 1


def test_lengths_a_little_apart_are_cut_far_apart_fail_that_track(tmp_path, capsys):
    ref, est, references, estimates = make_set(tmp_path, tracks=("a", "b"))
    longer = np.concatenate([estimates["a"]["vocals"],
                             np.full((2, 100), 0.5, dtype=np.float32)], axis=1)
    write_audio(est / "a" / "vocals.wav", longer, RATE)  # 100 samples: codec padding
    write_audio(est / "b" / "drums.wav", estimates["b"]["drums"][:, :RATE // 2], RATE)
    code, out, err = run_eval(capsys, ref, est, "--json")
    assert code == 1
    document = json.loads(out)
    a, b = document["tracks"]
    assert a["status"] == "done"
    assert close(a["stems"]["vocals"]["sdr"], direct_sdr(references["a"]["vocals"],
                                                         estimates["a"]["vocals"]))
    assert a["stems"]["vocals"]["frames"] == RATE
    assert "warning: a: vocals: estimate 100 samples longer than the reference" in err
    assert b["status"] == "failed" and "drums: the estimate is more than 0.1 s shorter" in b["error"]
    assert "error: b: drums: the estimate is more than 0.1 s shorter" in err
    assert document["failed"] == ["b"]


def test_a_corrupt_estimate_fails_its_track_and_the_others_are_scored(tmp_path, capsys):
    ref, est, references, estimates = make_set(tmp_path)
    (est / "b" / "vocals.wav").write_bytes(b"RIFF\x00\x01\x02\x03not a wav file at all" * 10)
    code, out, err = run_eval(capsys, ref, est, "--json")
    assert code == 1
    document = json.loads(out)
    assert [t["status"] for t in document["tracks"]] == ["done", "failed", "done"]
    failed = document["tracks"][1]
    assert failed["error"].startswith("b: ") and "vocals.wav" in failed["error"]
    assert failed["stems"] == {}
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: b: ")
    assert "1 track failed" in err  # (the table's "(failed)" row: test_the_plain_table)
    for track in (document["tracks"][0], document["tracks"][2]):
        name = track["track"]
        for stem in TWO:
            assert close(track["stems"][stem]["sdr"],
                         direct_sdr(references[name][stem], estimates[name][stem]))
    assert document["aggregate"]["vocals"]["sdr"]["tracks"] == 2


# -- outputs ---------------------------------------------------------------------------
def test_json_csv_and_the_table_carry_every_number(tmp_path, capsys, monkeypatch):
    ref, est, references, estimates = make_set(tmp_path)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))),
                                                     real_replace(a, b))[1])
    target = tmp_path / "out" / "scores.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    code, out, err = run_eval(capsys, ref, est, "--json", "--csv", target)
    assert code == 0, err
    document = json.loads(out)
    assert document["metrics"] == ["sdr", "si_sdr"] and document["values"] == ["sdr", "si_sdr"]
    expected = {(t, stem): {"sdr": direct_sdr(references[t][stem], estimates[t][stem]),
                            "si_sdr": direct_si_sdr(references[t][stem], estimates[t][stem])}
                for t in references for stem in TWO}
    for track in document["tracks"]:
        assert track["status"] == "done" and track["sample_rate"] == RATE
        for stem, entry in track["stems"].items():
            assert entry["frames"] == RATE and entry["duration_seconds"] == 1.0
            for key, value in expected[(track["track"], stem)].items():
                assert close(entry[key], value)
    for stem in TWO:
        for key in ("sdr", "si_sdr"):
            values = [expected[(t, stem)][key] for t in references]
            entry = document["aggregate"][stem][key]
            assert entry["tracks"] == 3
            assert close(entry["mean"], statistics.fmean(values))
            assert close(entry["median"], statistics.median(values))

    # CSV: written beside the target under a temporary name, then renamed over it
    assert len(replaced) == 1 and replaced[0][1] == target
    assert replaced[0][0].parent == target.parent and replaced[0][0].name.startswith(".")
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.csv"]
    rows = list(csv.DictReader(target.open(newline="")))
    assert list(rows[0]) == ["scope", "track", "stem", "metric", "value", "tracks"]
    track_rows = [r for r in rows if r["scope"] == "track"]
    assert len(track_rows) == 3 * 2 * 2
    by_track = {t["track"]: t for t in document["tracks"]}
    for row in track_rows:
        assert float(row["value"]) == by_track[row["track"]]["stems"][row["stem"]][row["metric"]]
    for row in (r for r in rows if r["scope"] != "track"):
        entry = document["aggregate"][row["stem"]][row["metric"]]
        assert float(row["value"]) == entry[row["scope"]] and int(row["tracks"]) == 3
    assert len(rows) == len(track_rows) + 2 * 2 * 2
    for name in ("a", "b", "c"):
        assert f"scored {name} (2 stems, 1.0 s of audio" in err
    assert "track" not in out.splitlines()[0]  # --json: the document alone, no table

    # without --json: the table on stdout (per track and stem, then the mean and the median
    # per stem), the messages alone on stderr
    code, out, err = run_eval(capsys, ref, est)
    assert code == 0, err
    assert re.search(r"^track\s+stem\s+sdr\s+si_sdr$", out, re.M)
    assert not re.search(r"^track\s+stem", err, re.M) and "median" not in err
    for statistic in ("mean", "median"):
        for stem in TWO:
            row = re.search(rf"^{statistic} \(3 tracks\)\s+{stem}\s+(\S+)\s+(\S+)$", out, re.M)
            assert row, out
            for key, shown in zip(("sdr", "si_sdr"), row.groups()):
                assert shown == f"{document['aggregate'][stem][key][statistic]:.3f}"
    assert all(line == line.rstrip() for line in out.splitlines())  # plain text


def test_a_failed_csv_write_leaves_the_old_file(tmp_path, capsys, monkeypatch):
    ref, est, _, _ = make_set(tmp_path, tracks=("a",))
    target = tmp_path / "scores.csv"
    target.write_text("old\n")

    def full_disk(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluation.EvaluationReport, "csv_rows", full_disk)
    code, _, err = run_eval(capsys, ref, est, "-q", "--csv", target)
    assert code == 1
    assert err.splitlines() == [f"error: cannot write {target}: No space left on device"]
    assert target.read_text() == "old\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_csv_to_stdout_and_quiet(tmp_path, capsys):
    ref, est, _, _ = make_set(tmp_path, tracks=("a",))
    code, out, err = run_eval(capsys, ref, est, "-q", "--csv", "-", "--metrics", "si_sdr")
    assert code == 0 and err == ""
    rows = list(csv.reader(out.splitlines()))
    assert rows[0] == ["scope", "track", "stem", "metric", "value", "tracks"]
    assert {row[3] for row in rows[1:]} == {"si_sdr"} and len(rows) == 1 + 2 + 4


def test_the_table_is_a_result_on_stdout_and_quiet_keeps_it(tmp_path, capsys):
    """`stemsplit eval REF EST > scores.txt` fills the file; -q silences the messages, not
    the results."""
    ref, est, _, _ = make_set(tmp_path, tracks=("a", "b"))
    code, out, err = run_eval(capsys, ref, est)
    assert code == 0, err
    table = out.splitlines()
    assert table[0].split() == ["track", "stem", "sdr", "si_sdr"] and len(table) == 1 + 4 + 4
    assert "scored a (2 stems" in err and "sdr" not in err.replace("si_sdr", "")
    code, quiet_out, quiet_err = run_eval(capsys, ref, est, "-q")
    assert code == 0 and quiet_err == ""
    assert quiet_out == out


def test_the_plain_table_and_the_skipped_lines(capsys):
    """The table as plain text (stdout not a terminal): aligned, never wrapped, a row per
    failed or missing track; the skipped stems grouped by reason and set of stems."""
    from stemsplit.cli.eval import print_results, skipped_lines
    from stemsplit.evaluation import EvaluationReport, StemScore, TrackScore

    long_name = "A Very Long Track Name - " * 8
    def done(name, sdr, skipped):  # noqa: ANN001, ANN202
        return TrackScore(name, "done", stems={"vocals": StemScore("vocals", {"sdr": sdr},
                                                                     "ref", "est", 10)},
                          skipped=skipped, sample_rate=RATE)
    report = EvaluationReport(("sdr",), [
        done(long_name, 1.5, {"drums": "no estimate", "bass": "no estimate"}),
        TrackScore("b", "failed", skipped={"drums": "no estimate", "bass": "no estimate"}),
        TrackScore("c", "missing"),
        done("d", 2.5, {"drums": "no estimate"}),
        done("e", 3.5, {"drums": "no estimate", "bass": "no estimate", "piano": "no reference stem"}),
    ], "REF")
    capsys.readouterr()
    print_results(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["track", "stem", "sdr"]
    assert lines[1].startswith(long_name + "  vocals") and lines[1].endswith(" 1.500")
    assert re.fullmatch(r"b\s+\(failed\)", lines[2]) and re.fullmatch(r"c\s+\(no estimates\)", lines[3])
    assert lines[-2].split() == ["mean", "(3", "tracks)", "vocals", "2.500"]
    assert len({len(line) for line in lines if "vocals" in line}) == 1  # aligned
    assert skipped_lines(report) == ["skipped drums, bass in tracks " + long_name + ", b, e: no estimate",
                                     "skipped drums in track d: no estimate",
                                     "skipped piano in track e: no reference stem"]


def test_the_table_reaches_a_redirected_stdout(tmp_path):
    ref, est, _, _ = make_set(tmp_path, tracks=("a",))
    target = tmp_path / "scores.txt"
    with target.open("w") as file:
        result = subprocess.run([sys.executable, "-m", "stemsplit", "eval", str(ref), str(est)],
                                stdout=file, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = target.read_text().splitlines()
    assert lines[0].split() == ["track", "stem", "sdr", "si_sdr"]
    assert lines[1].split()[:2] == ["a", "vocals"] and lines[-1].startswith("median (1 track)")
    assert "scored a" in result.stderr and "median" not in result.stderr


def test_stems_without_estimates_are_said_once_for_every_track(tmp_path, capsys):
    """A 2-stem model's estimates against 4-stem references: one line for the stems
    skipped, not one per stem and track."""
    for number, track in enumerate(("a", "b", "c")):
        references = synthetic_stems(0.5, RATE, seed=40 + number)
        write_track(tmp_path / "ref" / track, references, RATE, mixture=True)
        write_track(tmp_path / "est" / track, {"vocals": references["vocals"]}, RATE)
    code, out, err = run_eval(capsys, tmp_path / "ref", tmp_path / "est")
    assert code == 0, err
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert skipped == ["skipped drums, bass, other in all 3 tracks: no estimate"]
    assert [line.split()[1] for line in out.splitlines()[1:4]] == ["vocals"] * 3
    code, _, err = run_eval(capsys, tmp_path / "ref", tmp_path / "est", "--track", "b",
                            "--json")
    assert code == 0 and "skipped drums, bass, other in track b: no estimate" in err


@pytest.mark.parametrize("args,message", [
    (["EST", "-n", "htdemucs"], "give ESTIMATES_DIR or -n MODEL, not both"),
    ([], "give ESTIMATES_DIR, or -n MODEL"),
    (["EST", "-o", "x"], "-o: only with -n MODEL"),
    (["EST", "--metrics", "sdr,mos"], "unknown metric 'mos'"),
    (["EST", "--json", "--csv", "-"], "--json and --csv - both write to stdout"),
    (["EST", "--track", "zzz"], "--track zzz: no such reference track"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    ref, est, _, _ = make_set(tmp_path, tracks=("a",))
    code, out, err = run_eval(capsys, ref, *[str(est) if a == "EST" else a for a in args])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err.splitlines()[0], err


def test_eval_help_imports_no_torch():
    code = ("import sys; from stemsplit.cli import main\n"
            "try:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'numpy' not in sys.modules, 'numpy imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "REFERENCE_DIR" in result.stdout and "--metrics" in result.stdout


# -- separating with -n MODEL ----------------------------------------------------------------
def test_eval_with_a_model_equals_scoring_what_separate_writes(tmp_path, capsys, monkeypatch,
                                                               tiny_hf_home):
    import soundfile

    monkeypatch.setenv("HF_HOME", str(tiny_hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STEMSPLIT_MALLOC_TUNING", "0")  # leave this process's allocator be
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    rate = 44100
    write_track(tmp_path / "ref" / "a", synthetic_stems(1.5, rate, seed=30), rate, mixture=True)
    before = sorted(tmp_path.rglob("*"))

    code, out, err = run_eval(capsys, tmp_path / "ref", "-n", "htdemucs", "--json")
    assert code == 0, err
    plain = json.loads(out)
    assert plain["model"] == "htdemucs" and plain["estimates"] is None
    assert sorted(tmp_path.rglob("*")) == before  # no stems written, no temporary left
    assert "scored a (4 stems, 1.5 s of audio" in err
    (scores,) = [track["stems"] for track in plain["tracks"]]
    assert list(scores) == list(STEMS)

    out_dir = tmp_path / "kept"
    code, out, err = run_eval(capsys, tmp_path / "ref", "-n", "htdemucs", "-o", out_dir,
                              "--json")
    assert code == 0, err
    kept = json.loads(out)["tracks"][0]["stems"]
    for stem in STEMS:
        info = soundfile.info(out_dir / "htdemucs" / "a" / f"{stem}.wav")
        assert info.subtype == "FLOAT" and info.frames == int(1.5 * rate)
        assert kept[stem]["estimate"] == str(out_dir / "htdemucs" / "a" / f"{stem}.wav")
    assert not list(out_dir.rglob(".*"))

    # what `stemsplit separate` writes for the same mixture, scored from its folder
    (tmp_path / "mixes").mkdir()
    shutil.copy(tmp_path / "ref" / "a" / "mixture.wav", tmp_path / "mixes" / "a.wav")
    from stemsplit.cli import main
    with pytest.raises(SystemExit) as exited:
        main(["separate", str(tmp_path / "mixes" / "a.wav"), "-o", str(tmp_path / "sep"),
              "--float32", "--clip-mode", "none", "-q"])
    assert exited.value.code == 0
    separated = evaluate_folders(tmp_path / "ref", tmp_path / "sep").tracks[0].stems

    for stem in STEMS:
        for key in ("sdr", "si_sdr"):
            assert math.isclose(kept[stem][key], scores[stem][key], rel_tol=1e-12)
            assert math.isclose(separated[stem].values[key], scores[stem][key], rel_tol=1e-9,
                                abs_tol=1e-9)

    # again with -o: the stems there are scored as they are, not separated again; a
    # reference track without a mixture fails, and the others are still scored
    write_track(tmp_path / "ref" / "b", synthetic_stems(0.5, rate, seed=31), rate)
    code, out, err = run_eval(capsys, tmp_path / "ref", "-n", "htdemucs", "-o", out_dir,
                              "--json")
    assert code == 1, err
    assert "warning: a: stems exist already: scored as found (--force separates again)" in err
    assert "error: b: no mixture file to separate (expected <track>/mixture.wav)" in err
    a, b = json.loads(out)["tracks"]
    assert a["stems"] == kept and b["status"] == "failed"


# -- a restoration model's output: scored against restored.wav, or the mixture when told ---------
def restoration_set(root: Path, with_restored_file: bool):
    """One track: a clean original as mixture.wav (and as restored.wav when asked), and an
    estimate folder holding restored.wav (the clean signal plus a little noise)."""
    rng = np.random.default_rng(3)
    clean = synthetic_stems(1.0, RATE, seed=4, stems=("vocals",))["vocals"]
    estimate = (clean + 0.01 * rng.standard_normal(clean.shape)).astype(np.float32)
    ref = root / "ref" / "song"
    ref.mkdir(parents=True)
    write_audio(ref / "mixture.wav", clean, RATE)
    if with_restored_file:
        write_audio(ref / "restored.wav", clean, RATE)
    est = root / "est" / "song"
    est.mkdir(parents=True)
    write_audio(est / "restored.wav", estimate, RATE)
    return root / "ref", root / "est", read_audio(ref / "mixture.wav"), \
        read_audio(est / "restored.wav")


def test_restored_is_scored_against_restored_wav(tmp_path, capsys):
    ref, est, clean, estimate = restoration_set(tmp_path, with_restored_file=True)
    code, out, err = run_eval(capsys, ref, est, "--json")
    assert code == 0, err
    stem = json.loads(out)["tracks"][0]["stems"]["restored"]
    assert stem["reference"].endswith("restored.wav")
    assert close(stem["sdr"], direct_sdr(clean, estimate))


def test_mixture_as_scores_a_stem_against_the_mixture_and_says_so(tmp_path, capsys):
    ref, est, clean, estimate = restoration_set(tmp_path, with_restored_file=True)
    code, out, err = run_eval(capsys, ref, est, "--mixture-as", "restored", "--json")
    assert code == 0, err
    stem = json.loads(out)["tracks"][0]["stems"]["restored"]
    assert stem["reference"].endswith("mixture.wav")
    assert close(stem["sdr"], direct_sdr(clean, estimate))
    assert "restored against mixture.wav" in err
    assert "skipped" not in err  # restored.wav is not "a reference stem without an estimate"


def test_a_reference_with_only_a_mixture_says_how_to_score_against_it(tmp_path, capsys):
    ref, est, _, _ = restoration_set(tmp_path, with_restored_file=False)
    code, _, err = run_eval(capsys, ref, est)
    assert code == 1
    assert "--mixture-as restored" in err
    code, _, err = run_eval(capsys, ref, est, "--mixture-as", "restored")
    assert code == 0, err
