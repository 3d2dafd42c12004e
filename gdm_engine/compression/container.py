"""The compressed file: a short header, then the entropy coder's 32-bit words.

Layout, little-endian: the magic ``GDMZ``, a version byte, the codec, the dtype and the number of
dimensions (a byte each), the dimensions (LEB128 varints), the sha256 of the checkpoint (32
bytes), the CRC-32 of the data (4 bytes), the images per coding batch and the number of coder
words (varints), the CRC-32 of the header so far (4 bytes), then the words. The header is about
60 bytes; both checksums make a corrupted or truncated file a clear error, never a wrong array.
"""

import dataclasses
import struct
import zlib

import numpy as np

MAGIC = b"GDMZ"
VERSION = 1
CODECS = ("autoregressive-cached", "autoregressive-naive", "bits-back")
DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64")
DIGEST_BYTES = 32  # sha256


class CompressionError(ValueError):
    """A compressed file that cannot be decoded: not ours, corrupted, truncated, made with
    another checkpoint, or decoded by arithmetic that differs from the encoder's."""


@dataclasses.dataclass(frozen=True)
class Header:
    """What a decoder needs besides the checkpoint.

    Args:
        codec: one of CODECS.
        checkpoint: the sha256 digest of the checkpoint file that encoded (32 bytes).
        shape: the array's shape.
        dtype: the array's dtype, one of DTYPES.
        checksum: the CRC-32 of the array's bytes (C order, little-endian).
        chunk: images per coding batch (the decoder must batch alike to compute alike).
    """

    codec: str
    checkpoint: bytes
    shape: tuple[int, ...]
    dtype: str
    checksum: int
    chunk: int


def checksum(array: np.ndarray) -> int:
    """The CRC-32 of an array's bytes, C order, little-endian.

    Args:
        array: any numeric array.

    Returns:
        The checksum, 0 .. 2³² − 1.
    """
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return zlib.crc32(np.ascontiguousarray(little).tobytes())


def pack(header: Header, words: np.ndarray) -> bytes:
    """The file's bytes: the header, then the coder's words.

    Args:
        header: the header.
        words: the coder's compressed words (uint32).

    Returns:
        The file's bytes.
    """
    head = bytearray(MAGIC)
    head += bytes([VERSION, CODECS.index(header.codec), DTYPES.index(header.dtype)])
    head += bytes([len(header.shape)]) + b"".join(_varint(d) for d in header.shape)
    head += header.checkpoint + struct.pack("<I", header.checksum)
    head += _varint(header.chunk) + _varint(len(words))
    head += struct.pack("<I", zlib.crc32(head))
    return bytes(head) + words.astype("<u4").tobytes()


def unpack(blob: bytes) -> tuple[Header, np.ndarray]:
    """The header and the coder's words of a file.

    Args:
        blob: the file's bytes.

    Returns:
        (header, words as uint32).

    Raises:
        CompressionError: the bytes are not a file of this format and version, or it is
            corrupted or truncated.
    """
    if blob[: len(MAGIC)] != MAGIC:
        raise CompressionError("not a gdm-engine compressed file (its first bytes are not GDMZ)")
    try:
        version, codec, dtype, ndim = blob[4:8]
        position, shape = 8, []
        for _ in range(ndim):
            dim, position = _read_varint(blob, position)
            shape.append(dim)
        digest = blob[position : position + DIGEST_BYTES]
        (data_checksum,) = struct.unpack_from("<I", blob, position + DIGEST_BYTES)
        chunk, position = _read_varint(blob, position + DIGEST_BYTES + 4)
        count, position = _read_varint(blob, position)
        (header_checksum,) = struct.unpack_from("<I", blob, position)
    except (ValueError, IndexError, struct.error):
        raise CompressionError("the file is truncated within its header") from None
    if zlib.crc32(blob[:position]) != header_checksum:
        raise CompressionError("the file's header is corrupted (its checksum does not match)")
    if version != VERSION:
        raise CompressionError(f"the file is format version {version}; this reads {VERSION}")
    if codec >= len(CODECS) or dtype >= len(DTYPES):
        raise CompressionError(f"the file names codec {codec} and dtype {dtype}, unknown here")
    payload = blob[position + 4 :]
    if len(payload) != 4 * count:
        raise CompressionError(
            f"the file is truncated or padded: its header promises {4 * count} bytes of code, "
            f"it holds {len(payload)}"
        )
    header = Header(CODECS[codec], digest, tuple(shape), DTYPES[dtype], data_checksum, chunk)
    return header, np.frombuffer(payload, dtype="<u4").astype(np.uint32)


def _varint(n: int) -> bytes:
    """n ≥ 0 as an unsigned LEB128 varint: 7 bits a byte, the high bit set on all but the last."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(blob: bytes, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it (IndexError past the end)."""
    value = shift = 0
    while True:
        byte = blob[position]
        value, shift, position = value | (byte & 0x7F) << shift, shift + 7, position + 1
        if not byte & 0x80:
            return value, position
