"""Readers for the IDX format of MNIST and Fashion-MNIST: a big-endian header (two zero
bytes, a type code, the number of dimensions, one int32 per dimension) and the raw array.
Plain and gzip-compressed files are both read; every malformed file is named in the error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from tasks.errors import UserError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The array stored in an IDX file (`.gz` or plain). `expected_shape` checks the header."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(
            f"'{path}' is not a readable IDX file ({err}). Replace it with the original download."
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise UserError(
            f"'{path}' is not an IDX file (bad magic number {raw[:4].hex() or 'empty'}). "
            "Replace it with the original download."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"'{path}' is truncated inside its IDX header. Replace it with the original download.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[raw[2]])
    size = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != size:
        raise UserError(
            f"'{path}' holds {len(raw) - header} data bytes where its header {shape} promises {size} "
            "(truncated or padded). Replace it with the original download."
        )
    if expected_shape is not None and shape != tuple(expected_shape):
        raise UserError(f"'{path}' has shape {shape}, expected {tuple(expected_shape)}. Is it the right file?")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
