"""diffq-quantized demucs states (mdx_q, mdx_extra_q), unpacked with our own code.

The quantized checkpoints were written by demucs' ``get_state(model, quantizer)``: the state is
``quantizer.get_quantized_state()`` of diffq 0.2 plus ``'__quantized': True``::

    {'quantized': [entry per quantized parameter],
     'float16':   [fp16 tensor per small parameter, if the quantizer had float16=True],
     'others':    [tensor per small parameter, as trained (fp32)],
     'meta': {'init_kwargs': {...}, 'klass': <quantizer class>, 'packed': bool,
              'torch_pack': bool},
     '__quantized': True}

Nothing in it names a parameter: the lists follow the order in which the quantizer walked the
model (``named_modules()``, then each module's own ``named_parameters()``), a parameter being
quantized when it has more than ``min_size * 2**20 // 4`` elements and matches no ``exclude``
pattern, and a parameter bound to two modules counting once (``detect_bound``). We walk our
network the same way; its module tree mirrors demucs' (tested).

An entry of ``DiffQuantizer`` (``group_size`` G; ``bits`` per group of G weights, whole):

* unpacked: ``(levels [groups, G] uint8/int16, (min, max), bits [groups] uint8)``;
* packed: ``(levels_by_bits, (min, max), packed_bits)``: ``levels_by_bits[b - 1]`` packs, in
  group order, the levels of the groups quantized over ``b`` bits (None when there are
  none), b = 1..14; ``packed_bits`` packs ``bits - min_bits``.

An entry of ``UniformQuantizer`` (fixed ``bits``): ``(levels, (min, max))``, packed or not.

Packing (diffq's ``bitpack``): the values are padded with zeros to a multiple of 2048 and cut
into lines of 2048 = 64 x 32; value ``line * 2048 + j * 32 + i`` has its bit ``k`` stored as bit
``j`` of the unsigned 64-bit word ``[line, k, i]`` of an int64 tensor ``[lines, nbits, 32]``.
With ``torch_pack`` the values are padded to a multiple of 16 and laid out as 16 rows of G:
value ``j * G + g`` has its bit ``k`` as bit ``j`` of the int16 word ``[k, g]`` of a tensor
``[nbits, G]``.

A parameter is then ``min + levels / (2**bits - 1) * (max - min)``, computed in float32 with
diffq's own order of operations, so that the weights are bit for bit the ones demucs runs.

In a Hugging Face ``.safetensors`` file the same nested state is flattened: its tensors are
the file's tensors, and metadata ``structure`` holds the nesting as JSON (``{"_tensor": key}``,
``{"_dict": [[key, node], ...]}``, ``{"_list": [...]}``, ``{"_tuple": [...]}``,
``{"_class": "module.Name"}``, plain JSON values). ``unflatten_structure`` rebuilds it; a
class is kept as its dotted name and never imported.

Only the standard library at import time; numpy and torch are imported by the functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any, Mapping

from ...errors import ModelError

DIFFQ_CLASS = "DiffQuantizer"
UNIFORM_CLASS = "UniformQuantizer"

# The arguments of diffq 0.2's quantizers that decide how a state unpacks, with their
# defaults (init_kwargs holds only the ones the trainer passed).
_DEFAULTS = {
    DIFFQ_CLASS: {"min_size": 0.01, "float16": False, "group_size": 1, "min_bits": 2,
                  "exclude": [], "detect_bound": True},
    UNIFORM_CLASS: {"min_size": 0.01, "float16": False, "bits": 8.0, "exclude": [],
                    "detect_bound": True},
}

_BITPACK_BLOCK = 32  # diffq.bitpack's block_size
_BITPACK_LINE = 64 * _BITPACK_BLOCK
_MAX_BITS = 15


class CorruptState(ModelError):
    """The quantized state does not have diffq's layout (or does not fit the network)."""


@dataclass(frozen=True)
class QuantizedState:
    """A diffq state, checked for its layout; ``restore`` turns it into weights."""

    quantizer: str  # DIFFQ_CLASS or UNIFORM_CLASS
    settings: Mapping[str, Any]  # _DEFAULTS' keys, filled in
    packed: bool
    torch_pack: bool
    quantized: tuple
    float16: tuple
    others: tuple


def is_quantized(state: Any) -> bool:
    """Whether a checkpoint's ``state`` is a diffq state (demucs marks it ``__quantized``)."""
    return isinstance(state, dict) and bool(state.get("__quantized"))


# --------------------------------------------------------------------------- safetensors


def unflatten_structure(structure: Any, tensors: Mapping[str, Any]) -> Any:
    """The nested state a ``structure`` JSON describes, with the file's ``tensors``."""
    def build(node: Any, depth: int) -> Any:
        if depth > 32:
            raise CorruptState("its structure is nested too deeply")
        if isinstance(node, dict):
            if len(node) != 1:
                raise CorruptState(f"invalid structure node with keys {sorted(node)[:3]}")
            (kind, value), = node.items()
            if kind == "_tensor":
                if not isinstance(value, str) or value not in tensors:
                    raise CorruptState(f"its structure names a tensor the file lacks ({value!r})")
                return tensors[value]
            if kind == "_dict":
                if not isinstance(value, list) or not all(
                        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                        for pair in value):
                    raise CorruptState("a '_dict' of its structure is not a list of pairs")
                return {key: build(item, depth + 1) for key, item in value}
            if kind in ("_list", "_tuple"):
                if not isinstance(value, list):
                    raise CorruptState(f"a '{kind}' of its structure is not a list")
                items = [build(item, depth + 1) for item in value]
                return items if kind == "_list" else tuple(items)
            if kind == "_class":
                if not isinstance(value, str):
                    raise CorruptState("a '_class' of its structure is not a name")
                return value  # the dotted name; nothing is imported
            raise CorruptState(f"unknown structure node '{kind}'")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise CorruptState(f"invalid structure value of type {type(node).__name__}")

    return build(structure, 0)


# --------------------------------------------------------------------------- layout


def parse_state(state: Any) -> QuantizedState:
    """Check a ``__quantized`` state's layout (CorruptState otherwise)."""
    import torch

    if not isinstance(state, dict):
        raise CorruptState("the quantized state is not a dict")
    missing = [key for key in ("quantized", "others", "meta") if key not in state]
    if missing:
        raise CorruptState(f"the quantized state has no '{missing[0]}'")
    meta = state["meta"]
    if not isinstance(meta, dict):
        raise CorruptState("its 'meta' is not a dict")
    klass = meta.get("klass")
    if isinstance(klass, type):  # pragma: no cover - our readers give names
        klass = f"{klass.__module__}.{klass.__qualname__}"
    if not isinstance(klass, str) or not klass.startswith("diffq."):
        raise CorruptState(f"its quantizer class is {klass!r}, not a diffq quantizer")
    quantizer = klass.rsplit(".", 1)[-1]
    if quantizer not in _DEFAULTS:
        raise ModelError(f"diffq quantizer {klass} is not supported",
                         hint=f"supported: {', '.join(sorted(_DEFAULTS))}")
    init_kwargs = meta.get("init_kwargs", {})
    if not isinstance(init_kwargs, dict):
        raise CorruptState("its 'meta.init_kwargs' is not a dict")
    settings = dict(_DEFAULTS[quantizer])
    settings.update({key: value for key, value in init_kwargs.items() if key in settings})
    _check_settings(quantizer, settings)
    packed, torch_pack = meta.get("packed", False), meta.get("torch_pack", False)
    if not isinstance(packed, bool) or not isinstance(torch_pack, bool):
        raise CorruptState("its 'meta.packed' or 'meta.torch_pack' is not a boolean")

    lists = {}
    for key in ("quantized", "float16", "others"):
        value = state.get(key, [])
        if not isinstance(value, (list, tuple)):
            raise CorruptState(f"its '{key}' is not a list")
        lists[key] = tuple(value)
    for key in ("float16", "others"):
        for index, tensor in enumerate(lists[key]):
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                raise CorruptState(f"'{key}' item {index} is not a float tensor")
    width = 3 if quantizer == DIFFQ_CLASS else 2
    for index, entry in enumerate(lists["quantized"]):
        if not isinstance(entry, (list, tuple)) or len(entry) != width:
            raise CorruptState(f"quantized entry {index} is not a {width}-tuple")
        scales = entry[1]
        if (not isinstance(scales, (list, tuple)) or len(scales) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) for v in scales)):
            raise CorruptState(f"quantized entry {index} has no finite (min, max) pair")
    return QuantizedState(quantizer=quantizer, settings=settings, packed=packed,
                          torch_pack=torch_pack, quantized=lists["quantized"],
                          float16=lists["float16"], others=lists["others"])


def _check_settings(quantizer: str, settings: dict) -> None:
    def number(key: str) -> None:
        value = settings[key]
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise CorruptState(f"its quantizer setting {key}={value!r} is not a number")

    number("min_size")
    for key in ("float16", "detect_bound"):
        if not isinstance(settings[key], bool):
            raise CorruptState(f"its quantizer setting {key}={settings[key]!r} is not a boolean")
    exclude = settings["exclude"]
    if not isinstance(exclude, (list, tuple)) or not all(isinstance(p, str) for p in exclude):
        raise CorruptState("its quantizer setting 'exclude' is not a list of patterns")
    if quantizer == DIFFQ_CLASS:
        group_size, min_bits = settings["group_size"], settings["min_bits"]
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 0:
            raise CorruptState(f"its quantizer setting group_size={group_size!r} is invalid")
        number("min_bits")
        if min_bits != int(min_bits) or not 0 <= min_bits <= _MAX_BITS:
            raise CorruptState(f"its quantizer setting min_bits={min_bits!r} is invalid")
    else:
        number("bits")
        if settings["bits"] != int(settings["bits"]) or not 1 <= settings["bits"] <= _MAX_BITS:
            raise CorruptState(f"its quantizer setting bits={settings['bits']!r} is invalid")


# --------------------------------------------------------------------------- restoring


def restore(network: Any, quantized: QuantizedState) -> dict:
    """The float32 state dict of ``network`` (ours, freshly built) that demucs' diffq restore
    gives the same network: the parameters from ``quantized``, buffers as built."""
    import torch

    quantized_params, small = _walk(network, quantized.settings)
    if len(quantized.quantized) != len(quantized_params):
        raise CorruptState(f"it holds {len(quantized.quantized)} quantized parameters, the "
                           f"network has {len(quantized_params)} large enough to quantize")
    if quantized.settings["float16"]:
        halves, fulls = small, []
    else:
        halves, fulls = [], small
    for key, expected, stored in (("float16", halves, quantized.float16),
                                  ("others", fulls, quantized.others)):
        if len(stored) != len(expected):
            raise CorruptState(f"it holds {len(stored)} '{key}' parameters, the network "
                               f"has {len(expected)}")
    values: dict[int, Any] = {}
    for (name, param), tensor in zip(halves + fulls, quantized.float16 + quantized.others):
        if tuple(tensor.shape) != tuple(param.shape):
            raise CorruptState(f"{name} is stored with shape {list(tensor.shape)}, the "
                               f"network's is {list(param.shape)}")
        values[id(param)] = tensor.detach().to(torch.float32).clone()
    for index, ((name, param), entry) in enumerate(zip(quantized_params, quantized.quantized)):
        try:
            if quantized.quantizer == DIFFQ_CLASS:
                value = _restore_diffq(entry, param.numel(), quantized)
            else:
                value = _restore_uniform(entry, param.numel(), quantized)
        except CorruptState as error:
            raise CorruptState(f"quantized entry {index} ({name}): {error.message}") from None
        values[id(param)] = value.view(param.shape)

    state = {}
    for key, tensor in network.state_dict(keep_vars=True).items():
        if isinstance(tensor, torch.nn.Parameter):
            state[key] = values[id(tensor)]
        else:
            state[key] = tensor.detach().clone()  # not in a diffq state: demucs keeps it too
    return state


def _walk(network: Any, settings: Mapping[str, Any]) -> tuple[list, list]:
    """The network's parameters in diffq's order: (quantized, small), as (name, param)."""
    names = {id(param): name for name, param in network.named_parameters()}
    min_params = settings["min_size"] * 2 ** 20 // 4
    exclude = list(settings["exclude"])
    seen: dict[int, bool] = {}  # id -> quantized
    quantized, small = [], []
    for module_name, module in network.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            full_name = f"{module_name}.{name}"
            matched = any(fnmatch(full_name, pattern) or fnmatch(name, pattern)
                          for pattern in exclude)
            if param.numel() <= min_params or matched:
                if id(param) in seen:
                    continue
                if settings["detect_bound"]:
                    seen[id(param)] = False
                small.append((names[id(param)], param))
            else:
                bound = settings["detect_bound"] and id(param) in seen
                if settings["detect_bound"]:
                    seen[id(param)] = True
                if not bound:
                    quantized.append((names[id(param)], param))
    return quantized, small


def _dequantize(levels: Any, scales: Any, bits: Any) -> Any:
    """diffq.uniform.uniform_unquantize, operation for operation (float32)."""
    mn, mx = float(scales[0]), float(scales[1])
    num_levels = 2 ** bits.float()
    unit = 1 / (num_levels - 1)
    p = levels.float() * unit
    return p * (mx - mn) + mn


def _restore_diffq(entry: tuple, numel: int, quantized: QuantizedState) -> Any:
    import torch

    settings = quantized.settings
    group_size = settings["group_size"] or numel  # 0: one group for the whole tensor
    if numel % group_size:
        raise CorruptState(f"{numel} weights do not split into groups of {group_size}")
    groups = numel // group_size
    levels_part, scales, bits_part = entry
    if not quantized.packed:
        levels = _integer_tensor(levels_part, "levels")
        bits = _integer_tensor(bits_part, "bits")
        if bits.dim() == 2 and bits.shape[1] == 1:
            bits = bits[:, 0]
        if tuple(bits.shape) != (groups,) or levels.numel() != numel:
            raise CorruptState(f"its levels {list(levels.shape)} or bits {list(bits.shape)} "
                               f"do not fit {groups} groups of {group_size}")
        bits = bits.to(torch.int16)
        _check_bits(bits)
        levels = levels.to(torch.int16).reshape(groups, group_size)
        _check_levels(levels, bits)
        return _dequantize(levels, scales, bits[:, None]).reshape(-1)

    bits = _unpack(bits_part, groups, quantized.torch_pack, "bits").to(torch.int16)
    bits = bits + int(settings["min_bits"])
    _check_bits(bits)
    if not isinstance(levels_part, (list, tuple)):
        raise CorruptState("its packed levels are not a list")
    levels = torch.zeros(groups, group_size, dtype=torch.int16)
    for bit in torch.unique(bits).tolist():
        if bit > len(levels_part) or levels_part[bit - 1] is None:
            raise CorruptState(f"its groups of {bit} bits have no levels (diffq stores "
                               f"{len(levels_part)} widths)")
    for index, packed_levels in enumerate(levels_part):
        selected = bits == index + 1
        count = int(selected.sum()) * group_size
        if packed_levels is None:
            continue
        if count == 0:
            raise CorruptState(f"it holds {index + 1}-bit levels but no group of {index + 1} bits")
        values = _unpack(packed_levels, count, quantized.torch_pack, f"{index + 1}-bit levels",
                         nbits=index + 1)
        levels[selected] = values.view(-1, group_size).to(torch.int16)
    return _dequantize(levels, scales, bits[:, None]).reshape(-1)


def _restore_uniform(entry: tuple, numel: int, quantized: QuantizedState) -> Any:
    import torch

    levels_part, scales = entry
    bits = int(quantized.settings["bits"])
    if quantized.packed:
        levels = _unpack(levels_part, numel, quantized.torch_pack, "levels", nbits=bits)
    else:
        levels = _integer_tensor(levels_part, "levels")
        if levels.numel() != numel:
            raise CorruptState(f"its levels {list(levels.shape)} do not fit {numel} weights")
        levels = levels.reshape(-1).to(torch.int16)
    if int(levels.min()) < 0 or int(levels.max()) >= 2 ** bits:
        raise CorruptState(f"its levels fall outside 0..{2 ** bits - 1}")
    return _dequantize(levels, scales, torch.tensor(float(bits)))


def _integer_tensor(value: Any, what: str) -> Any:
    import torch

    if not isinstance(value, torch.Tensor) or value.is_floating_point() or value.is_complex() \
            or value.dtype == torch.bool:
        raise CorruptState(f"its {what} are not an integer tensor")
    return value


def _check_bits(bits: Any) -> None:
    if bits.numel() and (int(bits.min()) < 1 or int(bits.max()) > _MAX_BITS):
        raise CorruptState(f"its bits per group fall outside 1..{_MAX_BITS}")


def _check_levels(levels: Any, bits: Any) -> None:
    import torch

    limits = (1 << bits.to(torch.int32))[:, None]
    if levels.numel() and (bool((levels < 0).any()) or bool((levels.to(torch.int32) >= limits).any())):
        raise CorruptState("its levels do not fit their number of bits")


def _unpack(packed: Any, length: int, torch_pack: bool, what: str, nbits: int | None = None) -> Any:
    """``length`` values from diffq's ``bitpack.pack`` (or ``torch_pack.pack``) output."""
    import numpy as np
    import torch

    if not isinstance(packed, torch.Tensor):
        raise CorruptState(f"its packed {what} are not a tensor")
    if torch_pack:
        storages = {torch.int64: 64, torch.int32: 32, torch.int16: 16, torch.uint8: 8}
        storage = storages.get(packed.dtype)
        if storage is None or packed.dim() != 2:
            raise CorruptState(f"its packed {what} are a {packed.dtype} tensor of shape "
                               f"{list(packed.shape)}, not diffq's torch_pack layout")
        width, columns = packed.shape
        expected = -(-length // storage)
    else:
        if packed.dtype != torch.int64 or packed.dim() != 3 or packed.shape[2] != _BITPACK_BLOCK:
            raise CorruptState(f"its packed {what} are a {packed.dtype} tensor of shape "
                               f"{list(packed.shape)}, not diffq's [lines, bits, 32] int64")
        lines, width, _ = packed.shape
        expected, columns = -(-length // _BITPACK_LINE), lines
    if columns != expected or width > 16 or (nbits is not None and width != nbits):
        raise CorruptState(f"its packed {what} have shape {list(packed.shape)}, which does not "
                           f"hold {length} values" + (f" of {nbits} bits" if nbits else ""))
    if length == 0:
        return torch.zeros(0, dtype=torch.int16)
    # Every word's bits, least significant first: bits[..., word, j] is bit j of the word.
    words = packed.detach().cpu().contiguous().numpy()
    words = words.astype(words.dtype.newbyteorder("<"), copy=False)
    bits = np.unpackbits(words.view(np.uint8).reshape(*words.shape, words.dtype.itemsize),
                         axis=-1, bitorder="little")
    if torch_pack:  # word [bit, g], its bit j -> bit `bit` of value j * G + g
        out = np.zeros((columns, storage), dtype=np.uint16)
        planes = bits
    else:  # word [line, bit, i], its bit j -> bit `bit` of value line * 2048 + j * 32 + i
        out = np.zeros((lines, _BITPACK_BLOCK, 64), dtype=np.uint16)
        planes = bits.swapaxes(0, 1)
    for bit in range(width):
        plane = planes[bit].astype(np.uint16)
        plane <<= bit
        out |= plane
    out = out.T if torch_pack else out.swapaxes(1, 2)
    values = out.reshape(-1)
    if width == 16 and bool((values >= 1 << 15).any()):
        raise CorruptState(f"its packed {what} hold values beyond 15 bits")
    if bool(values[length:].any()):
        raise CorruptState(f"its packed {what} have non-zero padding")
    return torch.from_numpy(values[:length].astype(np.int16))
