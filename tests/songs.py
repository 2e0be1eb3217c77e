"""Small synthetic songs with their true stems, for judging separation quality.

``song(seed)`` makes a short piece of pop-like music with numpy and scipy alone and returns its
four stems (vocals, drums, bass, other) apart, so that a separation model's estimates can be
scored against exact references with a global SDR (for instance a pretrained
vocals/accompaniment model at fp32 against the same model at bf16). The songs are meant to look
like music to a separation network -- a sung line with vowel formants, vibrato, consonants and
breaths over a drum kit, a bass line and chords -- not to please a listener: they are no
listening test, and nothing is mixed or mastered with care beyond pop-like stem levels.

Each song is fixed by its seed: tempo (80-140 BPM), key and mode, chord progression, melody,
the singer's register, vowels and vibrato, the instruments' timbres and patterns and the
panning all come from ``numpy.random.default_rng`` generators seeded with it (one generator
per part, so that a change to one part's synthesis leaves the others as they were) -- except
the kinds of chord and bass instrument, which cycle with the seed so that any six consecutive
seeds hold every pairing (and any three every chord instrument).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import signal

STEMS = ("vocals", "drums", "bass", "other")

MIX_PEAK = 0.85
"""Peak of the mixture after the final gain."""
STEM_LEVELS = {"vocals": 1.0, "drums": 0.72, "bass": 0.62, "other": 0.55}
"""Relative RMS of the stems over the whole song (each then moved by up to LEVEL_SPREAD_DB):
the voice a little above each instrument and about level with the band, as in a pop mix."""
LEVEL_SPREAD_DB = 1.5
FADE_IN_SECONDS = 0.005
FADE_OUT_SECONDS = 0.05

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = {  # chord roots as scale degrees (0 = tonic), one chord a bar
    "major": ((0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (0, 3, 4, 3), (3, 0, 4, 5),
              (0, 3, 5, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 6, 2), (0, 6, 5, 6), (0, 5, 3, 4), (0, 2, 6, 3)),
}

# Singing.
CONTROL_HOP = 256
"""Samples per control block: pitch and formants are set once a block (5.8 ms at 44.1 kHz)."""
VOICE_LOW_MIDI, VOICE_HIGH_MIDI = 45, 69  # 110 Hz to 440 Hz
VOWEL_FORMANTS_HZ = {
    # F1-F3 of adult male vowels (Peterson & Barney 1952): /a/ "father", /e/ "bet",
    # /i/ "beet", /o/ "bought", /u/ "boot"; F4 and F5 typical values. Scaled per singer.
    "a": (730.0, 1090.0, 2440.0, 3400.0, 4200.0),
    "e": (530.0, 1840.0, 2480.0, 3450.0, 4250.0),
    "i": (270.0, 2290.0, 3010.0, 3500.0, 4300.0),
    "o": (570.0, 840.0, 2410.0, 3350.0, 4150.0),
    "u": (300.0, 870.0, 2240.0, 3300.0, 4100.0),
}
VOWELS = tuple(VOWEL_FORMANTS_HZ)
VOWEL_WEIGHTS = (0.3, 0.2, 0.2, 0.2, 0.1)
FORMANT_BANDWIDTHS_HZ = (80.0, 90.0, 120.0, 160.0, 200.0)
NOTE_BEATS = (0.5, 1.0, 1.5, 2.0)
NOTE_BEAT_WEIGHTS = (0.35, 0.35, 0.15, 0.15)
MELODY_STEPS = (-3, -2, -1, 0, 1, 2, 3, 4)  # in scale degrees
MELODY_STEP_WEIGHTS = (0.04, 0.14, 0.3, 0.08, 0.3, 0.1, 0.03, 0.01)


@dataclass(frozen=True)
class Noise:
    """A band of noise with an envelope: a consonant, a breath."""

    band_hz: tuple[float, float]
    seconds: float
    attack_seconds: float
    decay_seconds: float | None  # None: held, then released as it rose
    level: float  # envelope peak times unit-RMS noise, relative to the vowels' RMS


CONSONANTS = {
    "s": Noise((4500.0, 11000.0), 0.10, 0.03, None, 0.35),
    "t": Noise((2500.0, 9000.0), 0.035, 0.001, 0.008, 0.6),
    "k": Noise((1300.0, 4000.0), 0.04, 0.001, 0.012, 0.5),
    "h": Noise((600.0, 5000.0), 0.07, 0.02, None, 0.15),
}
CONSONANT_WEIGHTS = (0.3, 0.3, 0.2, 0.2)
BREATH = Noise((700.0, 4500.0), 0.3, 0.12, None, 0.06)

# Band.
KICK_PATTERNS = ((0, 8), (0, 8, 10), (0, 6, 8), (0, 3, 8, 11), (0, 10), (0, 7, 8))  # 16ths
BASS_PATTERNS = (  # (16th step, length in 16ths, interval above the root in semitones)
    tuple((step, 2, 0) for step in range(0, 16, 2)),
    ((0, 4, 0), (4, 4, 0), (8, 4, 7), (12, 4, 12)),
    ((0, 6, 0), (6, 2, 0), (8, 4, 0), (12, 2, 7), (14, 2, 12)),
    ((0, 3, 0), (3, 3, 0), (6, 4, 7), (10, 2, 0), (12, 4, 0)),
    ((0, 8, 0), (8, 6, 0), (14, 2, 7)),
)
BASS_LOW_MIDI, BASS_HIGH_MIDI = 28, 45  # 41 Hz to 110 Hz
CHORD_LOW_MIDI, CHORD_HIGH_MIDI = 52, 76
CHORD_TIMBRES = ("organ", "pad", "piano")
BASS_TIMBRES = ("fm", "saw")
CHORD_RHYTHMS = {  # (16th step, length in 16ths) per bar
    "pad": (((0, 16),),),
    "organ": (((0, 16),), ((0, 8), (8, 8)), ((0, 6), (6, 10))),
    "piano": (((0, 4), (4, 4), (8, 4), (12, 4)), ((0, 3), (3, 3), (6, 2), (8, 3), (11, 3), (14, 2)),
              ((2, 2), (6, 2), (10, 2), (14, 2)), ((0, 8), (8, 8))),
}
ORGAN_HARMONICS = (1.0, 0.8, 0.45, 0.3, 0.0, 0.18, 0.0, 0.12)


@dataclass(frozen=True)
class Plan:
    """The score all parts follow: timing, key and the chord of each bar."""

    rate: int
    frames: int
    beat_seconds: float
    tonic_midi: int
    scale: tuple[int, ...]
    progression: tuple[int, ...]
    chord_timbre: str  # one of CHORD_TIMBRES
    bass_timbre: str  # one of BASS_TIMBRES

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    @property
    def bar_seconds(self) -> float:
        return 4 * self.beat_seconds

    @property
    def step_seconds(self) -> float:
        """A sixteenth note."""
        return self.beat_seconds / 4

    @property
    def bars(self) -> int:
        return max(1, math.ceil(self.seconds / self.bar_seconds))

    def chord_root(self, bar: int) -> int:
        """Scale index of the root of the chord of ``bar``."""
        return self.progression[bar % len(self.progression)]

    def midi(self, index: int) -> int:
        """MIDI note of a scale index (0 is the tonic, 7 the tonic an octave up)."""
        octave, degree = divmod(index, 7)
        return self.tonic_midi + 12 * octave + self.scale[degree]

    def frame(self, seconds: float) -> int:
        return int(round(seconds * self.rate))


@dataclass(frozen=True)
class Note:
    """A note of an instrument: sounding from start to stop."""

    start_seconds: float
    stop_seconds: float
    midi: float
    velocity: float


@dataclass(frozen=True)
class SungNote(Note):
    """A sung syllable: an optional consonant, a vowel, maybe gliding to a second vowel."""

    vowel: str = "a"
    end_vowel: str | None = None
    consonant: str | None = None
    phrase_start: bool = False


@dataclass(frozen=True)
class Singer:
    """A voice: register, vocal tract size, glottal pulse shape, vibrato and phrasing."""

    low_midi: int
    high_midi: int
    formant_scale: float
    bandwidth_scale: float
    open_quotient: float  # share of the glottal period with the glottis open
    rise_share: float  # share of the open phase spent opening
    breathiness: float
    vibrato_hz: float
    vibrato_semitones: float
    attack_seconds: float
    release_seconds: float
    scoop_semitones: float
    legato: float
    pan: float


@dataclass(frozen=True)
class DrumKit:
    kick_start_hz: float
    kick_end_hz: float
    kick_sweep_seconds: float
    kick_decay_seconds: float
    snare_tone_hz: float
    snare_tone_decay_seconds: float
    snare_noise_decay_seconds: float
    snare_noise_band_hz: tuple[float, float]
    hat_decay_seconds: float
    open_hat_decay_seconds: float
    metal_scale: float
    tom_hz: tuple[float, float, float]
    side: float  # +1: hats to the right, -1: to the left


def song(seed: int, seconds: float = 20.0, rate: int = 44100) -> dict[str, np.ndarray]:
    """Stems of one synthesised song, each (2, frames) float32, stereo, summing to the mix
    without clipping (peak of the sum <= 0.9)."""
    plan = _make_plan(seed, seconds, rate)
    makers = {"vocals": _vocals, "drums": _drums, "bass": _bass, "other": _other}
    level_rng = np.random.default_rng((seed, len(STEMS) + 1))
    fade = _edge_fade(plan.frames, rate)
    stems = {}
    for part, stem in enumerate(STEMS, start=1):
        audio = makers[stem](plan, np.random.default_rng((seed, part))) * fade
        level = STEM_LEVELS[stem] * 10.0 ** (level_rng.uniform(-1, 1) * LEVEL_SPREAD_DB / 20)
        stems[stem] = audio * (level / max(_rms(audio), 1e-12))
    gain = MIX_PEAK / max(float(np.abs(sum(stems.values())).max()), 1e-12)
    return {stem: (audio * gain).astype(np.float32) for stem, audio in stems.items()}


def mixture(stems: dict[str, np.ndarray]) -> np.ndarray:
    """The sum of the stems, (2, frames) float32."""
    total = np.zeros_like(next(iter(stems.values())), dtype=np.float32)
    for audio in stems.values():
        total += audio
    return total


# --- Plan and small helpers -------------------------------------------------------------


def _make_plan(seed: int, seconds: float, rate: int) -> Plan:
    rng = np.random.default_rng(seed)
    mode = "major" if rng.random() < 0.6 else "minor"
    progressions = PROGRESSIONS[mode]
    return Plan(rate=rate, frames=int(round(seconds * rate)),
                beat_seconds=60.0 / rng.uniform(80.0, 140.0),
                tonic_midi=48 + int(rng.integers(12)),
                scale=MAJOR_SCALE if mode == "major" else MINOR_SCALE,
                progression=progressions[int(rng.integers(len(progressions)))],
                chord_timbre=CHORD_TIMBRES[seed % len(CHORD_TIMBRES)],
                bass_timbre=BASS_TIMBRES[seed % len(BASS_TIMBRES)])


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def _time_axis(frames: int, rate: int) -> np.ndarray:
    """Seconds of each frame, float32."""
    return np.arange(frames, dtype=np.float32) / np.float32(rate)


def _edge_fade(frames: int, rate: int) -> np.ndarray:
    """Gain ramps at both ends of the song, so that it neither clicks in nor is cut off."""
    fade = np.ones(frames)
    fade_in = min(frames, int(FADE_IN_SECONDS * rate))
    fade_out = min(frames, int(FADE_OUT_SECONDS * rate))
    fade[:fade_in] *= np.linspace(0.0, 1.0, fade_in)
    fade[frames - fade_out:] *= np.linspace(1.0, 0.0, fade_out)
    return fade


def _pan(mono: np.ndarray, position: float) -> np.ndarray:
    """(2, frames) from a mono signal, constant-power panned (-1 left, 0 centre, +1 right)."""
    angle = (float(np.clip(position, -1.0, 1.0)) + 1.0) * np.pi / 4
    return np.stack([math.cos(angle) * mono, math.sin(angle) * mono])


def _place(out: np.ndarray, start_frame: int, audio: np.ndarray) -> None:
    """Add ``audio`` (mono into mono, or (2, n) into stereo) to ``out`` from ``start_frame``,
    cut to fit."""
    begin = max(start_frame, 0)
    end = min(start_frame + audio.shape[-1], out.shape[-1])
    if end > begin:
        out[..., begin:end] += audio[..., begin - start_frame:end - start_frame]


@lru_cache(maxsize=None)
def _butter(kind: str, cutoffs_hz: tuple[float, ...], rate: int, order: int) -> np.ndarray:
    limit = 0.45 * rate
    cutoffs = [min(cutoff, limit) for cutoff in cutoffs_hz]
    if kind == "bandpass" and cutoffs[0] >= 0.9 * cutoffs[1]:
        cutoffs[0] = 0.5 * cutoffs[1]
    edges = cutoffs if kind == "bandpass" else cutoffs[0]
    return signal.butter(order, edges, btype=kind, fs=rate, output="sos")


def _filter(audio: np.ndarray, kind: str, cutoffs_hz: Sequence[float], rate: int,
            order: int = 2) -> np.ndarray:
    """Butterworth ``lowpass``, ``highpass`` or ``bandpass`` along the last axis."""
    sos = _butter(kind, tuple(float(cutoff) for cutoff in cutoffs_hz), rate, order)
    return signal.sosfilt(sos, audio, axis=-1)


def _note_envelope(sounding_frames: int, rate: int, attack_seconds: float,
                   release_seconds: float) -> np.ndarray:
    """Raised-cosine attack, hold, and a raised-cosine release after ``sounding_frames``."""
    attack = max(1, int(attack_seconds * rate))
    release = max(1, int(release_seconds * rate))
    sounding = max(1, sounding_frames)
    envelope = np.ones(sounding + release)
    rising = min(attack, sounding)
    envelope[:rising] = 0.5 - 0.5 * np.cos(np.pi * np.arange(rising) / attack)
    falling = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, release + 1) / release)
    envelope[sounding:] = falling * envelope[sounding - 1]
    return envelope


def _smooth_noise(rng: np.random.Generator, count: int, smoothing_steps: float) -> np.ndarray:
    """Gaussian noise low-passed over about ``smoothing_steps`` values, unit deviation."""
    pole = math.exp(-1.0 / max(smoothing_steps, 1e-6))
    warmup = int(5 * smoothing_steps)
    noise = signal.lfilter([1.0 - pole], [1.0, -pole], rng.standard_normal(count + warmup))
    noise = noise[warmup:]
    return noise / max(float(noise.std()), 1e-12)


def _glide(values: np.ndarray, time_constant_seconds: float, step_seconds: float) -> np.ndarray:
    """One-pole smoothing along the first axis, starting settled on the first value."""
    pole = math.exp(-step_seconds / time_constant_seconds)
    smoothed, _ = signal.lfilter([1.0 - pole], [1.0, -pole], values, axis=0,
                                 zi=pole * values[:1])
    return smoothed


def _cycles(frequency_hz: float, frames: int, rate: int, start: float = 0.0) -> np.ndarray:
    """Phase of a steady oscillator in cycles, wrapped to [0, 1)."""
    return (start + frequency_hz / rate * np.arange(frames)) % 1.0


def _sine_phase(frequency_hz: float, frames: int, rate: int, start: float = 0.0) -> np.ndarray:
    """Phase of a steady oscillator in radians, wrapped, float32 (fast to take sines of)."""
    return (_cycles(frequency_hz, frames, rate, start) * (2 * np.pi)).astype(np.float32)


def _saw(frequency_hz: float, frames: int, rate: int, start: float = 0.0) -> np.ndarray:
    """Band-limited (polyBLEP) sawtooth from -1 to 1."""
    increment = frequency_hz / rate
    phase = _cycles(frequency_hz, frames, rate, start)
    wave = 2.0 * phase - 1.0
    low = phase < increment
    ratio = phase[low] / increment
    wave[low] -= 2.0 * ratio - ratio * ratio - 1.0
    high = phase > 1.0 - increment
    ratio = (phase[high] - 1.0) / increment
    wave[high] -= ratio * ratio + 2.0 * ratio + 1.0
    return wave


def _additive(frequency_hz: float, frames: int, rate: int, amplitudes: Sequence[float],
              decays_per_second: Sequence[float] | None = None,
              phases: Sequence[float] | None = None) -> np.ndarray:
    """Sum of harmonics ``amplitudes[k - 1] * sin(k * phase)``, each decaying at its own rate
    (a plucked tone, brighter at the start) or held; harmonics past 0.45 * rate left out."""
    phase = _sine_phase(frequency_hz, frames, rate)
    seconds = _time_axis(frames, rate) if decays_per_second is not None else None
    tone = np.zeros(frames, dtype=np.float32)
    for harmonic, amplitude in enumerate(amplitudes, start=1):
        if harmonic * frequency_hz >= 0.45 * rate:
            break
        if amplitude == 0.0:
            continue
        offset = 0.0 if phases is None else phases[harmonic - 1]
        partial = np.sin(np.float32(harmonic) * phase + np.float32(offset))
        if seconds is not None:
            partial *= np.exp(np.float32(-decays_per_second[harmonic - 1]) * seconds)
        tone += np.float32(amplitude) * partial
    return tone


def _noise_burst(kind: Noise, rng: np.random.Generator, rate: int,
                 band_scale: float = 1.0) -> np.ndarray:
    """A consonant or a breath: band-passed noise under its envelope."""
    frames = max(2, int(kind.seconds * rate))
    low_hz, high_hz = (edge * band_scale for edge in kind.band_hz)
    noise = _filter(rng.standard_normal(frames), "bandpass", (low_hz, high_hz), rate, order=2)
    noise /= max(_rms(noise), 1e-12)
    if kind.decay_seconds is None:
        release = kind.attack_seconds
        hold = frames - int(release * rate)
        envelope = _note_envelope(hold, rate, kind.attack_seconds, release)[:frames]
    else:
        seconds = np.arange(frames) / rate
        attack = np.minimum(seconds / kind.attack_seconds, 1.0)
        envelope = attack * np.exp(-seconds / kind.decay_seconds)
    return kind.level * envelope * noise


def _reverb(dry: np.ndarray, rate: int, rng: np.random.Generator, decay_seconds: float,
            wet: float, predelay_seconds: float = 0.02, damping_hz: float = 5000.0) -> np.ndarray:
    """``dry`` (2, frames) plus a decorrelated stereo tail: a convolution with decaying noise
    (-60 dB after ``decay_seconds``) of unit energy, scaled by ``wet``."""
    length = max(2, int(decay_seconds * rate))
    seconds = np.arange(length) / rate
    impulse = rng.standard_normal((2, length)) * np.exp(-6.9 * seconds / decay_seconds)
    impulse = _filter(impulse, "lowpass", (damping_hz,), rate, order=1)
    impulse[:, :int(predelay_seconds * rate)] = 0.0
    impulse /= np.sqrt(np.sum(impulse ** 2, axis=1, keepdims=True))
    tail = signal.fftconvolve(dry.astype(np.float32), impulse.astype(np.float32), axes=-1)
    return dry + wet * tail[:, :dry.shape[1]]


# --- Vocals -----------------------------------------------------------------------------


def _vocals(plan: Plan, rng: np.random.Generator) -> np.ndarray:
    """A sung melody: a formant-filtered glottal pulse train with consonants and breaths,
    nearly centred, with a little reverb."""
    singer = _random_singer(rng)
    notes = _compose_melody(plan, singer, rng)
    voice = _sing(plan, singer, notes, rng)
    voice += _syllable_noises(plan, singer, notes, rng)
    return _reverb(_pan(voice, singer.pan), plan.rate, rng, decay_seconds=rng.uniform(1.0, 2.0),
                   wet=rng.uniform(0.12, 0.25), predelay_seconds=0.03)


def _random_singer(rng: np.random.Generator) -> Singer:
    centre_midi = rng.uniform(52.0, 62.0)  # E3 to D4; the line spans about an octave
    low_midi = max(VOICE_LOW_MIDI, int(round(centre_midi - 7)))
    high_midi = min(VOICE_HIGH_MIDI, int(round(centre_midi + 7)))
    return Singer(
        low_midi=low_midi, high_midi=high_midi,
        formant_scale=1.0 + 0.15 * (centre_midi - 52.0) / 10.0 + rng.uniform(-0.03, 0.03),
        bandwidth_scale=rng.uniform(0.8, 1.3),
        open_quotient=rng.uniform(0.5, 0.7), rise_share=rng.uniform(0.6, 0.8),
        breathiness=rng.uniform(0.02, 0.08),
        vibrato_hz=rng.uniform(5.0, 6.0), vibrato_semitones=rng.uniform(0.1, 0.45),
        attack_seconds=rng.uniform(0.02, 0.05), release_seconds=rng.uniform(0.05, 0.1),
        scoop_semitones=rng.uniform(0.3, 1.0), legato=rng.uniform(0.8, 0.97),
        pan=rng.uniform(-0.08, 0.08))


def _compose_melody(plan: Plan, singer: Singer, rng: np.random.Generator) -> list[SungNote]:
    """Two-bar phrases of syllables, chord tones on strong beats, steps between, a long last
    note and a rest before the next phrase; after a bar of introduction when there is room."""
    indices = [index for index in range(-21, 28)
               if singer.low_midi <= plan.midi(index) <= singer.high_midi]
    low_index, high_index = indices[0], indices[-1]
    index = _nearest_chord_tone((low_index + high_index) // 2, plan.chord_root(0), low_index,
                                high_index)
    first_bar = 1 if plan.bars >= 3 else 0
    notes: list[SungNote] = []
    for phrase_bar in range(first_bar, plan.bars, 2):
        if phrase_bar > first_bar and rng.random() < 0.1:
            continue  # an instrumental gap
        beat = 4.0 * phrase_bar + float(rng.choice([0.0, 0.5, 1.0]))
        phrase_end = 4.0 * phrase_bar + rng.uniform(4.5, 6.5)
        latest_stop = 4.0 * (phrase_bar + 2) - 0.5
        phrase_start = True
        while beat < phrase_end:
            beats = float(rng.choice(NOTE_BEATS, p=NOTE_BEAT_WEIGHTS))
            last = beat + beats >= phrase_end
            if last:
                beats = min(max(beats, float(rng.choice([1.5, 2.0, 3.0]))), latest_stop - beat)
            strong = last or beat % 2 == 0
            index = _next_melody_index(index, plan.chord_root(int(beat // 4)), strong,
                                       low_index, high_index, rng)
            notes.append(_syllable(plan, singer, beat, beats, plan.midi(index), phrase_start,
                                   rng))
            phrase_start = False
            beat += beats
    notes = [note for note in notes if note.start_seconds < plan.seconds - 0.05]
    return notes or [_syllable(plan, singer, 0.0, 2.0, plan.midi(index), True, rng)]


def _syllable(plan: Plan, singer: Singer, beat: float, beats: float, midi: int,
              phrase_start: bool, rng: np.random.Generator) -> SungNote:
    start_seconds = max(0.0, beat * plan.beat_seconds + rng.normal(0.0, 0.008))
    vowel = str(rng.choice(VOWELS, p=VOWEL_WEIGHTS))
    end_vowel = None
    if beats >= 1.0 and rng.random() < 0.25:  # a diphthong: "ai", "au", "oi", "ei"...
        end_vowel = str(rng.choice([other for other in ("i", "u") if other != vowel]))
    consonant = None
    if rng.random() < 0.5:
        consonant = str(rng.choice(tuple(CONSONANTS), p=CONSONANT_WEIGHTS))
    return SungNote(start_seconds=start_seconds,
                    stop_seconds=start_seconds + beats * plan.beat_seconds * singer.legato,
                    midi=float(midi), velocity=rng.uniform(0.8, 1.0), vowel=vowel,
                    end_vowel=end_vowel, consonant=consonant, phrase_start=phrase_start)


def _nearest_chord_tone(index: int, root: int, low_index: int, high_index: int) -> int:
    """The chord tone (root, third or fifth, as scale indices) nearest ``index`` in range."""
    tones = [candidate for candidate in range(low_index, high_index + 1)
             if (candidate - root) % 7 in (0, 2, 4)]
    return min(tones, key=lambda tone: (abs(tone - index), tone))


def _next_melody_index(index: int, root: int, strong: bool, low_index: int, high_index: int,
                       rng: np.random.Generator) -> int:
    step = int(rng.choice(MELODY_STEPS, p=MELODY_STEP_WEIGHTS))
    candidate = index + step
    if not low_index <= candidate <= high_index:
        candidate = index - step
    candidate = int(np.clip(candidate, low_index, high_index))
    return _nearest_chord_tone(candidate, root, low_index, high_index) if strong else candidate


def _vowel_formants(singer: Singer, vowel: str, midi: float, rate: int) -> np.ndarray:
    """The singer's formants for a vowel; F1 kept above the sung pitch, as singers do."""
    formants = np.array(VOWEL_FORMANTS_HZ[vowel]) * singer.formant_scale
    formants[0] = max(formants[0], 1.1 * float(midi_to_hz(midi)))
    return np.minimum(formants, 0.45 * rate)


def _sing(plan: Plan, singer: Singer, notes: list[SungNote],
          rng: np.random.Generator) -> np.ndarray:
    """The voiced part of the line, mono, scaled to unit RMS where the voice sounds."""
    rate, frames = plan.rate, plan.frames
    blocks = -(-frames // CONTROL_HOP)
    block_seconds = CONTROL_HOP / rate
    block_times = (np.arange(blocks) + 0.5) * block_seconds

    pitch_target = np.full(blocks, notes[0].midi)
    formant_target = np.tile(_vowel_formants(singer, notes[0].vowel, notes[0].midi, rate),
                             (blocks, 1))
    vibrato_target = np.zeros(blocks)
    scoop = np.zeros(blocks)
    amplitude = np.zeros(frames)
    for number, note in enumerate(notes):
        following = notes[number + 1].start_seconds if number + 1 < len(notes) else 1e9
        first = int(note.start_seconds / block_seconds)
        last = min(blocks, int(following / block_seconds))
        pitch_target[first:last] = note.midi
        formant_target[first:last] = _vowel_formants(singer, note.vowel, note.midi, rate)
        if note.end_vowel is not None:
            split = first + int(0.6 * (note.stop_seconds - note.start_seconds) / block_seconds)
            formant_target[split:last] = _vowel_formants(singer, note.end_vowel, note.midi, rate)
        since_onset = block_times[first:last] - note.start_seconds
        vibrato_target[first:last] = np.clip((since_onset - 0.15) / 0.3, 0.0, 1.0)
        if note.phrase_start:
            scoop[first:last] -= singer.scoop_semitones * np.exp(-np.maximum(since_onset, 0) / 0.07)
        envelope = _note_envelope(plan.frame(note.stop_seconds - note.start_seconds), rate,
                                  singer.attack_seconds, singer.release_seconds)
        envelope *= note.velocity * np.linspace(1.0, 0.85, envelope.size)
        start = plan.frame(note.start_seconds)
        span = amplitude[start:start + envelope.size]
        np.maximum(span, envelope[:span.size], out=span)

    vibrato_phase = 2 * np.pi * np.cumsum(
        (singer.vibrato_hz + 0.25 * _smooth_noise(rng, blocks, 0.3 / block_seconds))
        * block_seconds)
    pitch = (_glide(pitch_target, 0.03, block_seconds) + scoop
             + singer.vibrato_semitones * _glide(vibrato_target, 0.1, block_seconds)
             * np.sin(vibrato_phase)
             + 0.05 * _smooth_noise(rng, blocks, 0.2 / block_seconds)  # drift, ~5 cents
             + 0.03 * rng.standard_normal(blocks))  # jitter, ~3 cents
    sample_times = np.arange(frames) / rate
    frequency_hz = midi_to_hz(np.interp(sample_times, block_times, pitch))
    phase = np.cumsum(frequency_hz / rate) % 1.0
    flow = _rosenberg_flow(phase, singer.open_quotient, singer.rise_share)
    source = np.diff(flow, prepend=0.0) * (rate / frequency_hz)  # flow derivative per period
    source += singer.breathiness * (0.4 + flow) * rng.standard_normal(frames)
    source *= amplitude * (1.0 + 0.03 * np.interp(
        sample_times, block_times, _smooth_noise(rng, blocks, 2.0)))  # shimmer

    # Only the formants that stay well below the Nyquist frequency (all of them from 16 kHz).
    highest_hz = np.max(list(VOWEL_FORMANTS_HZ.values()), axis=0) * singer.formant_scale
    count = max(1, int(np.sum(highest_hz < 0.42 * rate)))
    formants = _glide(_glide(formant_target[:, :count], 0.03, block_seconds), 0.03,
                      block_seconds)
    bandwidths = np.array(FORMANT_BANDWIDTHS_HZ[:count]) * singer.bandwidth_scale
    block_peaks = np.pad(amplitude, (0, blocks * CONTROL_HOP - frames)).reshape(blocks, -1).max(1)
    ringing_blocks = 8
    active = np.convolve(block_peaks > 0, np.ones(ringing_blocks + 1), mode="full")[:blocks] > 0
    voice = _formant_filter(source, formants, bandwidths, active, rate)
    return voice / max(_rms(voice[amplitude > 0.3]), 1e-12)


def _rosenberg_flow(phase: np.ndarray, open_quotient: float, rise_share: float) -> np.ndarray:
    """Rosenberg glottal flow pulse (type C) at each phase (cycles in [0, 1)): a raised-cosine
    opening, a quarter-cosine closing, then closed for the rest of the period."""
    rise = open_quotient * rise_share
    fall = open_quotient - rise
    flow = np.zeros_like(phase)
    rising = phase < rise
    flow[rising] = 0.5 - 0.5 * np.cos(np.pi * phase[rising] / rise)
    falling = ~rising & (phase < open_quotient)
    flow[falling] = np.cos(0.5 * np.pi * (phase[falling] - rise) / fall)
    return flow


def _formant_filter(source: np.ndarray, formants_hz: np.ndarray, bandwidths_hz: np.ndarray,
                    active: np.ndarray, rate: int) -> np.ndarray:
    """A cascade of second-order resonators (unit gain at 0 Hz, as in Klatt's synthesiser)
    whose frequencies move each control block; silent blocks are skipped."""
    radius = np.exp(-np.pi * bandwidths_hz / rate)
    feedback_1 = 2.0 * radius * np.cos(2.0 * np.pi * formants_hz / rate)  # (blocks, formants)
    feedback_2 = -np.broadcast_to(radius ** 2, feedback_1.shape)
    sections = np.zeros(feedback_1.shape + (6,))
    sections[..., 0] = 1.0 - feedback_1 - feedback_2
    sections[..., 3] = 1.0
    sections[..., 4] = -feedback_1
    sections[..., 5] = -feedback_2
    voice = np.zeros_like(source)
    state = np.zeros((feedback_1.shape[1], 2))
    previous = -2
    for block in np.flatnonzero(active):
        if block != previous + 1:
            state[:] = 0.0
        span = slice(block * CONTROL_HOP, (block + 1) * CONTROL_HOP)
        voice[span], state = signal.sosfilt(sections[block], source[span], zi=state)
        previous = block
    return voice


def _syllable_noises(plan: Plan, singer: Singer, notes: list[SungNote],
                     rng: np.random.Generator) -> np.ndarray:
    """Consonants ending where their vowels start, and a breath before phrases with room."""
    noises = np.zeros(plan.frames)
    previous_stop = -1.0
    for note in notes:
        onset = plan.frame(note.start_seconds)
        if note.consonant is not None:
            burst = _noise_burst(CONSONANTS[note.consonant], rng, plan.rate, singer.formant_scale)
            _place(noises, onset - burst.size, burst)
        if note.phrase_start and note.start_seconds - previous_stop > 0.5:
            breath = _noise_burst(BREATH, rng, plan.rate, singer.formant_scale)
            _place(noises, onset - plan.frame(0.08) - breath.size, breath)
        previous_stop = note.stop_seconds
    return noises


# --- Drums ------------------------------------------------------------------------------


def _drums(plan: Plan, rng: np.random.Generator) -> np.ndarray:
    """Kick, snare and hi-hats in a rock/pop bar pattern with small variations, tom fills and
    crashes every four bars; slightly wide, in a short room."""
    kit = _random_kit(rng)
    rate = plan.rate
    kick = _kick(kit, rate, rng)
    snares = [_snare(kit, rate, rng) for _ in range(4)]
    toms = [_tom(frequency_hz, rate) for frequency_hz in kit.tom_hz]
    metal = _metallic_noise(rng, rate, 2.5, kit.metal_scale)
    hats = _filter(metal, "highpass", (7000.0,), rate)
    crash_source = _filter(metal, "highpass", (3500.0,), rate)
    crash = crash_source * np.exp(-np.arange(metal.size) / (rng.uniform(0.8, 1.3) * rate))

    kick_steps = KICK_PATTERNS[int(rng.integers(len(KICK_PATTERNS)))]
    if plan.beat_seconds < 60.0 / 115.0 or rng.random() < 0.5:
        hat_steps = tuple(range(0, 16, 2))
    else:
        hat_steps = tuple(range(16))
    open_hat_step = int(rng.choice([6, 14])) if rng.random() < 0.4 else None

    out = np.zeros((2, plan.frames))

    def hit(time_seconds: float, sound: np.ndarray, level: float, pan: float) -> None:
        start = plan.frame(time_seconds + rng.normal(0.0, 0.003))
        _place(out, start, _pan(level * rng.uniform(0.85, 1.0) * sound, pan))

    def hat(time_seconds: float, decay_seconds: float, level: float) -> None:
        frames = int(5 * decay_seconds * rate)
        offset = int(rng.integers(hats.size - frames))
        envelope = np.exp(-np.arange(frames) / (decay_seconds * rate))
        envelope[:8] *= np.linspace(0.0, 1.0, 8)
        hit(time_seconds, hats[offset:offset + frames] * envelope, level, 0.35 * kit.side)

    for bar in range(plan.bars):
        bar_start = bar * plan.bar_seconds
        fill = bar % 4 == 3 and rng.random() < 0.6
        kicks = set(kick_steps)
        if rng.random() < 0.25:
            kicks.add(int(rng.choice([7, 10, 14, 15])))
        ghost = int(rng.choice([7, 9, 15])) if rng.random() < 0.35 else None
        open_hat = open_hat_step is not None and rng.random() < 0.6
        if bar % 4 == 0:
            hit(bar_start, crash, 0.3, -0.4 * kit.side)
        for step in range(16):
            time_seconds = bar_start + step * plan.step_seconds
            if fill and step >= 12:
                if step < 15 or rng.random() < 0.5:
                    hit(time_seconds, toms[min(step - 12, 2)], 0.7, (0.35 - 0.3 * (step - 12))
                        * kit.side)
                else:
                    hit(time_seconds, snares[int(rng.integers(4))], 0.8, 0.0)
                continue
            if step in kicks:
                hit(time_seconds, kick, 1.0, 0.0)
            if step in (4, 12):
                hit(time_seconds, snares[int(rng.integers(4))], 0.8, 0.05 * kit.side)
            elif step == ghost:
                hit(time_seconds, snares[int(rng.integers(4))], 0.25, 0.05 * kit.side)
            if open_hat and step == open_hat_step:
                hat(time_seconds, kit.open_hat_decay_seconds, 0.22)
            elif step in hat_steps:
                hat(time_seconds, kit.hat_decay_seconds, 0.25 if step % 4 == 0 else 0.17)
    return _reverb(out, rate, rng, decay_seconds=rng.uniform(0.4, 0.8),
                   wet=rng.uniform(0.08, 0.15), predelay_seconds=0.01, damping_hz=7000.0)


def _random_kit(rng: np.random.Generator) -> DrumKit:
    tom_low_hz = rng.uniform(80.0, 110.0)
    return DrumKit(
        kick_start_hz=rng.uniform(130.0, 170.0), kick_end_hz=rng.uniform(45.0, 58.0),
        kick_sweep_seconds=rng.uniform(0.025, 0.045), kick_decay_seconds=rng.uniform(0.15, 0.3),
        snare_tone_hz=rng.uniform(180.0, 230.0), snare_tone_decay_seconds=rng.uniform(0.05, 0.1),
        snare_noise_decay_seconds=rng.uniform(0.08, 0.16),
        snare_noise_band_hz=(rng.uniform(1000.0, 2000.0), rng.uniform(7000.0, 10000.0)),
        hat_decay_seconds=rng.uniform(0.015, 0.035),
        open_hat_decay_seconds=rng.uniform(0.15, 0.3), metal_scale=rng.uniform(0.9, 1.25),
        tom_hz=(tom_low_hz * 1.8, tom_low_hz * 1.35, tom_low_hz),
        side=1.0 if rng.random() < 0.5 else -1.0)


def _kick(kit: DrumKit, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A sine sweeping down from about 150 Hz to 50 Hz with a fast decay, and a click."""
    frames = int(0.5 * rate)
    seconds = np.arange(frames) / rate
    sweep_hz = kit.kick_start_hz - kit.kick_end_hz
    phase = 2 * np.pi * (kit.kick_end_hz * seconds + sweep_hz * kit.kick_sweep_seconds
                         * (1.0 - np.exp(-seconds / kit.kick_sweep_seconds)))
    body = np.sin(phase) * np.exp(-seconds / kit.kick_decay_seconds)
    click = _filter(rng.standard_normal(frames), "bandpass", (1500.0, 6000.0), rate)
    body += 0.15 * click * np.exp(-seconds / 0.002)
    return np.tanh(1.5 * body) / np.tanh(1.5)


def _snare(kit: DrumKit, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Band-passed noise over a tone near 200 Hz (and an overtone), both decaying."""
    frames = int(0.4 * rate)
    seconds = np.arange(frames) / rate
    tone = (np.sin(2 * np.pi * kit.snare_tone_hz * seconds)
            * np.exp(-seconds / kit.snare_tone_decay_seconds)
            + 0.5 * np.sin(2 * np.pi * 1.6 * kit.snare_tone_hz * seconds)
            * np.exp(-seconds / (0.7 * kit.snare_tone_decay_seconds)))
    noise = _filter(rng.standard_normal(frames), "bandpass", kit.snare_noise_band_hz, rate)
    noise /= max(_rms(noise), 1e-12)
    noise *= np.exp(-seconds / kit.snare_noise_decay_seconds)
    return 0.5 * tone + 0.45 * noise


def _tom(frequency_hz: float, rate: int) -> np.ndarray:
    frames = int(0.5 * rate)
    seconds = np.arange(frames) / rate
    phase = 2 * np.pi * (frequency_hz * seconds
                         + 0.4 * frequency_hz * 0.04 * (1.0 - np.exp(-seconds / 0.04)))
    return np.sin(phase) * np.exp(-seconds / 0.22)


def _metallic_noise(rng: np.random.Generator, rate: int, seconds: float,
                    scale: float) -> np.ndarray:
    """Six detuned square waves (as in a TR-808's cymbals) plus white noise; unfiltered."""
    frames = int(seconds * rate)
    squares = sum(np.sign(np.sin(_sine_phase(frequency_hz * scale, frames, rate, rng.random())))
                  for frequency_hz in (205.3, 304.4, 369.6, 522.7, 540.0, 800.0))
    return squares / 6.0 + 0.8 * rng.standard_normal(frames)


# --- Bass -------------------------------------------------------------------------------


def _bass(plan: Plan, rng: np.random.Generator) -> np.ndarray:
    """A bass line on the chord roots (41-110 Hz), plucked: a two-operator FM tone or a
    sawtooth whose brightness decays; centred."""
    notes = _compose_bass(plan, rng)
    rate = plan.rate
    attack_seconds = rng.uniform(0.003, 0.008)
    decay_seconds = rng.uniform(0.3, 0.8)
    release_seconds = rng.uniform(0.015, 0.03)
    if plan.bass_timbre == "fm":
        ratio = 1.0 if rng.random() < 0.7 else 2.0
        index_start, index_floor = rng.uniform(2.0, 4.0), rng.uniform(0.3, 0.8)
        index_decay_seconds = rng.uniform(0.08, 0.2)
        line = np.zeros(plan.frames)
        for note in notes:
            frames = plan.frame(note.stop_seconds - note.start_seconds)
            envelope = _note_envelope(frames, rate, attack_seconds, release_seconds)
            seconds = np.arange(envelope.size) / rate
            phase = 2 * np.pi * float(midi_to_hz(note.midi)) * seconds
            index = index_floor + index_start * np.exp(-seconds / index_decay_seconds)
            tone = np.sin(phase + index * np.sin(ratio * phase))
            envelope *= note.velocity * np.exp(-seconds / decay_seconds)
            _place(line, plan.frame(note.start_seconds), tone * envelope)
    else:
        bright_hz, dark_hz = rng.uniform(1200.0, 2500.0), rng.uniform(250.0, 450.0)
        brightness_seconds = rng.uniform(0.08, 0.25)
        bright, dark = np.zeros(plan.frames), np.zeros(plan.frames)
        for note in notes:
            frames = plan.frame(note.stop_seconds - note.start_seconds)
            envelope = _note_envelope(frames, rate, attack_seconds, release_seconds)
            seconds = np.arange(envelope.size) / rate
            tone = _saw(float(midi_to_hz(note.midi)), envelope.size, rate, rng.random())
            envelope *= note.velocity * np.exp(-seconds / decay_seconds)
            brightness = np.exp(-seconds / brightness_seconds)
            start = plan.frame(note.start_seconds)
            _place(bright, start, tone * envelope * brightness)
            _place(dark, start, tone * envelope * (1.0 - brightness))
        line = (_filter(bright, "lowpass", (bright_hz,), rate)
                + _filter(dark, "lowpass", (dark_hz,), rate))
    line = np.tanh(1.5 * line / max(float(np.abs(line).max()), 1e-12))
    return np.stack([line, line])


def _bass_root(plan: Plan, bar: int) -> int:
    """The chord root of ``bar`` between MIDI 31 and 42 (49-92 Hz)."""
    pitch_class = plan.midi(plan.chord_root(bar)) % 12
    return 31 + (pitch_class - 7) % 12


def _bass_pitch(midi: int, root: int) -> int:
    if midi > BASS_HIGH_MIDI:
        midi -= 12
    return root if midi < BASS_LOW_MIDI else midi


def _compose_bass(plan: Plan, rng: np.random.Generator) -> list[Note]:
    pattern = BASS_PATTERNS[int(rng.integers(len(BASS_PATTERNS)))]
    legato = rng.uniform(0.75, 0.95)
    notes = []
    for bar in range(plan.bars):
        root = _bass_root(plan, bar)
        approach = rng.random() < 0.3
        for number, (step, steps, interval) in enumerate(pattern):
            midi = _bass_pitch(root + interval, root)
            if approach and number == len(pattern) - 1:  # lead into the next bar's root
                midi = _bass_pitch(_bass_root(plan, bar + 1) + int(rng.choice([-1, 1, 2])), root)
            start = (bar * 16 + step) * plan.step_seconds + rng.normal(0.0, 0.004)
            start = max(start, 0.0)
            notes.append(Note(start, start + steps * plan.step_seconds * legato, float(midi),
                              rng.uniform(0.85, 1.0) * (1.0 if step % 4 == 0 else 0.9)))
    return [note for note in notes if note.start_seconds < plan.seconds]


# --- Other (chords, arpeggio) -----------------------------------------------------------


def _other(plan: Plan, rng: np.random.Generator) -> np.ndarray:
    """Chords of 3-4 notes, voice-led, as a pad, an organ or a plucked piano-like tone, and
    often an arpeggio above them; panned wider than the rest."""
    voicings = _voice_chords(plan, rng)
    timbre = plan.chord_timbre
    rhythms = CHORD_RHYTHMS[timbre]
    rhythm = rhythms[int(rng.integers(len(rhythms)))]
    side = 1.0 if rng.random() < 0.5 else -1.0
    width = rng.uniform(0.3, 0.6)
    out = np.zeros((2, plan.frames))
    chord_part = np.zeros((2, plan.frames))
    for bar, voicing in enumerate(voicings):
        for step, steps in rhythm:
            start = max(0.0, (bar * 16 + step) * plan.step_seconds + rng.normal(0.0, 0.004))
            sounding = steps * plan.step_seconds
            velocity = rng.uniform(0.8, 1.0)
            for number, midi in enumerate(voicing):
                pan = side * 0.2 + width * (2.0 * number / (len(voicing) - 1) - 1.0)
                tone = _chord_tone(timbre, float(midi_to_hz(midi)), sounding, plan.rate, pan,
                                   rng)
                _place(chord_part, plan.frame(start), velocity * tone)
    if timbre == "pad":
        chord_part = _filter(chord_part, "lowpass", (rng.uniform(1500.0, 3000.0),), plan.rate)
    out += chord_part / max(_rms(chord_part), 1e-12)
    if rng.random() < 0.6:
        arpeggio = _arpeggio(plan, voicings, -side * rng.uniform(0.4, 0.7), rng)
        out += rng.uniform(0.4, 0.7) * arpeggio / max(_rms(arpeggio), 1e-12)
    return _reverb(out, plan.rate, rng, decay_seconds=rng.uniform(1.2, 2.2),
                   wet=rng.uniform(0.15, 0.25), predelay_seconds=0.02)


def _voice_chords(plan: Plan, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """One voicing a bar, each the one nearest the last (triads, or sevenths)."""
    offsets = (0, 2, 4, 6) if rng.random() < 0.35 else (0, 2, 4)
    voicings: list[tuple[int, ...]] = []
    for bar in range(plan.bars):
        root = plan.chord_root(bar)
        pitch_classes = [plan.midi(root + offset) % 12 for offset in offsets]
        options = [[midi for midi in range(CHORD_LOW_MIDI, CHORD_HIGH_MIDI + 1)
                    if midi % 12 == pitch_class] for pitch_class in pitch_classes]
        previous = voicings[-1] if voicings else None
        chords = (tuple(sorted(chord)) for chord in itertools.product(*options))
        voicings.append(min(chords, key=lambda chord: _voicing_cost(chord, previous)))
    return voicings


def _voicing_cost(chord: tuple[int, ...], previous: tuple[int, ...] | None) -> float:
    spread = chord[-1] - chord[0]
    cost = 2.0 * max(0, spread - 12) + 0.3 * abs(float(np.mean(chord)) - 63.0)
    if previous is not None:
        cost += sum(abs(note - before) for note, before in zip(chord, previous))
    return cost


def _chord_tone(timbre: str, frequency_hz: float, sounding_seconds: float, rate: int, pan: float,
                rng: np.random.Generator) -> np.ndarray:
    """One chord note, (2, frames)."""
    if timbre == "pad":
        envelope = _note_envelope(int(sounding_seconds * rate), rate, rng.uniform(0.1, 0.4), 0.4)
        detune = 2.0 ** (rng.uniform(5.0, 12.0) / 1200.0)
        centre = _saw(frequency_hz, envelope.size, rate, rng.random())
        left = centre + _saw(frequency_hz / detune, envelope.size, rate, rng.random())
        right = centre + _saw(frequency_hz * detune, envelope.size, rate, rng.random())
        gains = _pan(np.ones(1), pan)[:, 0]
        return 0.5 * envelope * np.stack([gains[0] * left, gains[1] * right])
    if timbre == "organ":
        envelope = _note_envelope(int(sounding_seconds * rate), rate, 0.01, 0.05)
        tone = _additive(frequency_hz, envelope.size, rate, ORGAN_HARMONICS) * envelope
        seconds = _time_axis(envelope.size, rate)
        stereo = _pan(tone, pan)
        for channel, phase in enumerate((0.0, np.pi / 2)):  # a rotating speaker's tremolo
            stereo[channel] *= 1.0 + 0.08 * np.sin(2 * np.pi * 6.0 * seconds + phase)
        return stereo
    ring_seconds = min(sounding_seconds + 0.15, 1.5)
    envelope = _note_envelope(int(ring_seconds * rate), rate, 0.003, 0.08)
    harmonics = np.arange(1, 11)
    tone = _additive(frequency_hz, envelope.size, rate, harmonics ** -1.1,
                     decays_per_second=1.2 + 1.8 * harmonics,
                     phases=rng.uniform(0, 2 * np.pi, harmonics.size))
    return _pan(tone * envelope, pan)


def _arpeggio(plan: Plan, voicings: list[tuple[int, ...]], pan: float,
              rng: np.random.Generator) -> np.ndarray:
    """Plucked eighths (sixteenths at slow tempos) through each chord an octave up."""
    step_sixteenths = 1 if plan.beat_seconds > 0.65 and rng.random() < 0.5 else 2
    order = str(rng.choice(["up", "up-down", "down"]))
    harmonics = np.arange(1, 7)
    amplitudes = harmonics ** -1.5
    decays = 3.0 + 4.0 * harmonics
    out = np.zeros((2, plan.frames))
    for bar, voicing in enumerate(voicings):
        tones = [midi + 12 if midi + 12 <= 86 else midi for midi in voicing]
        if order == "down":
            tones = tones[::-1]
        elif order == "up-down":
            tones = tones + tones[-2:0:-1]
        for number, step in enumerate(range(0, 16, step_sixteenths)):
            midi = tones[number % len(tones)]
            sounding = step_sixteenths * plan.step_seconds * 0.9
            envelope = _note_envelope(int(sounding * plan.rate), plan.rate, 0.002, 0.05)
            tone = _additive(float(midi_to_hz(midi)), envelope.size, plan.rate, amplitudes,
                             decays_per_second=decays)
            start = (bar * 16 + step) * plan.step_seconds + rng.normal(0.0, 0.003)
            _place(out, plan.frame(max(start, 0.0)),
                   _pan(rng.uniform(0.75, 1.0) * tone * envelope, pan))
    return out
