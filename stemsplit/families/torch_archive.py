"""Reading ``torch.save`` files without executing pickled code: the zip archives of
torch >= 1.6, and the legacy (non-zip) format that ``torch.save(...,
_use_new_zipfile_serialization=False)`` and older torch wrote.

A checkpoint's pickle is never handed to :mod:`pickle`'s default machinery or to
``torch.load``: it is read here with an unpickler that resolves only a short allow-list of
globals (plain containers, ``fractions.Fraction``, ``collections.OrderedDict``, torch's
version string (read as a ``str``), and the
tensor rebuilding that this module implements itself from the archive's raw storage
records; in a legacy file, from the raw storage records that follow its pickles). A family
may add a resolver for names of its own (e.g. map its class references
to their dotted names without importing them). Any other global is refused before it is
called, so a malicious file executes nothing.

torch is imported inside the functions that need it; importing this module is cheap.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import struct
import sys
import zipfile
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelError, StemsplitError, UnsafeCheckpointError

GlobalResolver = Callable[[str, str], Any]
"""``resolve(module, name)``: a stand-in for that global, or None to refuse it."""

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


class ForbiddenGlobal(Exception):
    """The pickle asked for a global outside the allow-list (``name``: module.name)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


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
    """An unpickler that can only build plain data and tensors (and what ``resolve_global``
    allows: a family may map its own class references to plain names).

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
        resolve_global: GlobalResolver | None = None,
    ) -> None:
        super().__init__(file, encoding="utf-8")
        self._resolve_global = resolve_global
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
        if module == "torch.torch_version" and name == "TorchVersion":
            # torch.__version__, a str subclass (Apollo's serialize() stores it): a plain str
            return str
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module == "torch._utils" and name in _TORCH_UTILS:
            return _TORCH_UTILS[name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if self._resolve_global is not None:
            found = self._resolve_global(module, name)
            if found is not None:
                return found
        raise ForbiddenGlobal(f"{module}.{name}")

    def persistent_load(self, saved_id: Any) -> Any:
        if self._read_storage is None:
            raise pickle.UnpicklingError("no tensor storage in a plain pickle")
        # zip archives: ('storage', type, key, location, numel); the legacy format adds
        # view_metadata: None, or (view_key, offset, numel) of a view into the storage.
        if (
            not isinstance(saved_id, tuple)
            or len(saved_id) not in (5, 6)
            or saved_id[0] not in ("storage", b"storage")
        ):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r:.80}")
        _, storage_type, key, _location, numel = saved_id[:5]
        view = saved_id[5] if len(saved_id) == 6 else None
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise pickle.UnpicklingError("invalid storage record")
        if type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError("invalid storage size")
        if key not in self._storages:
            self._storages[key] = self._load_storage(storage_type.dtype_name, key, numel)
        storage = self._storages[key]
        if storage.flat.dtype != _dtype(storage_type.dtype_name):
            raise pickle.UnpicklingError(f"storage {key!r} is read as two types")
        if view is None:
            return storage
        return self._view(storage, view)

    def _view(self, storage: _Storage, view: Any) -> _Storage:
        if (not isinstance(view, tuple) or len(view) != 3 or not isinstance(view[0], str)
                or not all(type(n) is int and n >= 0 for n in view[1:])):
            raise pickle.UnpicklingError(f"invalid storage view {view!r:.80}")
        view_key, offset, numel = view
        if offset + numel > storage.flat.numel():
            raise pickle.UnpicklingError("storage view lies outside its storage")
        view_key = "view:" + view_key
        if view_key not in self._storages:
            self._storages[view_key] = _Storage(storage.flat[offset : offset + numel])
        return self._storages[view_key]

    def _load_storage(self, dtype_name: str, key: str, numel: int) -> _Storage:
        import torch

        assert self._read_storage is not None
        dtype = _dtype(dtype_name)
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


def _dtype(dtype_name: str) -> Any:
    import torch

    return getattr(torch, dtype_name)


def _byteswapped(flat: Any) -> Any:
    import numpy
    import torch

    as_bytes = flat.view(torch.uint8).numpy().reshape(-1, flat.element_size())
    swapped = numpy.ascontiguousarray(as_bytes[:, ::-1]).reshape(-1)
    return torch.from_numpy(swapped).view(flat.dtype)


class TorchArchive:
    """The records of a ``torch.save`` zip archive: ``<prefix>/data.pkl``, ``<prefix>/data/<key>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ModelError(
                f"{path}: not a torch checkpoint (corrupt, truncated, or the tar format "
                "of torch before 0.4, which stemsplit does not read)"
            ) from None
        names = self._zip.namelist()
        if any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in names):
            raise ModelError(f"{path}: a TorchScript archive, not a checkpoint of weights")
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


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The first pickle of a legacy ``torch.save`` file."""
LEGACY_PROTOCOL = 1001


class _StorageCensus(RestrictedUnpickler):
    """A first pass over a legacy file's pickle: each storage's dtype and size, with tensors
    built on the meta device (no data is read: in a legacy file it follows the pickle)."""

    def __init__(self, file: Any, resolve_global: GlobalResolver | None) -> None:
        super().__init__(file, lambda key: None, False, resolve_global)
        self.roots: dict[str, tuple[str, int]] = {}

    def _load_storage(self, dtype_name: str, key: str, numel: int) -> _Storage:
        import torch

        self.roots[key] = (dtype_name, numel)
        return _Storage(torch.empty(numel, dtype=_dtype(dtype_name), device="meta"))


class LegacyTorchFile:
    """A legacy (non-zip) ``torch.save`` file: the pickles of a magic number, a protocol
    version and the saver's system information, the object's pickle (its storages as
    persistent ids), the pickled list of storage keys, then for each key a little-endian
    int64 element count and the storage's bytes, little-endian.

    ``load`` reads the object's pickle twice with the restricted unpickler: once to learn
    each storage's dtype and size (tensors on the meta device), so that the records after
    it can be located, then to build the tensors from those records."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, resolve_global: GlobalResolver | None = None) -> Any:
        with open(self.path, "rb") as file:
            if _plain_load(file) != LEGACY_MAGIC:
                raise pickle.UnpicklingError("not a torch file (wrong magic number)")
            protocol = _plain_load(file)
            if protocol != LEGACY_PROTOCOL:
                raise pickle.UnpicklingError(f"unknown legacy torch protocol {protocol!r:.20}")
            if not isinstance(_plain_load(file), dict):
                raise pickle.UnpicklingError("invalid system information record")
            start = file.tell()
            census = _StorageCensus(file, resolve_global)
            census.load()
            keys = _plain_load(file)
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise pickle.UnpicklingError("invalid storage key list")
            if set(keys) != set(census.roots) or len(keys) != len(census.roots):
                raise pickle.UnpicklingError("the storage key list does not match the pickle")
            places = self._locate(file, keys, census.roots)
        with open(self.path, "rb") as file, open(self.path, "rb") as data:
            def read_storage(key: str) -> bytes | None:
                if key not in places:
                    return None
                offset, size = places[key]
                data.seek(offset)
                return data.read(size)

            file.seek(start)
            # The records are little-endian whatever the saving machine was.
            return RestrictedUnpickler(file, read_storage, sys.byteorder == "big",
                                       resolve_global).load()

    def _locate(self, file: Any, keys: list[str],
                roots: dict[str, tuple[str, int]]) -> dict[str, tuple[int, int]]:
        """Each storage record's (offset, size in bytes), checked against the census."""
        import torch

        places = {}
        end = self.path.stat().st_size
        for key in keys:
            dtype_name, numel = roots[key]
            header = file.read(8)
            if len(header) != 8:
                raise pickle.UnpicklingError(f"storage record {key!r} is missing")
            (count,) = struct.unpack("<q", header)
            if count != numel:
                raise pickle.UnpicklingError(f"storage record {key!r} has {count} elements, "
                                             f"the pickle says {numel}")
            size = numel * torch.empty((), dtype=_dtype(dtype_name)).element_size()
            offset = file.tell()
            if offset + size > end:
                raise pickle.UnpicklingError(f"storage record {key!r} is truncated")
            places[key] = (offset, size)
            file.seek(size, io.SEEK_CUR)
        return places


def _plain_load(file: Any) -> Any:
    """One pickle of plain data (no globals beyond the allow-list, no storages)."""
    return RestrictedUnpickler(file).load()


def is_legacy_torch_file(path: Path) -> bool:
    """Whether ``path`` starts with a legacy ``torch.save`` file's magic number (read with
    pickletools, which decodes opcodes and builds nothing)."""
    try:
        with open(path, "rb") as file:
            head = file.read(64)
    except OSError:
        return False
    if not head.startswith(b"\x80"):
        return False
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(head)):
            if opcode.name in ("LONG1", "LONG4"):
                return argument == LEGACY_MAGIC
            if opcode.name != "PROTO":
                return False
    except Exception:  # truncated or not a pickle
        return False
    return False


def restricted_loads(
    data: bytes,
    read_storage: Callable[[str], bytes | None] | None = None,
    big_endian: bool = False,
    resolve_global: GlobalResolver | None = None,
) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (errors propagate as raised)."""
    return RestrictedUnpickler(io.BytesIO(data), read_storage, big_endian,
                               resolve_global).load()


def load_torch_archive(path: Path, resolve_global: GlobalResolver | None = None,
                       hint: str = "") -> Any:
    """The object a ``torch.save`` file holds (a zip archive, or the legacy format), read
    without executing pickled code.

    A global outside the allow-list is UnsafeCheckpointError (``hint``: what to use
    instead); a damaged file is ModelError. Exceptions ``resolve_global`` raises that are
    StemsplitErrors pass through."""
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    if not zipfile.is_zipfile(path) and is_legacy_torch_file(path):
        return _refusing(path, hint, lambda: LegacyTorchFile(path).load(resolve_global))
    try:
        archive = TorchArchive(path)
    except OSError as error:
        raise ModelError(f"{path}: unreadable checkpoint ({one_line(error)})") from None
    try:
        return _refusing(path, hint, lambda: restricted_loads(
            archive.read(archive.prefix + "data.pkl"), archive.storage_record,
            archive.big_endian(), resolve_global))
    finally:
        archive.close()


def _refusing(path: Path, hint: str, load: Callable[[], Any]) -> Any:
    """``load()``, its refusals and failures as stemsplit's errors about ``path``."""
    try:
        return load()
    except ForbiddenGlobal as forbidden:
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the pickle asks for '{forbidden.name}', "
            "which a weights file has no reason to use",
            hint=hint or "this file may be malicious; get the weights from their publisher",
        ) from None
    except StemsplitError:
        raise
    except Exception as error:  # UnpicklingError, EOFError, zlib/zip errors, RuntimeError...
        raise ModelError(f"{path}: corrupt checkpoint ({one_line(error)})") from None


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


