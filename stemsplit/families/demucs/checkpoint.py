"""Reading a demucs checkpoint file into plain data, without building a model.

Two on-disk formats exist for the same package ``{klass, args, kwargs, state}``:

* ``<sig>.safetensors`` (the Hugging Face repos): the tensors, fp16, plus string metadata
  ``klass`` (dotted class name), ``args`` and ``kwargs`` (JSON; fractions written as
  ``{"_type": "fraction", "numerator": n, "denominator": d}``), and for diffq-packed
  states (mdx_q, mdx_extra_q) a JSON ``structure`` that nests the file's tensors.
* ``<sig>-<sha8>.th`` (the original downloads): a ``torch.save`` zip archive whose pickle
  holds ``{'klass': <class reference>, 'args', 'kwargs', 'state', 'training_args', 'metrics'}``.

A ``.th`` pickle is read with ``stemsplit.families.torch_archive``'s restricted unpickler (nothing
pickled is executed); class references under ``demucs.`` become their dotted names, without
importing anything (so do diffq's quantizer class references). A diffq-packed state is
checked for its layout here and unpacked by ``diffq`` once the network is built.

Bag files (``<name>.yaml``) are read with ``yaml.safe_load``.

torch is imported inside the functions that need it; importing this module is cheap.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ...errors import ModelError
from ..torch_archive import load_torch_archive, one_line
from .diffq import (CorruptState, QuantizedState, is_quantized, parse_state,
                           unflatten_structure)

CHECKPOINT_SUFFIXES = (".safetensors", ".th")


@dataclass
class CheckpointPackage:
    """One network of a bag: its class, constructor arguments and weights, as stored."""

    klass: str  # dotted name, e.g. 'demucs.htdemucs.HTDemucs'
    args: list
    kwargs: dict
    state: dict  # parameter/buffer name -> torch.Tensor (dtype as stored, usually fp16)
    source: Path
    quantized: QuantizedState | None = None  # a diffq-packed state (``state`` is then empty)

    @property
    def class_name(self) -> str:
        """The last component of ``klass`` ('HTDemucs')."""
        return self.klass.rsplit(".", 1)[-1]


@dataclass
class BagDescription:
    """The content of a ``<name>.yaml`` bag file."""

    members: list[str]
    weights: list[list[float]] | None
    segment: float | None


def read_checkpoint(path: Path | str) -> CheckpointPackage:
    """Read a ``.safetensors`` or ``.th`` checkpoint, chosen by the file's suffix."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors_member(path)
    if path.suffix == ".th":
        return read_legacy_th(path)
    raise ModelError(
        f"{path}: not a checkpoint stemsplit can read (expected .safetensors or .th)"
    )


# --------------------------------------------------------------------------- safetensors


def _decode_json(value: Any) -> Any:
    """JSON as written by demucs' HF export, with fractions turned back into Fraction."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(int(value["numerator"]), int(value["denominator"]))
        return {key: _decode_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode_json(item) for item in value]
    return value


def _metadata_json(path: Path, metadata: dict[str, str], key: str, kind: type) -> Any:
    if key not in metadata:
        raise ModelError(
            f"{path}: not a demucs checkpoint (its safetensors metadata has no '{key}')"
        )
    try:
        value = _decode_json(json.loads(metadata[key]))
    except (ValueError, TypeError, KeyError, ZeroDivisionError) as error:
        raise ModelError(f"{path}: unreadable '{key}' in the safetensors metadata ({error})") from None
    if not isinstance(value, kind):
        raise ModelError(
            f"{path}: '{key}' in the safetensors metadata is a {type(value).__name__}, "
            f"expected a {kind.__name__}"
        )
    return value


def read_safetensors_member(path: Path | str) -> CheckpointPackage:
    """Read one bag member from a demucs ``<sig>.safetensors`` file.

    The tensors are returned as stored (fp16 for the published files).
    """
    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as file:
            metadata = dict(file.metadata() or {})
            state = {key: file.get_tensor(key) for key in file.keys()}
    except ModelError:
        raise
    except FileNotFoundError:
        raise ModelError(f"{path}: checkpoint file not found") from None
    except Exception as error:  # safetensors raises its own SafetensorError, OSError, ...
        raise ModelError(f"{path}: unreadable safetensors file ({one_line(error)})") from None
    klass = metadata.get("klass")
    if not isinstance(klass, str) or not _DOTTED_NAME.fullmatch(klass):
        raise ModelError(
            f"{path}: not a demucs checkpoint (its safetensors metadata has no valid 'klass')"
        )
    args = _metadata_json(path, metadata, "args", list)
    kwargs = _metadata_json(path, metadata, "kwargs", dict)
    if "structure" in metadata:
        try:
            structure = json.loads(metadata["structure"])
        except ValueError as error:
            raise ModelError(f"{path}: unreadable 'structure' in the safetensors metadata "
                             f"({error})") from None
        try:
            nested = unflatten_structure(structure, state)
        except CorruptState as error:
            raise _corrupt(path, error) from None
        if not is_quantized(nested):
            raise ModelError(f"{path}: its safetensors 'structure' is not a diffq-quantized state")
        return CheckpointPackage(klass=klass, args=args, kwargs=kwargs, state={}, source=path,
                                 quantized=_parse_quantized(path, nested))
    return CheckpointPackage(klass=klass, args=args, kwargs=kwargs, state=state, source=path)


def _corrupt(path: Path, error: ModelError) -> ModelError:
    return ModelError(f"{path}: corrupt diffq-quantized state: {error.message}",
                      hint=error.hint or "the file is damaged; fetch it again")


def _parse_quantized(path: Path, state: dict) -> QuantizedState:
    try:
        return parse_state(state)
    except CorruptState as error:
        raise _corrupt(path, error) from None
    except ModelError as error:
        raise ModelError(f"{path}: {error.message}", hint=error.hint) from None


# --------------------------------------------------------------------------- legacy .th

_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _demucs_global(module: str, name: str) -> Any:
    """demucs' class references (and diffq's, in a quantized state's meta) as dotted names."""
    if (module.split(".", 1)[0] in ("demucs", "diffq")) and _DOTTED_NAME.fullmatch(
            f"{module}.{name}"):
        return f"{module}.{name}"  # a reference to a class: its name only, nothing imported
    return None


def read_legacy_th(path: Path | str) -> CheckpointPackage:
    """Read a demucs ``.th`` package without executing any pickled code."""
    path = Path(path)
    package = load_torch_archive(
        path, _demucs_global,
        hint="this file may be malicious; use the .safetensors weights from Hugging Face")
    return _package_from_pickle(path, package)


def _package_from_pickle(path: Path, package: Any) -> CheckpointPackage:
    import torch

    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= set(package):
        raise ModelError(
            f"{path}: not a demucs checkpoint (expected a dict with klass, args, kwargs and state)"
        )
    klass = package["klass"]
    if not isinstance(klass, str):
        raise ModelError(f"{path}: not a demucs checkpoint (its klass is not a demucs class)")
    args, kwargs, state = package["args"], package["kwargs"], package["state"]
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ModelError(f"{path}: not a demucs checkpoint (invalid args or kwargs)")
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a demucs checkpoint (its state is not a dict)")
    if is_quantized(state):
        return CheckpointPackage(klass=klass, args=list(args), kwargs=dict(kwargs), state={},
                                 source=path, quantized=_parse_quantized(path, state))
    bad = [key for key, value in state.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise ModelError(f"{path}: not a demucs checkpoint (state entry {bad[0]!r} is not a tensor)")
    return CheckpointPackage(
        klass=klass,
        args=list(args),
        kwargs=dict(kwargs),
        state=dict(state),
        source=path,
    )


# --------------------------------------------------------------------------- bag files


def read_bag_yaml(path: Path | str) -> BagDescription:
    """Read a demucs bag file: ``models: [sig, ...]``, optional ``weights``, ``segment``."""
    import yaml

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as file:
            document = yaml.safe_load(file)
    except FileNotFoundError:
        raise ModelError(f"{path}: bag file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ModelError(f"{path}: unreadable bag file ({one_line(error)})") from None
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise ModelError(f"{path}: not a demucs bag file (no 'models' list)")
    members = document["models"]
    if not members or not all(isinstance(sig, (str, int)) and not isinstance(sig, bool) for sig in members):
        raise ModelError(f"{path}: 'models' must be a non-empty list of signatures")
    members = [str(sig) for sig in members]

    weights = document.get("weights")
    if weights is not None:
        if not isinstance(weights, list) or len(weights) != len(members):
            raise ModelError(f"{path}: 'weights' must have one row per model ({len(members)})")
        rows = []
        for row in weights:
            if not isinstance(row, list) or not row or not all(_is_number(value) for value in row):
                raise ModelError(f"{path}: each row of 'weights' must be a list of numbers")
            rows.append([float(value) for value in row])
        if len({len(row) for row in rows}) != 1:
            raise ModelError(f"{path}: the rows of 'weights' differ in length")
        weights = rows

    segment = document.get("segment")
    if segment is not None:
        if not _is_number(segment) or segment <= 0:
            raise ModelError(f"{path}: 'segment' must be a positive number of seconds")
        segment = float(segment)
    return BagDescription(members=members, weights=weights, segment=segment)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


