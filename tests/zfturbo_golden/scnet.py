"""Golden fixtures ``scnet``, ``scnet_masked`` and ``scnet_tran``: SCNet and its masked and
transformer variants as ZFTurbo runs them (``get_model_from_config`` builds
``SCNet(**config.model)`` / ``SCNet_Tran(**config.model)``, demix in its generic mode,
``inference.normalize`` around it).

Each config is ZFTurbo's published one made small: 8 kHz, ``nfft`` 256 / ``hop_size`` 64
(129 rows: the bands cut 23 + 51 + 55 rows, 23 + 13 + 4 after the first block, 6 rows at
the bottleneck), published band shares, strides, kernels and convolution depths (3, 2, 1),
small ``dims``. A 1.5 s track; each fixture stays under 700 KB.

- ``scnet`` (configs/config_vocals_scnet.yaml): vocals and other, ``dims`` [4, 8, 10, 12],
  4 dual-path layers (the frame axis to its FFT and back twice), ``normalize: true``,
  chunks of 4000 samples with ``num_overlap`` 4 and ``batch_size`` 8: 18 chunks, the
  reflect border, one reflect-padded and two zero-padded last chunks.
- ``scnet_masked`` (the Masked XL IHF's four stems; the published masked SCNet has SCNet's
  keys, so the config names its type in ``training.model_type``): ``dims`` [4, 8, 8, 8],
  2 dual-path layers, ``normalize: true``, chunks of 3700 with ``num_overlap`` 4 and
  ``batch_size`` 8 (19 chunks, two reflect- and two zero-padded last chunks).
- ``scnet_tran`` (configs/config_musdb18_scnet_tran.yaml): ``target_instrument: vocals`` of
  vocals and other (one network stem), ``dims`` [4, 8, 10, 12], 2 dual-path layers of 2
  heads of 8 with rotary dimension 8, ``tran_depth`` 1, ``normalize: false``, chunks of
  5000 with ``num_overlap`` 2 and ``batch_size`` 2 (7 chunks, one reflect- and one
  zero-padded last chunk).

Every chunk of each track's last batch reaches past the padded track by at least the fade
(a tenth of a chunk), so none keeps a fade-out either way, and the first chunk's fade-in
lies in the border that is cut: ZFTurbo's per-batch fade rule gives the per-chunk one.

The checkpoints are ``torch.save`` of the network's ``state_dict()`` under the published
names (release assets v1.0.8, v1.0.16, v1.0.14), which ZFTurbo's ``load_start_checkpoint``
loads strictly as they are. Random weights (ZFTurbo's initialisation, seeded); every
1-D parameter (norm scales and shifts, biases) and ``pos_embed_f`` perturbed so that none
is left at its initial value; SCNet-Tran's last layer scaled by 0.3, which keeps its vocals
and their complement well inside [-1, 1] (float32 files are clipped there).
"""

from __future__ import annotations

from pathlib import Path

from . import common

RATE = 8000
SECONDS = 1.5

SMALL_MODEL = """  audio_channels: 2
  nfft: 256
  hop_size: 64
  win_size: 256
  normalized: True
  band_SR: [0.175, 0.392, 0.433]
  band_stride: [1, 4, 16]
  band_kernel: [3, 4, 16]
  conv_depths: [3, 2, 1]
  compress: 4
  conv_kernel: 3
"""


def _config(*, chunk: int, sources: list[str], dims: list[int], model: str, training: str,
            inference: str) -> str:
    return f"""audio:
  chunk_size: {chunk}
  num_channels: 2
  sample_rate: {RATE}
  min_mean_abs: 0.000

model:
  sources: {sources}
  dims: {dims}
{SMALL_MODEL}{model}
training:
  batch_size: 10
  gradient_accumulation_steps: 1
  grad_clip: 0
{training}  lr: 5.0e-04
  patience: 2
  reduce_factor: 0.95
  num_epochs: 1000
  num_steps: 1000
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
  optimizer: adam
  other_fix: false
  use_amp: true

augmentations:
  enable: false
  mixup_probs: !!python/tuple
    - 0.2
    - 0.02

inference:
{inference}"""


FOUR = ["drums", "bass", "other", "vocals"]
CONFIGS = {
    "scnet": _config(
        chunk=4000, sources=["vocals", "other"], dims=[4, 8, 10, 12],
        model="  num_dplayer: 4\n  expand: 1\n",
        training="  instruments: ['vocals', 'other']\n  target_instrument: null\n",
        inference="  batch_size: 8\n  dim_t: 256\n  num_overlap: 4\n  normalize: true\n"),
    "scnet_masked": _config(
        chunk=3700, sources=FOUR, dims=[4, 8, 8, 8],
        model="  num_dplayer: 2\n  expand: 1\n",
        training=f"  model_type: scnet_masked\n  instruments: {FOUR}\n"
                 "  target_instrument: null\n",
        inference="  batch_size: 8\n  dim_t: 256\n  num_overlap: 4\n  normalize: true\n"),
    "scnet_tran": _config(
        chunk=5000, sources=["vocals"], dims=[4, 8, 10, 12],
        model=("  num_dplayer: 2\n  expand: 1\n  tran_rotary_embedding_dim: 8\n"
               "  tran_depth: 1\n  tran_heads: 2\n  tran_dim_head: 8\n"
               "  tran_attn_dropout: 0.0\n  tran_ff_dropout: 0.0\n  tran_flash_attn: False\n"),
        training="  instruments: ['vocals', 'other']\n  target_instrument: vocals\n",
        inference="  batch_size: 2\n  dim_t: 256\n  num_overlap: 2\n  normalize: false\n"),
}
CHECKPOINTS = {
    "scnet": "model_scnet_sdr_9.3244.ckpt",
    "scnet_masked": "model_scnet_masked_ep_156_sdr_8.8149.ckpt",
    "scnet_tran": "model_scnet_tran_sdr_8.9272.ckpt",
}
SEEDS = {"scnet": 31, "scnet_masked": 32, "scnet_tran": 33}


def _make(name: str, folder: Path) -> None:
    import torch
    from utils.settings import get_model_from_config

    config_path = folder / "config.yaml"
    config_path.write_text(CONFIGS[name])
    torch.manual_seed(SEEDS[name])
    network, _ = get_model_from_config(name, str(config_path))
    with torch.no_grad():
        for key, parameter in network.named_parameters():
            if parameter.ndim == 1 and not key.endswith("rotary_embed.freqs"):
                parameter.add_(0.2 * torch.randn_like(parameter))
            elif key == "pos_embed_f":
                parameter.add_(0.5 * torch.randn_like(parameter))
        for key, parameter in network.named_parameters():
            if name == "scnet_tran" and key.startswith(f"decoder.{len(network.decoder) - 1}.1."):
                parameter.mul_(0.3)  # the output (linear in the last layer) well below 1
    checkpoint = folder / CHECKPOINTS[name]
    torch.save(network.state_dict(), checkpoint)

    mix = common.mixture(SECONDS, RATE, seed=SEEDS[name])
    common.write_wav(folder / "mixture.wav", mix, RATE)
    stems = common.zfturbo_inference(name, config_path, checkpoint, mix)
    common.save_expected(folder, stems, model_type=name, checkpoint=checkpoint.name,
                         seconds=SECONDS, sample_rate=RATE)


def _maker(name: str):
    return lambda folder: _make(name, folder)


FIXTURES = {name: _maker(name) for name in CONFIGS}
