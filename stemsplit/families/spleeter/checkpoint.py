"""Reading a TensorFlow checkpoint (TensorBundle, checkpoint format V2) without TensorFlow.

Spleeter's model folders hold a ``checkpoint`` text file (``model_checkpoint_path:
"model"``) and the bundle named by that prefix: ``<prefix>.index`` and one or more data
shards ``<prefix>.data-0000K-of-0000N`` (``model.meta``, the graph, is not needed).

``<prefix>.index`` is a LevelDB-style sorted table:

* a 48-byte footer at the end: the metaindex and index block handles (each an offset and a
  size as varints), zero padding to 40 bytes, then the magic number 0xdb4775248b80fb57
  (little-endian);
* blocks of prefix-compressed entries (varints ``shared``, ``non_shared``, ``value_length``,
  then the key's new bytes and the value), followed by the restart offsets (uint32 each) and
  their count (uint32); each block is followed by a 5-byte trailer: the compression type
  (0: none; nothing else is written by TensorFlow's bundle writer) and the masked crc32c of
  the block plus that type byte;
* the index block maps each data block's last key to its handle.

The key "" holds a ``BundleHeaderProto`` (num_shards=1, endianness=2, version=3); every other
key is a tensor's name and holds a ``BundleEntryProto`` (dtype=1, shape=2 as a
``TensorShapeProto`` of repeated dim=2 {size=1}, shard_id=3, offset=4, size=5, crc32c=6 as a
masked fixed32, slices=7 for partitioned variables, which are refused). A data shard holds the
raw little-endian tensors back to back.

Every block's checksum and every tensor's checksum are verified. The tensors' crc32c is
computed with numpy (a 16-bit table, vectorised over 2 KiB pieces, the pieces combined with
GF(2) shift operators): 0.3-0.5 s for Spleeter's 78 MB on one core.

Only numpy and the standard library are imported.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import ModelError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
_MASK_DELTA = 0xA282EAD8
_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial

# TensorFlow's DataType enum: the fixed-size numeric types read into numpy (little-endian).
_NUMPY_DTYPES = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    8: np.dtype("<c8"),  # DT_COMPLEX64
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    18: np.dtype("<c16"),  # DT_COMPLEX128
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
_DTYPE_NAMES = {
    0: "DT_INVALID", 1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8",
    5: "DT_INT16", 6: "DT_INT8", 7: "DT_STRING", 8: "DT_COMPLEX64", 9: "DT_INT64",
    10: "DT_BOOL", 11: "DT_QINT8", 12: "DT_QUINT8", 13: "DT_QINT32", 14: "DT_BFLOAT16",
    15: "DT_QINT16", 16: "DT_QUINT16", 17: "DT_UINT16", 18: "DT_COMPLEX128", 19: "DT_HALF",
    20: "DT_RESOURCE", 21: "DT_VARIANT", 22: "DT_UINT32", 23: "DT_UINT64",
}


# -- crc32c ------------------------------------------------------------------------------


def _make_byte_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC32C_POLY if crc & 1 else 0)
        table.append(crc)
    return table


_BYTE_TABLE = _make_byte_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """The standard crc32c (Castagnoli) of ``data``, continuing from ``crc``; pure Python,
    for small inputs (the index file)."""
    crc ^= 0xFFFFFFFF
    table = _BYTE_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB's and TensorFlow's masked form of a crc32c."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


class _Crc32cNumpy:
    """crc32c of many byte ranges at once, vectorised with numpy.

    The register update without the initial and final inversion ("raw", linear over GF(2))
    runs over pieces of ``PIECE`` bytes in parallel, four bytes a step through two 16-bit
    tables. Pieces are joined by shifting a register over n zero bytes: a 32x32 GF(2)
    matrix, applied through four byte tables.
    """

    PIECE = 2048

    def __init__(self) -> None:
        byte = np.array(_BYTE_TABLE, dtype=np.uint32)
        eight = np.uint32(8)

        def advance(values: np.ndarray, count: int) -> np.ndarray:
            for _ in range(count):  # the raw register after ``count`` zero bytes
                values = byte[values & 0xFF] ^ (values >> eight)
            return values

        # After ``state ^= word`` the register moves over 4 bytes: linear, so split in halves.
        halves = np.arange(65536, dtype=np.uint32)
        self._low = advance(halves, 4)
        self._high = advance(halves << np.uint32(16), 4)
        basis = np.array([1 << bit for bit in range(32)], dtype=np.uint32)
        # Shifts over 2**k zero bytes, k = 0..63, by squaring.
        self._powers = [self._tables(advance(basis, 1))]
        for _ in range(63):
            last = self._powers[-1]
            self._powers.append(self._tables(self._apply(last, self._apply(last, basis))))
        self._basis = basis
        self._shifts: dict[int, list[np.ndarray]] = {}

    @staticmethod
    def _tables(columns: np.ndarray) -> list[np.ndarray]:
        """Four byte tables of the GF(2) matrix whose column ``bit`` is ``columns[bit]``."""
        entries = np.arange(256)
        tables = []
        for part in range(4):
            values = np.zeros(256, dtype=np.uint32)
            for bit in range(8):
                values[(entries >> bit) & 1 == 1] ^= columns[part * 8 + bit]
            tables.append(values)
        return tables

    @staticmethod
    def _apply(tables: list[np.ndarray], values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.uint32)
        return (tables[0][values & 0xFF] ^ tables[1][(values >> np.uint32(8)) & 0xFF]
                ^ tables[2][(values >> np.uint32(16)) & 0xFF] ^ tables[3][values >> np.uint32(24)])

    def _shift(self, values: np.ndarray, count: int) -> np.ndarray:
        """Raw registers ``values`` after ``count`` zero bytes."""
        bit = 0
        while count:
            if count & 1:
                values = self._apply(self._powers[bit], values)
            count >>= 1
            bit += 1
        return values

    def _shift_tables(self, count: int) -> list[np.ndarray]:
        if count not in self._shifts:
            self._shifts[count] = self._tables(self._shift(self._basis, count))
        return self._shifts[count]

    def _raw_pieces(self, words: np.ndarray) -> np.ndarray:
        """Raw registers of the rows of ``words`` (pieces, PIECE // 4) uint32."""
        state = np.zeros(words.shape[0], dtype=np.uint32)
        low, high = self._low, self._high
        mask, sixteen = np.uint32(0xFFFF), np.uint32(16)
        for column in np.ascontiguousarray(words.T):
            state ^= column
            state = low[state & mask] ^ high[state >> sixteen]
        return state

    def _join(self, pieces: np.ndarray) -> int:
        """The raw register of consecutive pieces from theirs, pairing neighbours."""
        length = self.PIECE
        while len(pieces) > 1:
            if len(pieces) % 2:  # a leading zero piece changes no raw register
                pieces = np.concatenate([np.zeros(1, dtype=np.uint32), pieces])
            pieces = self._apply(self._shift_tables(length), pieces[0::2]) ^ pieces[1::2]
            length *= 2
        return int(pieces[0]) if len(pieces) else 0

    def many(self, data: np.ndarray, ranges: list[tuple[int, int]]) -> list[int]:
        """Standard crc32c of ``data[offset : offset + size]`` for each (offset, size)."""
        piece = self.PIECE
        padded = [size + (-size) % piece for _, size in ranges]
        buffer = np.zeros(sum(padded), dtype=np.uint8)
        position = 0
        for (offset, size), length in zip(ranges, padded):
            # Each range is right-aligned in whole pieces: leading zeros keep a raw register 0.
            start = position + length - size
            buffer[start : start + size] = data[offset : offset + size]
            position += length
        raw = self._raw_pieces(buffer.view("<u4").reshape(-1, piece // 4))
        results = []
        index = 0
        for (_, size), length in zip(ranges, padded):
            count = length // piece
            register = self._join(raw[index : index + count])
            index += count
            # The standard crc starts from 0xffffffff (carried over ``size`` bytes) and ends
            # inverted.
            start = int(self._shift(np.array([0xFFFFFFFF], dtype=np.uint32), size)[0])
            results.append(register ^ start ^ 0xFFFFFFFF)
        return results


_NUMPY_CRC: _Crc32cNumpy | None = None


def crc32c_ranges(data: np.ndarray, ranges: list[tuple[int, int]]) -> list[int]:
    """crc32c of several byte ranges of a uint8 array, vectorised."""
    global _NUMPY_CRC
    if _NUMPY_CRC is None:
        _NUMPY_CRC = _Crc32cNumpy()
    return _NUMPY_CRC.many(data, ranges)


# -- protobuf and table decoding ---------------------------------------------------------


class _Malformed(Exception):
    """Internal: decoding failed; turned into a ModelError naming the file."""


def _varint(data: bytes, position: int, end: int | None = None) -> tuple[int, int]:
    end = len(data) if end is None else end
    result = shift = 0
    while True:
        if position >= end:
            raise _Malformed("a varint runs past the end of its field")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift >= 70:
            raise _Malformed("a varint is longer than 10 bytes")


def _fields(data: bytes) -> list[tuple[int, int, object]]:
    """A protobuf message's (field number, wire type, value): ints for varint and fixed
    fields, bytes for length-delimited ones."""
    fields = []
    position, end = 0, len(data)
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 1:
            if position + 8 > end:
                raise _Malformed("a fixed64 field runs past the end")
            value = int.from_bytes(data[position : position + 8], "little")
            position += 8
        elif wire == 2:
            length, position = _varint(data, position)
            if position + length > end:
                raise _Malformed("a length-delimited field runs past the end")
            value = bytes(data[position : position + length])
            position += length
        elif wire == 5:
            if position + 4 > end:
                raise _Malformed("a fixed32 field runs past the end")
            value = int.from_bytes(data[position : position + 4], "little")
            position += 4
        else:
            raise _Malformed(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _read_block(index: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER_SIZE > len(index) - FOOTER_SIZE:
        raise _Malformed(f"the {what} block at {offset} (+{size} bytes) runs past the end")
    contents = index[offset:end]
    kind = index[end]
    stored = int.from_bytes(index[end + 1 : end + 5], "little")
    if mask_crc(crc32c(index[offset : end + 1])) != stored:
        raise _Malformed(f"the {what} block at {offset} fails its crc32c check")
    if kind != 0:
        raise _Malformed(f"the {what} block is compressed (type {kind}); only uncompressed "
                         "tables are supported")
    return contents


def _block_entries(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Malformed(f"the {what} block is shorter than its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * restarts
    if restarts < 1 or limit < 0:
        raise _Malformed(f"the {what} block has a bad restart count ({restarts})")
    restart_points = {int.from_bytes(block[limit + 4 * i : limit + 4 * i + 4], "little")
                      for i in range(restarts)}
    entries = []
    key = b""
    position = 0
    while position < limit:
        entry_start = position
        shared, position = _varint(block, position, limit)
        unshared, position = _varint(block, position, limit)
        value_length, position = _varint(block, position, limit)
        if shared > len(key) or (entry_start in restart_points and shared):
            raise _Malformed(f"the {what} block has a bad prefix-compressed key")
        if position + unshared + value_length > limit:
            raise _Malformed(f"an entry of the {what} block runs past its end")
        key = key[:shared] + block[position : position + unshared]
        position += unshared
        entries.append((key, block[position : position + value_length]))
        position += value_length
    if any(point >= max(limit, 1) for point in restart_points):
        raise _Malformed(f"the {what} block has a restart point past its entries")
    return entries


def _handle(value: bytes) -> tuple[int, int]:
    offset, position = _varint(value, 0)
    size, _ = _varint(value, position)
    return offset, size


def _read_table(index: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) entries of a LevelDB-style table, in order."""
    if len(index) < FOOTER_SIZE:
        raise _Malformed(f"the file is shorter ({len(index)} bytes) than a table footer")
    footer = index[-FOOTER_SIZE:]
    magic = int.from_bytes(footer[-8:], "little")
    if magic != TABLE_MAGIC:
        raise _Malformed(f"bad table magic 0x{magic:016x} (expected 0x{TABLE_MAGIC:016x}): "
                         "not a TensorFlow checkpoint index, or truncated")
    _, position = _varint(footer, 0, 40)  # metaindex handle: offset, size
    _, position = _varint(footer, position, 40)
    index_offset, position = _varint(footer, position, 40)
    index_size, position = _varint(footer, position, 40)
    data_end = len(index) - FOOTER_SIZE
    if index_offset + index_size + BLOCK_TRAILER_SIZE > data_end:
        raise _Malformed("the index block handle points past the end of the file")
    index_block = _read_block(index, index_offset, index_size, "index")
    entries: list[tuple[bytes, bytes]] = []
    for _, value in _block_entries(index_block, "index"):
        offset, size = _handle(value)
        if offset + size + BLOCK_TRAILER_SIZE > data_end:
            raise _Malformed(f"a data block handle ({offset}, {size}) points past the end")
        entries += _block_entries(_read_block(index, offset, size, "data"), "data")
    return entries


def _parse_entry(name: str, value: bytes) -> dict:
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
    for number, wire, field in _fields(value):
        if number == 1 and wire == 0:
            entry["dtype"] = field
        elif number == 2 and wire == 2:
            for dim_number, dim_wire, dim in _fields(field):  # type: ignore[arg-type]
                if dim_number == 2 and dim_wire == 2:
                    size = 0
                    for number_, wire_, size_value in _fields(dim):  # type: ignore[arg-type]
                        if number_ == 1 and wire_ == 0:
                            size = _signed64(size_value)  # type: ignore[arg-type]
                    if size < 0:
                        raise _Malformed(f"tensor {name!r} has an unknown dimension")
                    entry["shape"].append(size)
                elif dim_number == 3 and dim_wire == 0 and dim:
                    raise _Malformed(f"tensor {name!r} has an unknown rank")
        elif number == 3 and wire == 0:
            entry["shard_id"] = field
        elif number == 4 and wire == 0:
            entry["offset"] = _signed64(field)  # type: ignore[arg-type]
        elif number == 5 and wire == 0:
            entry["size"] = _signed64(field)  # type: ignore[arg-type]
        elif number == 6 and wire == 5:
            entry["crc32c"] = field
        elif number == 7:
            raise _Malformed(f"tensor {name!r} is a partitioned (sliced) variable; "
                             "not supported")
    return entry


# -- the public API ----------------------------------------------------------------------


def _data_shard(prefix: Path, shard: int, shards: int) -> Path:
    return prefix.parent / f"{prefix.name}.data-{shard:05d}-of-{shards:05d}"


def read_tensor_bundle(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the TensorFlow checkpoint ``prefix`` (``<prefix>.index`` and its data
    shards), by name, as numpy arrays (native byte order, writable).

    Raises ModelError naming the file for a missing, truncated or malformed file, a failed
    checksum, or a tensor type other than the fixed-size numeric ones.
    """
    prefix = Path(prefix)
    index_path = prefix.parent / f"{prefix.name}.index"
    try:
        index = index_path.read_bytes()
    except OSError as error:
        raise ModelError(f"cannot read checkpoint index {index_path}: "
                         f"{error.strerror or error}") from None
    try:
        entries = _read_table(index)
        if not entries or entries[0][0] != b"":
            raise _Malformed("the bundle header (key \"\") is missing")
        shards, endianness = 1, 0
        for number, wire, field in _fields(entries[0][1]):
            if number == 1 and wire == 0:
                shards = field  # type: ignore[assignment]
            elif number == 2 and wire == 0:
                endianness = field  # type: ignore[assignment]
        if endianness != 0:
            raise _Malformed("the checkpoint is big-endian; only little-endian is supported")
        if shards < 1:
            raise _Malformed(f"the bundle header names {shards} data shards")
        tensors = []
        for key, value in entries[1:]:
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise _Malformed(f"a tensor name is not UTF-8: {key!r}") from None
            entry = _parse_entry(name, value)
            if entry["dtype"] not in _NUMPY_DTYPES:
                type_name = _DTYPE_NAMES.get(entry["dtype"], f"type {entry['dtype']}")
                raise _Malformed(f"tensor {name!r} has type {type_name}; only fixed-size "
                                 "numeric tensors are supported")
            if not 0 <= entry["shard_id"] < shards:
                raise _Malformed(f"tensor {name!r} is in shard {entry['shard_id']} of {shards}")
            tensors.append((name, entry))
    except _Malformed as error:
        raise ModelError(f"malformed checkpoint index {index_path}: {error}") from None

    result: dict[str, np.ndarray] = {}
    for shard in range(shards):
        mine = [(name, entry) for name, entry in tensors if entry["shard_id"] == shard]
        if not mine:
            continue
        path = _data_shard(prefix, shard, shards)
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as error:
            raise ModelError(f"missing checkpoint data shard {path} (named by {index_path}): "
                             f"{error.strerror or error}") from None
        ranges = []
        for name, entry in mine:
            dtype = _NUMPY_DTYPES[entry["dtype"]]
            count = 1
            for size in entry["shape"]:
                count *= size
            if entry["size"] != count * dtype.itemsize:
                raise ModelError(
                    f"malformed checkpoint index {index_path}: tensor {name!r} of shape "
                    f"{tuple(entry['shape'])} is stored in {entry['size']} bytes, not "
                    f"{count * dtype.itemsize}")
            if entry["offset"] < 0 or entry["offset"] + entry["size"] > len(data):
                raise ModelError(
                    f"truncated checkpoint data shard {path}: tensor {name!r} needs bytes "
                    f"[{entry['offset']}, {entry['offset'] + entry['size']}), the file has "
                    f"{len(data)}")
            ranges.append((entry["offset"], entry["size"]))
        checksums = crc32c_ranges(data, ranges)
        for (name, entry), (offset, size), checksum in zip(mine, ranges, checksums):
            if entry["crc32c"] is not None and mask_crc(checksum) != entry["crc32c"]:
                raise ModelError(f"corrupt checkpoint data shard {path}: tensor {name!r} "
                                 "fails its crc32c check")
            dtype = _NUMPY_DTYPES[entry["dtype"]]
            array = data[offset : offset + size].view(dtype).reshape(entry["shape"])
            result[name] = array.astype(dtype.newbyteorder("="), copy=True)
    return result


_ESCAPES = {ord("n"): 10, ord("t"): 9, ord("r"): 13, ord("a"): 7, ord("b"): 8, ord("f"): 12,
            ord("v"): 11}


def _unescape(text: str) -> str:
    """A protobuf text-format string with its C escapes (backslash, quote, n, t, octal,
    hex) undone."""
    raw = text.encode("utf-8")
    out = bytearray()
    position = 0
    while position < len(raw):
        byte = raw[position]
        position += 1
        if byte != 0x5C or position >= len(raw):
            out.append(byte)
            continue
        code = raw[position]
        if 0x30 <= code <= 0x37:  # up to three octal digits
            end = position
            while end < min(position + 3, len(raw)) and 0x30 <= raw[end] <= 0x37:
                end += 1
            out.append(int(raw[position:end], 8) & 0xFF)
            position = end
        elif code == ord("x"):
            end = position + 1
            while end < min(position + 3, len(raw)) and chr(raw[end]) in "0123456789abcdefABCDEF":
                end += 1
            out.append(int(raw[position + 1 : end] or b"0", 16))
            position = end
        else:
            out.append(_ESCAPES.get(code, code))
            position += 1
    return out.decode("utf-8", errors="replace")


_CHECKPOINT_LINE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')


def find_checkpoint_prefix(folder: Path) -> Path:
    """The checkpoint prefix in a Spleeter model folder: the one the ``checkpoint`` file
    names (``model_checkpoint_path: "model"``, relative to the folder), else the single
    ``*.index`` file's."""
    folder = Path(folder)
    state = folder / "checkpoint"
    if state.is_file():
        try:
            text = state.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ModelError(f"cannot read {state}: {error}") from None
        for line in text.splitlines():
            match = _CHECKPOINT_LINE.match(line)
            if match:
                prefix = Path(_unescape(match.group(1)))
                return prefix if prefix.is_absolute() else folder / prefix
        raise ModelError(f"{state} names no model_checkpoint_path")
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) != 1:
        found = "no" if not indexes else f"{len(indexes)}"
        raise ModelError(f"{folder} has no checkpoint file and {found} *.index files; "
                         "expected exactly one")
    return indexes[0].with_suffix("")
