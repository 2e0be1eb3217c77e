"""Reading a demucs checkpoint file into plain data, without building a model.

Two on-disk formats exist for the same package ``{klass, args, kwargs, state}``:

* ``<sig>.safetensors`` (the Hugging Face repos): the tensors, fp16, plus string metadata
  ``klass`` (dotted class name), ``args`` and ``kwargs`` (JSON; fractions written as
  ``{"_type": "fraction", "numerator": n, "denominator": d}``), and for diffq-packed
  states a JSON ``structure``.
* ``<sig>-<sha8>.th`` (the original downloads): a ``torch.save`` zip archive whose pickle
  holds ``{'klass': <class reference>, 'args', 'kwargs', 'state', 'training_args', 'metrics'}``.

A ``.th`` pickle is never handed to :mod:`pickle`'s default machinery or to ``torch.load``:
it is read here with an unpickler that resolves only a short allow-list of globals (plain
containers, ``fractions.Fraction``, tensor rebuilding that this module implements itself) and
turns class references under ``demucs.`` into their dotted name, without importing anything.
Any other global is refused before it is called, so a malicious file executes nothing.

Bag files (``<name>.yaml``) are read with ``yaml.safe_load``.

torch is imported inside the functions that need it; importing this module is cheap.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from .errors import ModelError, UnsafeCheckpointError

DIFFQ_MESSAGE = "diffq-quantized weights are not supported yet"
DIFFQ_HINT = "use the unquantized model instead (mdx for mdx_q, mdx_extra for mdx_extra_q)"

CHECKPOINT_SUFFIXES = (".safetensors", ".th")


@dataclass
class CheckpointPackage:
    """One network of a bag: its class, constructor arguments and weights, as stored."""

    klass: str  # dotted name, e.g. 'demucs.htdemucs.HTDemucs'
    args: list
    kwargs: dict
    state: dict  # parameter/buffer name -> torch.Tensor (dtype as stored, usually fp16)
    source: Path

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
            if "structure" in metadata:
                raise ModelError(f"{path}: {DIFFQ_MESSAGE}", hint=DIFFQ_HINT)
            state = {key: file.get_tensor(key) for key in file.keys()}
    except ModelError:
        raise
    except FileNotFoundError:
        raise ModelError(f"{path}: checkpoint file not found") from None
    except Exception as error:  # safetensors raises its own SafetensorError, OSError, ...
        raise ModelError(f"{path}: unreadable safetensors file ({_one_line(error)})") from None
    klass = metadata.get("klass")
    if not isinstance(klass, str) or not _DOTTED_NAME.fullmatch(klass):
        raise ModelError(
            f"{path}: not a demucs checkpoint (its safetensors metadata has no valid 'klass')"
        )
    args = _metadata_json(path, metadata, "args", list)
    kwargs = _metadata_json(path, metadata, "kwargs", dict)
    return CheckpointPackage(klass=klass, args=args, kwargs=kwargs, state=state, source=path)


# --------------------------------------------------------------------------- legacy .th

_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

# torch storage class names -> torch dtype attribute names.
_STORAGE_DTYPES = {
    "HalfStorage": "float16",
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}

_SAFE_BUILTINS = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "int": int,
    "float": float,
    "complex": complex,
    "bool": bool,
    "str": str,
    "bytes": bytes,
    "bytearray": bytearray,
    "slice": slice,
}


class _ForbiddenGlobal(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _DiffqGlobal(Exception):
    pass


class _StorageType:
    """Stands in for ``torch.HalfStorage`` and friends: only carries the dtype name."""

    def __init__(self, dtype_name: str) -> None:
        self.dtype_name = dtype_name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("storage types cannot be called")


class _Storage:
    """One storage record of the archive: a flat 1-D tensor of the stored dtype."""

    def __init__(self, flat: Any) -> None:
        self.flat = flat


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin-1 text")
    return text.encode("latin-1", errors="strict")


def _check_ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        type(item) is int and item >= 0 for item in value
    ):
        raise pickle.UnpicklingError(f"invalid tensor {what}: {value!r}")
    return tuple(value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> Any:
    if not isinstance(storage, _Storage) or type(storage_offset) is not int or storage_offset < 0:
        raise pickle.UnpicklingError("invalid tensor record")
    size = _check_ints(size, "size")
    stride = _check_ints(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError("tensor size and stride disagree")
    if all(size):  # a non-empty tensor must lie inside its storage
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.flat.numel():
            raise pickle.UnpicklingError("tensor lies outside its storage")
    return storage.flat.as_strided(size, stride, storage_offset)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> Any:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None) -> Any:
    import torch

    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("invalid parameter record")
    return data


_TORCH_UTILS = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only build plain data, tensors and demucs class names.

    ``find_class`` is the only way a pickle reaches a Python object by name (GLOBAL,
    STACK_GLOBAL, INST, OBJ and EXT all go through it), so refusing there refuses before
    anything is called. Tensors are rebuilt by this module from the archive's raw storage
    records (``persistent_load``), not by torch's own loader.
    """

    def __init__(
        self,
        file: Any,
        read_storage: Callable[[str], bytes | None] | None = None,
        big_endian: bool = False,
    ) -> None:
        super().__init__(file, encoding="utf-8")
        self._read_storage = read_storage
        self._big_endian = big_endian
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 pickles spell some modules the Python 2 way ('__builtin__', 'commands'
        # for subprocess): translate as pickle itself does, then judge the real name.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if module == "builtins" and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "fractions" and name == "Fraction":
            return Fraction
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module == "torch._utils" and name in _TORCH_UTILS:
            return _TORCH_UTILS[name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "diffq" or module.startswith("diffq."):
            raise _DiffqGlobal()
        if (module == "demucs" or module.startswith("demucs.")) and _DOTTED_NAME.fullmatch(
            f"{module}.{name}"
        ):
            # A reference to a demucs class: keep its name only, never import it.
            return f"{module}.{name}"
        raise _ForbiddenGlobal(f"{module}.{name}")

    def persistent_load(self, saved_id: Any) -> Any:
        if self._read_storage is None:
            raise pickle.UnpicklingError("no tensor storage in a plain pickle")
        if (
            not isinstance(saved_id, tuple)
            or len(saved_id) != 5
            or saved_id[0] not in ("storage", b"storage")
        ):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r:.80}")
        _, storage_type, key, _location, numel = saved_id
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise pickle.UnpicklingError("invalid storage record")
        if type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError("invalid storage size")
        if key not in self._storages:
            self._storages[key] = self._load_storage(storage_type.dtype_name, key, numel)
        return self._storages[key]

    def _load_storage(self, dtype_name: str, key: str, numel: int) -> _Storage:
        import torch

        assert self._read_storage is not None
        dtype = getattr(torch, dtype_name)
        raw = self._read_storage(key)
        if raw is None:
            raise pickle.UnpicklingError(f"storage record {key!r} is missing from the archive")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) < numel * itemsize:
            raise pickle.UnpicklingError(f"storage record {key!r} is truncated")
        data = bytearray(raw[: numel * itemsize])
        if numel == 0:
            return _Storage(torch.empty(0, dtype=dtype))
        flat = torch.frombuffer(data, dtype=dtype)
        if self._big_endian and itemsize > 1:
            flat = _byteswapped(flat)
        return _Storage(flat)


def _byteswapped(flat: Any) -> Any:
    import numpy
    import torch

    as_bytes = flat.view(torch.uint8).numpy().reshape(-1, flat.element_size())
    swapped = numpy.ascontiguousarray(as_bytes[:, ::-1]).reshape(-1)
    return torch.from_numpy(swapped).view(flat.dtype)


class _TorchArchive:
    """The records of a ``torch.save`` zip archive: ``<prefix>/data.pkl``, ``<prefix>/data/<key>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ModelError(
                f"{path}: not a torch checkpoint archive (corrupt, truncated, or an old "
                "pre-zip torch format that stemsplit does not read)"
            ) from None
        names = self._zip.namelist()
        if any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in names):
            raise ModelError(f"{path}: a TorchScript archive, not a demucs checkpoint")
        pickles = [name for name in names if name == "data.pkl" or name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ModelError(f"{path}: not a torch checkpoint archive (no single data.pkl)")
        self.prefix = pickles[0][: -len("data.pkl")]
        self.data_prefix = self.prefix + "data/"
        self.names = set(names)

    def close(self) -> None:
        self._zip.close()

    def read(self, name: str) -> bytes:
        return self._zip.read(name)

    def big_endian(self) -> bool:
        name = self.prefix + "byteorder"
        if name not in self.names:
            return False  # archives from before the record existed were little-endian
        order = self._zip.read(name).strip()
        if order not in (b"little", b"big"):
            raise ModelError(f"{self.path}: unknown byte order {order[:20]!r}")
        return order == b"big" and sys.byteorder == "little"

    def storage_record(self, key: str) -> bytes | None:
        """The raw bytes of storage ``key``, or None when the archive lacks it."""
        name = self.data_prefix + key
        if "/" in key or name not in self.names:
            return None
        return self._zip.read(name)


def restricted_loads(
    data: bytes,
    read_storage: Callable[[str], bytes | None] | None = None,
    big_endian: bool = False,
) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (errors propagate as raised)."""
    return RestrictedUnpickler(io.BytesIO(data), read_storage, big_endian).load()


def read_legacy_th(path: Path | str) -> CheckpointPackage:
    """Read a demucs ``.th`` package without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    try:
        archive = _TorchArchive(path)
    except OSError as error:
        raise ModelError(f"{path}: unreadable checkpoint ({_one_line(error)})") from None
    try:
        try:
            pickled = archive.read(archive.prefix + "data.pkl")
            package = restricted_loads(pickled, archive.storage_record, archive.big_endian())
        except _ForbiddenGlobal as forbidden:
            raise UnsafeCheckpointError(
                f"{path}: refused to load: the pickle asks for '{forbidden.name}', "
                "which a weights file has no reason to use",
                hint="this file may be malicious; use the .safetensors weights from Hugging Face",
            ) from None
        except _DiffqGlobal:
            raise ModelError(f"{path}: {DIFFQ_MESSAGE}", hint=DIFFQ_HINT) from None
        except ModelError:
            raise
        except Exception as error:  # UnpicklingError, EOFError, zlib/zip errors, RuntimeError...
            raise ModelError(f"{path}: corrupt checkpoint ({_one_line(error)})") from None
    finally:
        archive.close()
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
    if state.get("__quantized"):
        raise ModelError(f"{path}: {DIFFQ_MESSAGE}", hint=DIFFQ_HINT)
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
        raise ModelError(f"{path}: unreadable bag file ({_one_line(error)})") from None
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


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
