"""Golden fixture ``apollo``: JusperLee's Apollo (LQ MP3 restoration) as ZFTurbo runs it.

The config is ZFTurbo's ``configs/config_apollo.yaml`` made small: 16 kHz (``sr`` 16000 and
``win`` 20 ms: a 320-sample window, 161 bins in 79 bands of 2 and one of 3; the published
44.1 kHz gives 882, 442, 79 x 5 + 47), ``feature_dim`` 16 (8 heads of 2), 2 layers, chunks of
8000 samples with ``num_overlap`` 4 (and the published ``inference.batch_size`` 4: every
chunk of this track's last batch ends past the track, so ZFTurbo's per-batch fade rule gives
the per-chunk one). A 1.55 s track: 19 chunks, the reflect border, a reflect-padded and two
zero-padded last chunks.

The checkpoint is ``pytorch_model.bin`` as JusperLee publishes it: ``torch.save`` of the
network's ``serialize()`` (``model_name``, ``state_dict`` with unprefixed keys and the
rotary tables, ``model_args``, ``infos`` holding ``torch.__version__``, a pickled
``torch.torch_version.TorchVersion``), which ZFTurbo's ``load_start_checkpoint`` unwraps
(``state_dict``) and loads strictly. Random weights; the 1-D parameters (norm scales,
biases) are perturbed so that none is left at its initial value.
"""

from __future__ import annotations

from pathlib import Path

from . import common

RATE = 16000
SECONDS = 1.55

CONFIG = f"""audio:
  chunk_size: 8000
  num_channels: 2
  sample_rate: {RATE}
  min_mean_abs: 0.0

model:
  sr: {RATE}
  win: 20
  feature_dim: 16
  layer: 2

training:
  instruments: ['restored', 'addition']
  target_instrument: 'restored'
  batch_size: 2
  num_steps: 1000
  num_epochs: 1000
  optimizer: 'prodigy'
  lr: 1.0
  patience: 2
  reduce_factor: 0.95
  coarse_loss_clip: true
  grad_clip: 0
  q: 0.95
  use_amp: true

augmentations:
  enable: false # enable or disable all augmentations (to fast disable if needed)

inference:
  batch_size: 4
  num_overlap: 4
"""


def make(folder: Path) -> None:
    import torch
    from utils.settings import get_model_from_config

    config_path = folder / "config.yaml"
    config_path.write_text(CONFIG)
    torch.manual_seed(20240913)
    network, _ = get_model_from_config("apollo", str(config_path))
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.2 * torch.randn_like(parameter))
    checkpoint = folder / "pytorch_model.bin"
    torch.save(network.serialize(), checkpoint)

    mix = common.mixture(SECONDS, RATE, seed=11)
    common.write_wav(folder / "mixture.wav", mix, RATE)
    stems = common.zfturbo_inference("apollo", config_path, checkpoint, mix)
    common.save_expected(folder, stems, model_type="apollo", checkpoint=checkpoint.name,
                         seconds=SECONDS, sample_rate=RATE)


FIXTURES = {"apollo": make}
