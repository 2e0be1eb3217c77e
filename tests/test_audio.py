"""stemsplit.audio: probing, streaming decode, and the stem writers.

Every input is generated here (numpy tones and noise, written with soundfile or with
the ffmpeg binary). The writers are checked against demucs' own encoder bit for bit.
"""

from __future__ import annotations

import gc
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemsplit import audio
from stemsplit.audio import ffmpeg as audio_ffmpeg
from stemsplit.audio import probing
from stemsplit.errors import InputError, OutputError, UsageError

REPO = Path(__file__).resolve().parents[1]
SR = 44100
RNG = np.random.default_rng(1234)


# --------------------------------------------------------------------------- helpers


def ffmpeg(*args: str) -> None:
    cmd = [audio.ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)


def tone(frames: int, channels: int = 2, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(frames) / sr
    rows = [amp * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def noise(frames: int, channels: int = 2, scale: float = 0.4) -> np.ndarray:
    return (RNG.standard_normal((channels, frames)) * scale).astype(np.float32)


def wav_chunks(data: bytes) -> dict[str, bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    chunks: dict[str, bytes] = {}
    pos = 12
    while pos + 8 <= len(data):
        name = data[pos:pos + 4].decode("latin-1")
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        chunks.setdefault(name, data[pos + 8:pos + 8 + size])
        pos += 8 + size + (size & 1)
    return chunks


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def write_all(writer: audio.StemWriter, x: np.ndarray, block: int = 10_000) -> None:
    for start in range(0, x.shape[1], block):
        writer.write(x[:, start:start + block])


def demucs_wav(tmp_path: Path, x: np.ndarray, clip: str, bits: int, as_float: bool) -> bytes:
    torch = pytest.importorskip("torch")
    demucs_audio = pytest.importorskip("demucs.audio")
    out = tmp_path / "demucs_ref.wav"
    demucs_audio.save_audio(
        torch.from_numpy(x.copy()), out, SR, clip=clip, bits_per_sample=bits, as_float=as_float
    )
    data = out.read_bytes()
    out.unlink()
    return data


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    m: dict[str, Path] = {}

    def add(name: str) -> Path:
        m[name] = d / name
        return m[name]

    stereo = noise(SR + 123)
    sf.write(add("stereo16.wav"), stereo.T, SR, subtype="PCM_16")
    sf.write(add("mono16.wav"), noise(20_000, 1)[0], SR, subtype="PCM_16")
    sf.write(add("pcm24.wav"), stereo.T, SR, subtype="PCM_24")
    sf.write(add("u8.wav"), stereo.T, SR, subtype="PCM_U8")
    sf.write(add("float.wav"), stereo.T, SR, subtype="FLOAT")
    sf.write(add("48k.wav"), noise(48_000 + 7).T, 48_000, subtype="PCM_16")
    sf.write(add("-dash.wav"), noise(5000).T, SR, subtype="PCM_16")
    bad = noise(4000)
    bad[0, 10] = np.nan
    bad[1, 20] = np.inf
    bad[0, 30] = -np.inf
    sf.write(add("nonfinite.wav"), bad.T, SR, subtype="FLOAT")
    sf.write(add("long.wav"), noise(10 * SR).T, SR, subtype="PCM_16")

    sine = "sine=frequency=440:duration=1:sample_rate=44100"
    ffmpeg("-f", "lavfi", "-i", sine, "-ac", "2", "-c:a", "libmp3lame", "-b:a", "192k",
           str(add("tone.mp3")))
    ffmpeg("-f", "lavfi", "-i", sine, "-ac", "2", "-c:a", "aac", str(add("tone.m4a")))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1:sample_rate=48000", "-ac", "2",
           "-c:a", "libopus", str(add("tone.opus")))
    ffmpeg("-f", "lavfi", "-i", sine, "-ac", "2", "-c:a", "libvorbis", str(add("tone.ogg")))
    sf.write(add("surround51.flac"), tone(SR, 6, amp=0.3).T, SR, subtype="PCM_16")
    sf.write(add("48k_tone.wav"), tone(48_000 + 7, sr=48_000).T, 48_000, subtype="PCM_16")
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=10",
           "-f", "lavfi", "-i", sine, "-c:v", "libx264", "-c:a", "aac", "-shortest",
           str(add("video.mp4")))
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=10", "-c:v", "libx264",
           str(add("silent_video.mp4")))

    add("empty.wav").write_bytes(b"")
    add("text.mp3").write_text("this is not audio\n" * 20)
    add("folder.wav").mkdir()
    add("truncated.m4a").write_bytes(m["tone.m4a"].read_bytes()[:400])
    add("truncated.wav").write_bytes(m["stereo16.wav"].read_bytes()[:30])
    m["missing.wav"] = d / "missing.wav"
    return m


# --------------------------------------------------------------------------- basics


def test_ffmpeg_path_is_executable():
    path = audio.ffmpeg_path()
    assert os.path.isfile(path) and os.access(path, os.X_OK)
    assert audio.ffmpeg_path() is path  # cached


def test_audio_extensions():
    for ext in (".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif",
                ".wma", ".mp4", ".mkv", ".mov", ".webm", ".avi"):
        assert ext in audio.AUDIO_EXTENSIONS
    assert audio.is_audio_path("Song.MP3")
    assert not audio.is_audio_path("notes.txt")


def test_module_does_not_import_torch():
    code = ("import sys, stemsplit.audio.decoding, stemsplit.audio.resample, "
            "stemsplit.audio.write; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.strip() == "False"


def test_channel_layouts():
    cases = {"mono": 1, "stereo": 2, "5.1": 6, "5.1(side)": 6, "7.1": 8, "2.1": 3,
             "quad": 4, "7.1.4": 12, "6 channels": 6, "FL+FR+LFE": 3, "hexagonal": 6}
    for text, n in cases.items():
        assert probing._channels_from_layout(text) == n, text
    assert probing._channels_from_layout("something odd") is None


def test_ffmpeg_reason_picks_meaningful_line():
    lines = [
        "[in#0 @ 0x1] Format mp3 detected only with low score of 1, misdetection possible!",
        "[in#0 @ 0x1] Failed to find two consecutive MPEG audio frames.",
        "[in#0 @ 0x2] Error opening input: Invalid data found when processing input",
        "Error opening input file file:/x/t.mp3.",
        "Error opening input files: Invalid data found when processing input",
    ]
    assert audio_ffmpeg._ffmpeg_reason(lines) == (
        "Invalid data found when processing input: "
        "Failed to find two consecutive MPEG audio frames"
    )
    assert audio_ffmpeg._ffmpeg_reason(["", "Conversion failed!"]) == (
        "ffmpeg failed without a message"
    )
    assert audio_ffmpeg._ffmpeg_reason(["[aost#0:0 @ 0x3] No space left on device"]) == (
        "No space left on device"
    )


def test_ffprobe_json_parsing(tmp_path):
    data = {
        "streams": [
            {"codec_type": "video", "codec_name": "h264"},
            {"codec_type": "audio", "codec_name": "aac", "sample_rate": "48000",
             "channels": 6, "duration": "3.5"},
        ],
        "format": {"duration": "3.52"},
    }
    info = probing._info_from_ffprobe_json(tmp_path / "x.mp4", json.loads(json.dumps(data)))
    assert info == audio.AudioInfo(48000, 6, 3.52, "aac")
    with pytest.raises(InputError, match="no audio stream"):
        probing._info_from_ffprobe_json(tmp_path / "v.mp4", {"streams": data["streams"][:1]})


# --------------------------------------------------------------------------- probe


@pytest.mark.parametrize(
    "name, rate, channels, codec",
    [
        ("stereo16.wav", SR, 2, "pcm_s16le"),
        ("mono16.wav", SR, 1, "pcm_s16le"),
        ("pcm24.wav", SR, 2, "pcm_s24le"),
        ("u8.wav", SR, 2, "pcm_u8"),
        ("float.wav", SR, 2, "pcm_f32le"),
        ("48k.wav", 48000, 2, "pcm_s16le"),
        ("tone.mp3", SR, 2, "mp3"),
        ("tone.m4a", SR, 2, "aac"),
        ("tone.opus", 48000, 2, "opus"),
        ("tone.ogg", SR, 2, "vorbis"),
        ("surround51.flac", SR, 6, "flac"),
        ("video.mp4", SR, 1, "aac"),
        ("-dash.wav", SR, 2, "pcm_s16le"),
    ],
)
def test_probe(media, name, rate, channels, codec):
    info = audio.probe(media[name])
    assert (info.sample_rate, info.channels, info.codec) == (rate, channels, codec)
    assert info.duration_seconds is not None and info.duration_seconds > 0


def test_probe_without_ffprobe_matches(media, monkeypatch):
    """Both probing paths agree (only meaningful where ffprobe is installed)."""
    if audio.ffprobe_path() is None:
        pytest.skip("no ffprobe on PATH: the ffmpeg -i path is the one tested above")
    for name in ("stereo16.wav", "tone.m4a", "surround51.flac", "video.mp4"):
        with_probe = audio.probe(media[name])
        monkeypatch.setattr(probing, "ffprobe_path", lambda: None)
        without = audio.probe(media[name])
        monkeypatch.undo()
        assert (with_probe.sample_rate, with_probe.channels) == (without.sample_rate,
                                                                 without.channels)


def test_probe_through_ffprobe(media, tmp_path, monkeypatch):
    """The ffprobe path: argv (file: URL, JSON flags), parsing, and failures. A stand-in
    script plays ffprobe so this runs where no ffprobe is installed."""
    log = tmp_path / "argv.txt"
    fake = tmp_path / "ffprobe"
    answer = {"streams": [{"codec_type": "audio", "codec_name": "mp3", "sample_rate": "32000",
                           "channels": 1}], "format": {}}
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        open({str(log)!r}, "w").write("\\n".join(sys.argv[1:]))
        if sys.argv[-1].endswith("bad.mp3"):
            sys.stderr.write("file:/x/bad.mp3: Invalid data found when processing input\\n")
            sys.exit(1)
        print({json.dumps(answer)!r})
        """))
    fake.chmod(0o755)
    monkeypatch.setattr(probing, "ffprobe_path", lambda: str(fake))
    info = audio.probe(media["-dash.wav"])
    assert info == audio.AudioInfo(32000, 1, None, "mp3")
    argv = log.read_text().splitlines()
    assert argv[-1] == "file:" + str(media["-dash.wav"].resolve())
    assert "-show_streams" in argv and "json" in argv
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"junk")
    with pytest.raises(InputError, match="Invalid data found") as err:
        audio.probe(bad)
    assert str(bad) in str(err.value)


BAD_INPUTS = [
    ("missing.wav", "no such file"),
    ("folder.wav", "directory"),
    ("empty.wav", "empty"),
    ("text.mp3", "not a readable audio file"),
    ("truncated.m4a", "not a readable audio file"),
    ("truncated.wav", "not a readable audio file"),
    ("silent_video.mp4", "no audio stream"),
]


FFMPEG_DECIDES = {"text.mp3", "truncated.m4a"}
"""Inputs whose reason is ffmpeg's own words, which differ between builds."""


def assert_carries_ffmpeg_reason(message: str, path: Path) -> None:
    """The message ends with "(reason)", and every part of that reason is in what this
    ffmpeg build itself prints for the file (whatever its wording)."""
    assert message.endswith(")") and "(" in message, message
    reason = message[message.index("(") + 1:-1]
    assert reason and "without a message" not in reason, message
    said = subprocess.run([audio.ffmpeg_path(), "-nostdin", "-hide_banner", "-i", f"file:{path}",
                           "-f", "null", "-"], capture_output=True, text=True).stderr
    for part in reason.split(": "):
        assert part.rstrip(".") in said, (part, said)


@pytest.mark.parametrize("name, reason", BAD_INPUTS)
def test_probe_errors(media, name, reason):
    with pytest.raises(InputError) as err:
        audio.probe(media[name])
    assert str(media[name]) in str(err.value)
    assert reason in str(err.value)
    if name in FFMPEG_DECIDES:
        assert_carries_ffmpeg_reason(str(err.value), media[name])


@pytest.mark.parametrize("name, reason", BAD_INPUTS)
def test_decode_errors(media, name, reason):
    with pytest.raises(InputError) as err:
        audio.decode(media[name], SR)
    assert str(media[name]) in str(err.value)
    assert reason in str(err.value)
    if name in FFMPEG_DECIDES:
        assert_carries_ffmpeg_reason(str(err.value), media[name])


def test_decode_error_with_info_skips_probe(media):
    """Even when the caller's AudioInfo hides the problem, ffmpeg's reason comes through."""
    info = audio.AudioInfo(SR, 2, 1.0, "mp3")
    with pytest.raises(InputError, match="cannot decode audio") as err:
        audio.decode_blocks(media["silent_video.mp4"], SR, info=info).__next__()
    assert "no audio stream" in str(err.value)
    with pytest.raises(InputError, match="cannot decode audio") as err:
        list(audio.decode_blocks(media["text.mp3"], SR, info=info))
    assert_carries_ffmpeg_reason(str(err.value), media["text.mp3"])


# --------------------------------------------------------------------------- decode


def test_decode_wav_exact(media):
    ref, _ = sf.read(media["stereo16.wav"], dtype="float32")
    x = audio.decode(media["stereo16.wav"], SR)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert x.shape == (2, SR + 123)
    np.testing.assert_array_equal(x, ref.T)


@pytest.mark.parametrize("name", ["pcm24.wav", "float.wav", "u8.wav", "-dash.wav"])
def test_decode_other_wavs_exact(media, name):
    ref, _ = sf.read(media[name], dtype="float32")
    x = audio.decode(media[name], SR)
    np.testing.assert_array_equal(x, ref.T)


def test_decode_mono_is_duplicated(media):
    ref, _ = sf.read(media["mono16.wav"], dtype="float32")
    x = audio.decode(media["mono16.wav"], SR)
    assert x.shape == (2, 20_000)
    np.testing.assert_array_equal(x[0], ref)
    np.testing.assert_array_equal(x[1], ref)
    mono = audio.decode(media["mono16.wav"], SR, channels=1)
    assert mono.shape == (1, 20_000)
    np.testing.assert_array_equal(mono[0], ref)


def test_decode_surround_is_downmixed(media):
    x = audio.decode(media["surround51.flac"], SR)
    assert x.shape == (2, SR)
    assert np.abs(x).max() > 0.1


def test_decode_resamples(media):
    x = audio.decode(media["48k.wav"], SR)
    assert x.shape[0] == 2
    assert abs(x.shape[1] - round((48_000 + 7) * SR / 48_000)) <= 1


@pytest.mark.parametrize(
    "name, rate", [("tone.mp3", SR), ("tone.m4a", SR), ("tone.opus", SR), ("tone.ogg", SR),
                   ("video.mp4", SR), ("tone.mp3", 48_000)]
)
def test_decode_lossy(media, name, rate):
    x = audio.decode(media[name], rate)
    assert x.dtype == np.float32 and x.shape[0] == 2
    assert abs(x.shape[1] - rate) <= 2048  # codec priming/padding
    rms = float(np.sqrt(np.mean(x[:, 4096:-4096] ** 2)))
    assert 0.05 < rms < 0.5


def test_decode_blocks_bounded(media):
    total = 10 * SR
    with audio.decode_blocks(media["long.wav"], SR, block_frames=50_000) as dec:
        sizes = [block.shape for block in dec]
        assert dec.frames == total
        assert dec.nonfinite_samples == 0
        assert dec.info is not None and dec.info.sample_rate == SR
    assert all(s[0] == 2 and s[1] == 50_000 for s in sizes[:-1])
    assert sum(s[1] for s in sizes) == total
    assert len(sizes) == -(-total // 50_000)


def test_decode_nonfinite_replaced(media):
    with audio.decode_blocks(media["nonfinite.wav"], SR) as dec:
        x = np.concatenate(list(dec), axis=1)
        assert dec.nonfinite_samples == 3
    assert np.isfinite(x).all()
    assert x[0, 10] == 0 and x[1, 20] == 0 and x[0, 30] == 0
    ref, _ = sf.read(media["nonfinite.wav"], dtype="float32")
    ref = np.where(np.isfinite(ref), ref, 0).T
    np.testing.assert_array_equal(x, ref)


def _gone(proc: subprocess.Popen) -> bool:
    return proc.poll() is not None


def test_decoder_close_kills_ffmpeg(media):
    dec = audio.decode_blocks(media["long.wav"], SR, block_frames=1024)
    next(dec)
    proc = dec.process
    assert proc is not None and proc.poll() is None  # blocked on the full pipe
    dec.close()
    assert _gone(proc)
    with pytest.raises(StopIteration):
        next(dec)


def test_decoder_dropped_kills_ffmpeg(media):
    dec = audio.decode_blocks(media["long.wav"], SR, block_frames=1024)
    for _ in dec:
        break
    proc = dec.process
    assert proc is not None and proc.poll() is None
    del dec
    gc.collect()
    assert _gone(proc)


def test_decoder_not_started_until_iterated(media):
    dec = audio.decode_blocks(media["long.wav"], SR)
    assert dec.process is None
    dec.close()
    assert dec.process is None


# --------------------------------------------------------------------------- writers: exactness


@pytest.mark.parametrize("clip", ["rescale", "clamp", "none"])
@pytest.mark.parametrize("bits, as_float", [(16, False), (24, False), (32, True)])
def test_wav_matches_demucs_bytes(tmp_path, clip, bits, as_float):
    x = noise(30_011, scale=0.6)  # peaks well above 1
    x[0, 5] = 3.0
    out = tmp_path / "stem.wav"
    with audio.open_stem_writer(out, sample_rate=SR, bits=16 if as_float else bits,
                                float32=as_float, clip_mode=clip) as w:
        write_all(w, x, block=4096)
    ours = wav_chunks(out.read_bytes())
    ref = wav_chunks(demucs_wav(tmp_path, x, clip, bits if not as_float else 16, as_float))
    assert ours["fmt "] == ref["fmt "]
    assert ours["data"] == ref["data"]
    assert leftovers(tmp_path) == ["stem.wav"]


def test_rescale_below_threshold_is_identity(tmp_path):
    x = noise(10_000, scale=0.1)
    x /= np.abs(x).max() * np.float32(1.5)
    out = tmp_path / "quiet.wav"
    with audio.open_stem_writer(out, sample_rate=SR, float32=True) as w:
        w.write(x)
    y, _ = sf.read(out, dtype="float32")
    np.testing.assert_array_equal(y.T, x)


def test_rescale_and_clamp_match_prevent_clip(tmp_path):
    torch = pytest.importorskip("torch")
    demucs_audio = pytest.importorskip("demucs.audio")
    x = noise(20_000, scale=0.8)
    for mode in ("rescale", "clamp", "none"):
        out = tmp_path / f"{mode}.wav"
        with audio.open_stem_writer(out, sample_rate=SR, float32=True, clip_mode=mode) as w:
            write_all(w, x, block=3000)
        y, _ = sf.read(out, dtype="float32")
        ref = demucs_audio.prevent_clip(torch.from_numpy(x.copy()), mode).clamp(-1, 1).numpy()
        np.testing.assert_array_equal(y.T, ref)
    y, _ = sf.read(tmp_path / "rescale.wav", dtype="float32")
    assert np.abs(y).max() < 1.0
    y, _ = sf.read(tmp_path / "clamp.wav", dtype="float32")
    assert np.abs(y).max() == np.float32(0.99)


def test_tanh_close_to_demucs(tmp_path):
    torch = pytest.importorskip("torch")
    demucs_audio = pytest.importorskip("demucs.audio")
    x = noise(20_000, scale=0.8)
    out = tmp_path / "tanh.wav"
    with audio.open_stem_writer(out, sample_rate=SR, clip_mode="tanh") as w:
        w.write(x)
    y, _ = sf.read(out, dtype="int16")
    ref = demucs_audio.prevent_clip(torch.from_numpy(x.copy()), "tanh").numpy()
    ref16 = (np.clip(ref, -1, 1) * 32767).astype(np.int16)
    assert np.abs(y.T.astype(np.int32) - ref16).max() <= 1


@pytest.mark.parametrize("bits", [16, 24])
@pytest.mark.parametrize("clip", ["rescale", "clamp"])
def test_flac_exact(tmp_path, bits, clip):
    x = noise(25_000, scale=0.6)
    out = tmp_path / "stem.flac"
    with audio.open_stem_writer(out, sample_rate=SR, bits=bits, clip_mode=clip) as w:
        write_all(w, x)
    info = sf.info(out)
    assert (info.format, info.subtype, info.samplerate, info.frames) == (
        "FLAC", f"PCM_{bits}", SR, 25_000)
    if clip == "rescale":
        peak = np.float32(1.01) * np.abs(x).max()
        y = x / peak if peak >= 1 else x
    else:
        y = np.clip(x, np.float32(-0.99), np.float32(0.99))
    y = np.clip(y, -1, 1)
    expected = ((y * 32767).astype(np.int16).astype(np.int32) << 16 if bits == 16
                else (y * 8388607).astype(np.int32) << 8)
    got, _ = sf.read(out, dtype="int32")
    np.testing.assert_array_equal(got.T, expected)
    assert audio.probe(out).codec == "flac"


# --------------------------------------------------------------------------- writers: formats


def test_mp3_round_trip(tmp_path):
    x = tone(SR + 1000)
    out = tmp_path / "stem.mp3"
    with audio.open_stem_writer(out, sample_rate=SR, clip_mode="none", mp3_bitrate=192) as w:
        write_all(w, x)
    assert leftovers(tmp_path) == ["stem.mp3"]
    info = audio.probe(out)
    assert (info.codec, info.sample_rate, info.channels) == ("mp3", SR, 2)
    y = audio.decode(out, SR)
    assert abs(y.shape[1] - x.shape[1]) <= 1152  # exact where the LAME header is honoured
    if y.shape[1] == x.shape[1]:
        err = y[:, 2000:-2000] - x[:, 2000:-2000]
        assert np.sqrt(np.mean(err ** 2)) < 0.02


def test_mp3_unsupported_rate_is_raised(tmp_path):
    out = tmp_path / "hi.mp3"
    with audio.open_stem_writer(out, sample_rate=SR, output_sample_rate=96_000) as w:
        w.write(tone(SR))
    assert w.output_sample_rate == 48_000
    assert audio.probe(out).sample_rate == 48_000


@pytest.mark.parametrize(
    "fmt, bits, float32, subtype",
    [("wav", 16, False, "PCM_16"), ("wav", 24, False, "PCM_24"), ("wav", 16, True, "FLOAT"),
     ("flac", 16, False, "PCM_16"), ("flac", 24, False, "PCM_24")],
)
def test_resampled_outputs(tmp_path, fmt, bits, float32, subtype):
    frames = SR + 101
    x = tone(frames)
    out = tmp_path / f"stem.{fmt}"
    with audio.open_stem_writer(out, sample_rate=SR, output_sample_rate=48_000, bits=bits,
                                float32=float32) as w:
        write_all(w, x)
    info = sf.info(out)
    assert (info.samplerate, info.subtype, info.channels) == (48_000, subtype, 2)
    assert info.frames == round(frames * 48_000 / SR)
    assert leftovers(tmp_path) == [out.name]
    y, _ = sf.read(out, dtype="float32")
    assert abs(np.sqrt(np.mean(y ** 2)) - np.sqrt(np.mean(x ** 2))) < 0.01


def test_resampled_exact_length_round_trip(media, tmp_path):
    """48 kHz input -> model rate -> back to 48 kHz with the input's own length."""
    src = media["48k_tone.wav"]
    frames_in = sf.info(src).frames
    x = audio.decode(src, SR)
    for fmt in ("wav", "mp3"):
        out = tmp_path / f"back.{fmt}"
        with audio.open_stem_writer(out, sample_rate=SR, output_sample_rate=48_000,
                                    output_frames=frames_in, clip_mode="none") as w:
            write_all(w, x)
        y = audio.decode(out, 48_000)
        if fmt == "wav":
            assert y.shape[1] == frames_in
            ref, _ = sf.read(src, dtype="float32")
            core = slice(1000, -1000)
            assert np.sqrt(np.mean((y.T[core] - ref[core]) ** 2)) < 0.01
        else:
            assert abs(y.shape[1] - frames_in) <= 1152


def test_mono_writer_and_1d_blocks(tmp_path):
    out = tmp_path / "mono.wav"
    x = noise(5000, 1, scale=0.2)
    with audio.open_stem_writer(out, sample_rate=SR, channels=1, clip_mode="none") as w:
        w.write(x[0])
    y, _ = sf.read(out, dtype="int16")
    np.testing.assert_array_equal(y, (np.clip(x[0], -1, 1) * 32767).astype(np.int16))


def test_writer_replaces_nonfinite(tmp_path):
    x = noise(3000, scale=0.2)
    x[0, 1] = np.nan
    x[1, 2] = -np.inf
    original = x.copy()
    out = tmp_path / "nf.wav"
    with audio.open_stem_writer(out, sample_rate=SR, float32=True) as w:
        w.write(x)
    assert w.nonfinite_samples == 2
    np.testing.assert_array_equal(x, original)  # the caller's block is not modified
    y, _ = sf.read(out, dtype="float32")
    assert np.isfinite(y).all() and y[1, 0] == 0 and y[2, 1] == 0


def test_stream_target_matches_file(tmp_path):
    x = noise(12_345, scale=0.7)
    out = tmp_path / "file.wav"
    with audio.open_stem_writer(out, sample_rate=SR, bits=24) as w:
        write_all(w, x)
    buf = io.BytesIO()
    w = audio.open_stem_writer(buf, sample_rate=SR, bits=24)
    write_all(w, x)
    assert w.commit() is None
    assert buf.getvalue() == out.read_bytes()
    flac = io.BytesIO()
    with audio.open_stem_writer(flac, sample_rate=SR, format="flac") as w:
        w.write(x)
    assert sf.info(io.BytesIO(flac.getvalue())).frames == 12_345


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stream_target_disk_full():
    with open("/dev/full", "wb") as full:
        w = audio.open_stem_writer(full, sample_rate=SR)
        w.write(noise(50_000))
        with pytest.raises(OutputError, match="cannot write /dev/full: no space left on device"):
            w.commit()


def test_writer_block_shape_and_options(tmp_path):
    with audio.open_stem_writer(tmp_path / "a.wav", sample_rate=SR) as w:
        with pytest.raises(ValueError):
            w.write(np.zeros((3, 10), np.float32))
        w.write(np.zeros((2, 0), np.float32))
    assert sf.info(tmp_path / "a.wav").frames == 0
    with pytest.raises(UsageError):
        audio.open_stem_writer(tmp_path / "b.flac", sample_rate=SR, float32=True)
    with pytest.raises(UsageError):
        audio.open_stem_writer(tmp_path / "b.wav", sample_rate=SR, bits=12)
    with pytest.raises(UsageError):
        audio.open_stem_writer(tmp_path / "b.wav", sample_rate=SR, clip_mode="soft")
    with pytest.raises(UsageError):
        audio.open_stem_writer(tmp_path / "b.ogg", sample_rate=SR, format="ogg")
    assert leftovers(tmp_path) == ["a.wav"]


# --------------------------------------------------------------------------- writers: atomicity


@pytest.mark.parametrize("fmt, clip", [("wav", "rescale"), ("wav", "clamp"), ("mp3", "none")])
def test_abort_leaves_nothing(tmp_path, fmt, clip):
    out = tmp_path / f"stem.{fmt}"
    w = audio.open_stem_writer(out, sample_rate=SR, format=fmt, clip_mode=clip)
    w.write(noise(10_000))
    hidden = leftovers(tmp_path)
    assert hidden and all(name.startswith(f".stem.{fmt}.") for name in hidden)
    assert any(name.endswith(".part") for name in hidden)
    w.abort()
    assert leftovers(tmp_path) == []
    w.abort()  # idempotent
    with pytest.raises(ValueError):
        w.write(noise(10))


def test_exception_in_with_block_keeps_old_file(tmp_path):
    out = tmp_path / "stem.wav"
    out.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        with audio.open_stem_writer(out, sample_rate=SR) as w:
            w.write(noise(1000))
            raise KeyboardInterrupt
    assert out.read_bytes() == b"previous"
    assert leftovers(tmp_path) == ["stem.wav"]


def test_uncommitted_writer_is_cleaned_up_when_dropped(tmp_path):
    w = audio.open_stem_writer(tmp_path / "x.flac", sample_rate=SR, clip_mode="clamp")
    w.write(noise(1000))
    del w
    gc.collect()
    assert leftovers(tmp_path) == []


def test_commit_replaces_atomically(tmp_path):
    out = tmp_path / "stem.wav"
    out.write_bytes(b"previous")
    w = audio.open_stem_writer(out, sample_rate=SR)
    w.write(noise(1000))
    assert out.read_bytes() == b"previous"  # nothing visible before commit
    assert w.commit() == out
    assert sf.info(out).frames == 1000
    assert leftovers(tmp_path) == ["stem.wav"]
    with pytest.raises(OutputError, match="already exists"):
        audio.open_stem_writer(out, sample_rate=SR, overwrite=False)


def test_missing_output_folder(tmp_path):
    target = tmp_path / "nope" / "stem.wav"
    with pytest.raises(OutputError) as err:
        audio.open_stem_writer(target, sample_rate=SR)
    assert str(target) in str(err.value) and "does not exist" in str(err.value)
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(getattr(os, "geteuid", lambda: 1)() == 0,
                    reason="root ignores folder permissions")
def test_unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            audio.open_stem_writer(folder / "stem.wav", sample_rate=SR)
        assert leftovers(folder) == []
    finally:
        folder.chmod(0o755)


FSIZE_SCRIPT = textwrap.dedent(
    """
    import os, resource, sys
    import numpy as np
    from stemsplit import audio
    from stemsplit.errors import OutputError
    fmt, clip, rate = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    x = (np.random.default_rng(0).standard_normal((2, 44100)) * 0.3).astype(np.float32)
    try:
        with audio.open_stem_writer("stem." + fmt, sample_rate=44100,
                                    output_sample_rate=rate or None, clip_mode=clip) as w:
            for _ in range(5):
                w.write(x)
    except OutputError as exc:
        print("OutputError:", exc)
    else:
        print("no error")
    print(sorted(os.listdir(".")))
    """
)


@pytest.mark.parametrize(
    "fmt, clip, rate",
    [
        ("wav", "clamp", 0),      # soundfile, written as it comes
        ("flac", "none", 0),      # soundfile FLAC
        ("wav", "rescale", 0),    # the float32 spool fails first
        ("mp3", "none", 0),       # ffmpeg encoder, killed by SIGXFSZ
        ("wav", "none", 48000),   # resampled through ffmpeg
    ],
)
def test_file_size_limit_leaves_no_file(tmp_path, fmt, clip, rate):
    res = subprocess.run(
        [sys.executable, "-c", FSIZE_SCRIPT, fmt, clip, str(rate)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 0, res.stderr
    first, listing = res.stdout.strip().splitlines()
    assert first.startswith(f"OutputError: cannot write stem.{fmt}: ")
    assert "file size limit exceeded" in first
    assert listing == "[]"
    assert res.stderr == ""
