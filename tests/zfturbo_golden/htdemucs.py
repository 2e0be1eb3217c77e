"""Golden fixtures of the ``htdemucs`` type: ZFTurbo's ``models/demucs4ht.get_model`` (its
copy of HTDemucs, demucs 4.1's HDemucs and Demucs, chosen by the config's string ``model``)
run by demix's "demucs" mode: chunks of ``training.samplerate * training.segment`` samples
every ``chunk // num_overlap``, no border, no fades, every short chunk zero-padded and fed
whole, overlaps plain-averaged.

The networks' sample rate is metadata (it only sets the segment's length in samples), so the
fixtures run at 4 kHz with ``training.segment: 1`` (ZFTurbo's demix needs a whole number of
samples: its chunk size is the product itself, used as a slice bound), on 1.7 s tracks.

- ``htdemucs``: ``configs/config_vocals_htdemucs.yaml`` made small (vocals and other,
  stereo; ``nfft`` 512, depth 3, 6 channels, a 2-layer cross transformer over 16 bottom
  channels, DConv in both encoders and decoders, GroupNorm from layer 2), its spelling kept
  (``num_subbands: 1``, ``dconv_init: 1e-3``, which OmegaConf reads as a float and PyYAML as
  a string). The checkpoint is the bare ``state_dict`` in a ``.ckpt``, as the MVSep vocals
  fine-tune is. ``num_overlap`` 2 (4 chunks, the last two short); ``expected.npz`` also
  holds ``stems_num_overlap_4`` (the same track with ``inference.num_overlap: 4``: 7
  chunks), for ``--overlap 4``.
- ``drumsep``: ``configs/config_drumsep.yaml`` made small (``model: hdemucs``; kick, snare,
  cymbals, toms; ``nfft`` 256 and depth 4, so that the branches merge at layer 2 and layer 3
  is a time layer, as the published depth 6 at ``nfft`` 4096 merges at layer 4; DConv LSTM
  and attention from layer 2). The checkpoint is ``model_drumsep.th``, a demucs package as
  DrumSep's is: ``demucs.states.serialize_model`` (``klass`` the class itself,
  ``demucs.hdemucs.HDemucs`` in the pickle; ``args``, ``kwargs``, ``state`` in float16,
  ``training_args`` a plain dict), which ZFTurbo's ``load_start_checkpoint`` unwraps
  (``state``).
- ``htdemucs_v2_one_stem``: ``model: demucs`` (demucs v2's waveform network, with its BLSTM
  and x2 resampling), one instrument (vocals) and mono: demix returns a bare array.

Random weights; 1-D parameters (LayerScale scales, norm affines, biases) get 0.2 x N(0, 1)
added so that no branch stays at its initial near-zero contribution.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from . import common

RATE = 4000
SECONDS = 1.7

HTDEMUCS_CONFIG = f"""audio:
  chunk_size: {RATE} # samplerate * segment
  min_mean_abs: 0.001
  hop_length: 128

training:
  batch_size: 10
  gradient_accumulation_steps: 1
  grad_clip: 0
  segment: 1
  shift: 1
  samplerate: {RATE}
  channels: 2
  normalize: true
  instruments: ['vocals', 'other']
  target_instrument: null
  num_epochs: 1000
  num_steps: 1000
  optimizer: adam
  lr: 9.0e-05
  patience: 2
  reduce_factor: 0.95
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
  other_fix: true
  use_amp: true

augmentations:
  enable: true
  loudness: true
  loudness_min: 0.5
  loudness_max: 1.5

inference:
  num_overlap: {{num_overlap}}
  batch_size: 8

model: htdemucs

htdemucs:  # see demucs/htdemucs.py for a detailed description
  # Channels
  channels: 6
  channels_time:
  growth: 2
  # STFT
  num_subbands: 1
  nfft: 512
  wiener_iters: 0
  end_iters: 0
  wiener_residual: false
  cac: true
  # Main structure
  depth: 3
  rewrite: true
  # Frequency Branch
  multi_freqs: []
  multi_freqs_depth: 3
  freq_emb: 0.2
  emb_scale: 10
  emb_smooth: true
  # Convolutions
  kernel_size: 8
  stride: 4
  time_stride: 2
  context: 1
  context_enc: 0
  # normalization
  norm_starts: 2
  norm_groups: 4
  # DConv residual branch
  dconv_mode: 3
  dconv_depth: 2
  dconv_comp: 4
  dconv_init: 1e-3
  # Before the Transformer
  bottom_channels: 16
  # CrossTransformer
  t_layers: 2
  t_hidden_scale: 4.0
  t_heads: 2
  t_dropout: 0.0
  t_layer_scale: True
  t_gelu: True
  t_emb: sin
  t_max_positions: 10000
  t_max_period: 10000.0
  t_weight_pos_embed: 1.0
  t_cape_mean_normalize: True
  t_cape_augment: True
  t_cape_glob_loc_scale: [5000.0, 1.0, 1.4]
  t_sin_random_shift: 0
  t_norm_in: True
  t_norm_in_group: False
  t_group_norm: False
  t_norm_first: True
  t_norm_out: True
  t_weight_decay: 0.0
  t_lr:
  t_sparse_self_attn: False
  t_sparse_cross_attn: False
  t_mask_type: diag
  t_mask_random_seed: 42
  t_sparse_attn_window: 400
  t_global_window: 100
  t_sparsity: 0.95
  t_auto_sparsity: False
  t_cross_first: False
  # Weight init
  rescale: 0.1
"""

DRUMSEP_CONFIG = f"""audio:
  chunk_size: {RATE} # samplerate * segment
  min_mean_abs: 0.000
  hop_length: 64

training:
  batch_size: 8
  gradient_accumulation_steps: 1
  grad_clip: 0
  segment: 1
  shift: 1
  samplerate: {RATE}
  channels: 2
  normalize: true
  instruments: ['kick', 'snare', 'cymbals', 'toms']
  target_instrument: null
  num_epochs: 1000
  num_steps: 1000
  optimizer: adam
  lr: 9.0e-05
  patience: 2
  reduce_factor: 0.95
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
  other_fix: false
  use_amp: false

augmentations:
  enable: true
  loudness: true
  loudness_min: 0.5
  loudness_max: 1.5

inference:
  num_overlap: 4
  batch_size: 8

model: hdemucs

hdemucs:  # see demucs/hdemucs.py for a detailed description
  channels: 8
  channels_time: null
  growth: 2
  nfft: 256
  wiener_iters: 0
  end_iters: 0
  wiener_residual: False
  cac: True
  depth: 4
  rewrite: True
  hybrid: True
  hybrid_old: False
  multi_freqs: []
  multi_freqs_depth: 3
  freq_emb: 0.2
  emb_scale: 10
  emb_smooth: True
  kernel_size: 8
  stride: 4
  time_stride: 2
  context: 1
  context_enc: 0
  norm_starts: 2
  norm_groups: 4
  dconv_mode: 1
  dconv_depth: 2
  dconv_comp: 4
  dconv_attn: 2
  dconv_lstm: 2
  dconv_init: 0.001
  rescale: 0.1
"""

DEMUCS_ONE_STEM_CONFIG = f"""audio:
  chunk_size: {RATE}
  min_mean_abs: 0.001

training:
  batch_size: 8
  segment: 1
  shift: 1
  samplerate: {RATE}
  channels: 1
  normalize: true
  instruments: ['vocals']
  target_instrument: null
  use_amp: true

inference:
  num_overlap: 4
  batch_size: 8

model: demucs

demucs:
  channels: 8
  growth: 2
  depth: 3
  rewrite: true
  lstm_layers: 1
  kernel_size: 8
  stride: 4
  context: 1
  gelu: true
  glu: true
  norm_starts: 2
  norm_groups: 4
  dconv_mode: 1
  dconv_depth: 2
  dconv_comp: 4
  dconv_attn: 2
  dconv_lstm: 2
  dconv_init: 1e-4
  normalize: true
  resample: true
  rescale: 0.1
"""


def _network(config_path: Path, seed: int):
    """ZFTurbo's network for the config, random weights, 1-D parameters perturbed."""
    import torch
    from utils.settings import get_model_from_config

    torch.manual_seed(seed)
    network, _ = get_model_from_config("htdemucs", str(config_path))
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.2 * torch.randn_like(parameter))
    return network


def _separate(config_path: Path, checkpoint: Path, mix: np.ndarray) -> dict[str, np.ndarray]:
    stems = common.zfturbo_inference("htdemucs", config_path, checkpoint, mix)
    # One instrument: demix returns its (1, channels, time) array, which
    # zfturbo_inference files whole under the instrument's name.
    return {name: value[0] if value.ndim == 3 else value for name, value in stems.items()}


def make_htdemucs(folder: Path) -> None:
    import torch

    config_path = folder / "config.yaml"
    config_path.write_text(HTDEMUCS_CONFIG.format(num_overlap=2))
    network = _network(config_path, seed=20240601)
    checkpoint = folder / "model_vocals_htdemucs_sdr_8.78.ckpt"
    torch.save(network.state_dict(), checkpoint)

    mix = common.mixture(SECONDS, RATE, seed=21)
    common.write_wav(folder / "mixture.wav", mix, RATE)
    stems = _separate(config_path, checkpoint, mix)
    common.save_expected(folder, stems, model_type="htdemucs", checkpoint=checkpoint.name,
                         seconds=SECONDS, sample_rate=RATE, num_overlap=2,
                         also="stems_num_overlap_4: the same with inference.num_overlap 4")

    # The same model with num_overlap 4 (its config outside the fixture folder).
    with tempfile.TemporaryDirectory() as scratch:
        other = Path(scratch) / "config.yaml"
        other.write_text(HTDEMUCS_CONFIG.format(num_overlap=4))
        four = _separate(other, checkpoint, mix)
    with np.load(folder / "expected.npz") as data:
        saved = {key: data[key] for key in data.files}
    names = [str(name) for name in saved["names"]]
    saved["stems_num_overlap_4"] = np.stack([four[name] for name in names])
    np.savez_compressed(folder / "expected.npz", **saved)


def make_drumsep(folder: Path) -> None:
    import torch
    from demucs.states import serialize_model
    from omegaconf import OmegaConf

    config_path = folder / "config.yaml"
    config_path.write_text(DRUMSEP_CONFIG)
    network = _network(config_path, seed=20230301)
    training_args = OmegaConf.create({"model": "hdemucs", "dset": {"segment": 1},
                                      "epochs": 360, "seed": 42})
    package = serialize_model(network, training_args)  # half=True: a float16 state
    checkpoint = folder / "model_drumsep.th"
    torch.save(package, checkpoint)

    mix = common.mixture(SECONDS, RATE, seed=22)
    common.write_wav(folder / "mixture.wav", mix, RATE)
    stems = _separate(config_path, checkpoint, mix)
    common.save_expected(folder, stems, model_type="htdemucs", checkpoint=checkpoint.name,
                         seconds=SECONDS, sample_rate=RATE, klass=str(package["klass"]))


def make_demucs_one_stem(folder: Path) -> None:
    import torch

    config_path = folder / "config.yaml"
    config_path.write_text(DEMUCS_ONE_STEM_CONFIG)
    network = _network(config_path, seed=20210101)
    checkpoint = folder / "model_demucs_vocals.ckpt"
    torch.save(network.state_dict(), checkpoint)

    mix = common.mixture(SECONDS, RATE, channels=1, seed=23)
    common.write_wav(folder / "mixture.wav", mix, RATE)
    stems = _separate(config_path, checkpoint, mix)
    common.save_expected(folder, stems, model_type="htdemucs", checkpoint=checkpoint.name,
                         seconds=SECONDS, sample_rate=RATE, bare_array=True)


FIXTURES = {"htdemucs": make_htdemucs, "drumsep": make_drumsep,
            "htdemucs_v2_one_stem": make_demucs_one_stem}
