"""Golden fixtures ``bandit`` (BandIt Plus) and ``bandit_v2`` (BandIt v2) as ZFTurbo runs them.

``bandit``: ZFTurbo's ``configs/config_dnr_bandit_bsrnn_multi_mus64.yaml`` made small: the
DnR stems (speech, music, effects), 8 kHz (``fs`` 8000: 3 "musical" bands over the 1025
bins, (0, 23), (4, 468) and (101, 1025), overlapping), one sequence module (a GRU
along time and one along the bands), ``emb_dim``/``rnn_dim`` 4, ``mlp_dim`` 2; the STFT
keys as published (ZFTurbo's wrapper ignores them and always takes n_fft 2048, hop 512,
so the config's ``n_fft`` stays 2048); chunks of 4000 samples with ``num_overlap`` 4 and
the published ``inference.batch_size`` 1. The checkpoint is ``model_bandit_plus_dnr_sdr_
11.47.chpt`` in the published layout: a bare state dict (``torch.save`` of the network's
``state_dict()``: unprefixed keys, the STFT windows, the frequency weights in float64),
which ZFTurbo's ``load_start_checkpoint`` loads strictly as it is. (ZFTurbo's inference
of December 2023, when BandIt Plus was published, called ``load_state_dict(torch.load(
path))`` with no unwrapping, so the published file is such a bare state dict.)

``bandit_v2``: ``configs/config_dnr_bandit_v2_mus64.yaml`` made small: stems speech, music,
sfx; 8 kHz audio with ``fs`` left out as published (the bands are computed for 44.1 kHz:
6 bands over 129 bins), n_fft 256, hop 64, reflection padding as published; two sequence
modules of LSTMs (``emb_dim``/``rnn_dim`` 8), ``mlp_dim`` 8; chunks of 2000 samples with
``num_overlap`` 4 and ``inference.batch_size`` 2 (31 chunks: the last batch is the last
chunk alone, so ZFTurbo's per-batch fade rule is the per-chunk one). No BandIt v2
checkpoint is published with ZFTurbo's code: users bring their own, a bare state dict
(``model_bandit_v2.ckpt`` here).

Both: a 1.55 s stereo track (12400 samples): the reflect border, and among the last chunks
both reflect-padded and zero-padded ones. Random weights; the 1-D parameters (norm scales,
biases) are perturbed so that none is left at its initial value.

Importing ZFTurbo's ``models.bandit.core`` package runs its training module's imports:
``asteroid`` (losses), ``pedalboard`` and ``torch_audiomentations`` (data augmentation)
are training-only and stubbed here as empty modules; ``spafe`` (imported by the band
specifications) must be installed.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from . import common

RATE = 8000
SECONDS = 1.55
TRAINING_ONLY = ("asteroid", "asteroid.losses", "pedalboard", "torch_audiomentations")

BANDIT_CONFIG = f"""name: "MultiMaskMultiSourceBandSplitRNN"
audio:
  chunk_size: 4000
  num_channels: 2
  sample_rate: {RATE}
  min_mean_abs: 0.001

model:
  in_channel: 1
  stems: ['speech', 'music', 'effects']
  band_specs: "musical"
  n_bands: 3
  fs: {RATE}
  require_no_overlap: false
  require_no_gap: true
  normalize_channel_independently: false
  treat_channel_as_feature: true
  n_sqm_modules: 1
  emb_dim: 4
  rnn_dim: 4
  bidirectional: true
  rnn_type: "GRU"
  mlp_dim: 2
  hidden_activation: "Tanh"
  hidden_activation_kwargs: null
  complex_mask: true
  n_fft: 2048
  win_length: 2048
  hop_length: 512
  window_fn: "hann_window"
  wkwargs: null
  power: null
  center: true
  normalized: true
  pad_mode: "constant"
  onesided: true

training:
  batch_size: 4
  gradient_accumulation_steps: 4
  grad_clip: 0
  instruments:
  - speech
  - music
  - effects
  lr: 9.0e-05
  patience: 2
  reduce_factor: 0.95
  target_instrument: null
  num_epochs: 1000
  num_steps: 1000
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
  optimizer: adam
  other_fix: true
  use_amp: true

augmentations:
  enable: false

inference:
  batch_size: 1
  dim_t: 256
  num_overlap: 4
"""

BANDIT_V2_CONFIG = f"""cls: Bandit

audio:
  chunk_size: 2000
  num_channels: 2
  sample_rate: {RATE}
  min_mean_abs: 0.000

kwargs:
  in_channels: 1
  stems: ['speech', 'music', 'sfx']
  band_type: musical
  n_bands: 6
  normalize_channel_independently: false
  treat_channel_as_feature: true
  n_sqm_modules: 2
  emb_dim: 8
  rnn_dim: 8
  bidirectional: true
  rnn_type: "LSTM"
  mlp_dim: 8
  hidden_activation: "Tanh"
  hidden_activation_kwargs: null
  complex_mask: true
  use_freq_weights: true
  n_fft: 256
  win_length: 256
  hop_length: 64
  window_fn: "hann_window"
  wkwargs: null
  power: null
  center: true
  normalized: true
  pad_mode: "reflect"
  onesided: true

training:
  batch_size: 4
  gradient_accumulation_steps: 4
  grad_clip: 0
  instruments:
  - speech
  - music
  - sfx
  lr: 9.0e-05
  patience: 2
  reduce_factor: 0.95
  target_instrument: null
  num_epochs: 1000
  num_steps: 1000
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
  optimizer: adam
  other_fix: true
  use_amp: true

augmentations:
  enable: false

inference:
  batch_size: 2
  dim_t: 256
  num_overlap: 4
"""


def stub_training_imports() -> None:
    """Empty modules for the training-only packages ZFTurbo's ``models.bandit.core``
    imports (never used for inference)."""
    for name in TRAINING_ONLY:
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    sys.modules["asteroid"].losses = sys.modules["asteroid.losses"]


def _make(folder: Path, model_type: str, config_text: str, checkpoint_name: str,
          seed: int) -> None:
    import torch
    from utils.settings import get_model_from_config

    stub_training_imports()
    config_path = folder / "config.yaml"
    config_path.write_text(config_text)
    torch.manual_seed(seed)
    network, _ = get_model_from_config(model_type, str(config_path))
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.2 * torch.randn_like(parameter))
    checkpoint = folder / checkpoint_name
    torch.save(network.state_dict(), checkpoint)

    mix = common.mixture(SECONDS, RATE, seed=seed % 1000)
    common.write_wav(folder / "mixture.wav", mix, RATE)
    stems = common.zfturbo_inference(model_type, config_path, checkpoint, mix)
    common.save_expected(folder, stems, model_type=model_type, checkpoint=checkpoint.name,
                         seconds=SECONDS, sample_rate=RATE,
                         stubbed_training_imports=list(TRAINING_ONLY))


def make_bandit(folder: Path) -> None:
    _make(folder, "bandit", BANDIT_CONFIG, "model_bandit_plus_dnr_sdr_11.47.chpt", 20231219)


def make_bandit_v2(folder: Path) -> None:
    _make(folder, "bandit_v2", BANDIT_V2_CONFIG, "model_bandit_v2.ckpt", 20240710)


FIXTURES = {"bandit": make_bandit, "bandit_v2": make_bandit_v2}
