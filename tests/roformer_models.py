"""Reference RoFormers for the parity tests.

- ``build_pair``: audio-separator 0.47.1's class with random weights and ours with the same
  state dict (``strict=True``), through tests/parity.py (where the output comparison is too).
- ``istft_spy``: records what the oracle hands to ``torch.istft`` (the masked spectrogram),
  so ZFTurbo's endings (DC bin zeroed, length = input length) can be derived from the
  oracle's own computation.
- ``zfturbo_forward``: ZFTurbo's forward (Music-Source-Separation-Training HEAD,
  models/bs_roformer/{bs,mel_band}_roformer.py) restated over the oracle's modules, for the
  options audio-separator accepts but ignores (skip_connection) or lacks (a linear
  transformer in the Mel-Band RoFormer). Checked against the oracle's own forward where
  both apply.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial

import torch

from tests import parity
from tests.oracles import require

# configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml
VIPERX_FREQS_PER_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)

VIPERX_BS = dict(
    dim=512,
    depth=12,
    stereo=True,
    num_stems=1,
    time_transformer_depth=1,
    freq_transformer_depth=1,
    linear_transformer_depth=0,
    freqs_per_bands=VIPERX_FREQS_PER_BANDS,
    dim_head=64,
    heads=8,
    stft_n_fft=2048,
    stft_hop_length=441,
    stft_win_length=2048,
    mask_estimator_depth=2,
)

# configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml
KIM_MEL = dict(
    dim=384,
    depth=6,
    stereo=True,
    num_stems=1,
    time_transformer_depth=1,
    freq_transformer_depth=1,
    num_bands=60,
    dim_head=64,
    heads=8,
    sample_rate=44100,
    stft_n_fft=2048,
    stft_hop_length=441,
    stft_win_length=2048,
    mask_estimator_depth=2,
)

BS_MODULE = "audio_separator.separator.uvr_lib_v5.roformer.bs_roformer"
MEL_MODULE = "audio_separator.separator.uvr_lib_v5.roformer.mel_band_roformer"


def oracle_class(kind: str):
    if kind == "bs":
        return require(BS_MODULE).BSRoformer
    return require(MEL_MODULE).MelBandRoformer


def our_class(kind: str):
    if kind == "bs":
        from stemsplit.models.bs_roformer import BSRoformer

        return BSRoformer
    from stemsplit.models.mel_band_roformer import MelBandRoformer

    return MelBandRoformer


def randomize_norms(model: torch.nn.Module, generator: torch.Generator) -> None:
    """RMSNorm gains and rotary/temperature parameters start at constants: perturb the
    gains so that a mix-up of norms would show."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("gamma"):
                parameter.mul_(1 + 0.5 * torch.rand(parameter.shape, generator=generator))
            elif name.endswith("temperature"):
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))


def build_oracle(kind: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """The oracle (zero_dc=False) built after seeding with ``seed``, its norms randomized
    from a generator seeded with ``seed + 1``, in eval mode."""
    return parity.seeded_reference(
        lambda: oracle_class(kind)(zero_dc=False, **kwargs), seed=seed,
        randomize=lambda model: randomize_norms(model, torch.Generator().manual_seed(seed + 1)))


def load_ours(kind: str, oracle: torch.nn.Module, **kwargs) -> torch.nn.Module:
    return parity.load_ours(partial(our_class(kind), **kwargs), oracle)


def build_pair(kind: str, seed: int = 0, ours_extra: dict | None = None, **kwargs):
    """(oracle, ours) on the same random weights; ours gets ``kwargs | ours_extra``."""
    oracle = build_oracle(kind, seed, **kwargs)
    ours = load_ours(kind, oracle, **{"zero_dc": False, **kwargs, **(ours_extra or {})})
    return oracle, ours


@contextlib.contextmanager
def istft_spy() -> Iterator[tuple[list, object]]:
    """Yields (calls, the real torch.istft); each call records (spec, kwargs)."""
    real = torch.istft
    calls: list = []

    def spy(spec, *args, **kwargs):
        assert not args, "the oracle passes istft options by keyword"
        calls.append((spec.detach().clone(), dict(kwargs)))
        return real(spec, **kwargs)

    torch.istft = spy
    try:
        yield calls, real
    finally:
        torch.istft = real


def oracle_masked_spectrogram(oracle: torch.nn.Module, mix: torch.Tensor):
    """The oracle's masked spectrogram ((b n s), f, t) and its istft keywords."""
    with torch.no_grad(), istft_spy() as (calls, _):
        oracle(mix)
    assert len(calls) == 1
    return calls[0]


def zfturbo_forward(
    model: torch.nn.Module,
    raw_audio: torch.Tensor,
    *,
    mel: bool,
    skip_connection: bool = False,
    zero_dc: bool = True,
    match_input_audio_length: bool = False,
) -> torch.Tensor:
    """ZFTurbo's forward (inference branch) over an oracle model's modules, step by step.
    Returns (b, n, s, t) (ZFTurbo's Mel drops n when it is 1; kept here)."""
    with torch.no_grad():
        batch, channels, length = raw_audio.shape
        window = model.stft_window_fn(device=raw_audio.device)
        stft_repr = torch.stft(
            raw_audio.reshape(batch * channels, length),
            **model.stft_kwargs,
            window=window,
            return_complex=True,
        )
        stft_repr = torch.view_as_real(stft_repr)
        n_freqs, n_frames = stft_repr.shape[1], stft_repr.shape[2]
        # 'b s f t c -> b (f s) t c'
        stft_repr = stft_repr.reshape(batch, channels, n_freqs, n_frames, 2).permute(0, 2, 1, 3, 4)
        stft_repr = stft_repr.reshape(batch, n_freqs * channels, n_frames, 2)
        if mel:
            x = stft_repr[torch.arange(batch)[..., None], model.freq_indices]
        else:
            x = stft_repr
        x = x.permute(0, 2, 1, 3).reshape(batch, n_frames, -1)  # 'b f t c -> b t (f c)'
        x = model.band_split(x)

        store = []
        for i, block in enumerate(model.layers):
            if len(block) == 3:
                linear_transformer, time_transformer, freq_transformer = block
                b, t, f, d = x.shape
                x = linear_transformer(x.reshape(b, t * f, d)).reshape(b, t, f, d)
            else:
                time_transformer, freq_transformer = block
            if skip_connection:
                for j in range(i):
                    x = x + store[j]
            b, t, f, d = x.shape
            x = x.permute(0, 2, 1, 3).reshape(b * f, t, d)  # 'b t f d -> (b f) t d'
            x = time_transformer(x)
            x = x.reshape(b, f, t, d).permute(0, 2, 1, 3).reshape(b * t, f, d)
            x = freq_transformer(x)
            x = x.reshape(b, t, f, d)
            if skip_connection:
                store.append(x)
        if not mel:
            x = model.final_norm(x)

        mask = torch.stack([fn(x) for fn in model.mask_estimators], dim=1)
        n_stems = mask.shape[1]
        mask = mask.reshape(batch, n_stems, n_frames, -1, 2).permute(
            0, 1, 3, 2, 4
        )  # 'b n t (f c) -> b n f t c'
        spec = torch.view_as_complex(stft_repr.contiguous())[:, None]
        mask = torch.view_as_complex(mask.contiguous())
        if mel:
            index = model.freq_indices.view(1, 1, -1, 1).expand(batch, n_stems, -1, n_frames)
            summed = torch.zeros((batch, n_stems, n_freqs * channels, n_frames), dtype=spec.dtype)
            summed.scatter_add_(2, index, mask)
            denominator = (
                model.num_bands_per_freq.repeat_interleave(channels).view(-1, 1).clamp(min=1e-8)
            )
            mask = summed / denominator
        spec = spec * mask
        # 'b n (f s) t -> (b n s) f t'
        spec = spec.reshape(batch, n_stems, n_freqs, channels, n_frames).permute(0, 1, 3, 2, 4)
        spec = spec.reshape(batch * n_stems * channels, n_freqs, n_frames)
        if zero_dc:
            spec = spec.index_fill(1, torch.tensor(0), 0.0)
        istft_length = length if (not mel or match_input_audio_length) else None
        audio = torch.istft(
            spec, **model.stft_kwargs, window=window, return_complex=False, length=istft_length
        )
        return audio.reshape(batch, n_stems, channels, -1)
