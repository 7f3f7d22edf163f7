"""LoadGen's C API, found inside the `mlperf_loadgen` Python extension.

The wheel compiles LoadGen's C bindings (`mlperf::c::ConstructSUT`, `mlperf::c::QuerySamplesComplete`, ...) into
the extension but exports only `PyInit_mlperf_loadgen`. Their addresses are read from the extension's ELF symbol
table (.symtab) and offset by where the loader mapped the extension (the runtime address of `PyInit_mlperf_loadgen`
minus its symbol value). Nothing is copied or patched: these are the same LoadGen functions the Python bindings
call, reached without building one Python object per sample.

`load_c_api` raises `CApiUnavailable` (with the reason) when the extension is not an ELF shared object, has no
symbol table (a stripped build) or lacks one of the functions; the harness then uses the Python bindings.
"""

from __future__ import annotations

import ctypes
import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import mlperf_loadgen as lg
import numpy as np

ANCHOR = "PyInit_mlperf_loadgen"
SYMBOLS = {
    "construct_sut": "_ZN6mlperf1c12ConstructSUTEmPKcmPFvmPKNS_11QuerySampleEmEPFvvE",
    "destroy_sut": "_ZN6mlperf1c10DestroySUTEPv",
    "query_samples_complete": "_ZN6mlperf1c20QuerySamplesCompleteEPNS_19QuerySampleResponseEm",
}
SHT_SYMTAB = 2
STT_FUNC = 2
SYMBOL_DTYPE = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                         ("value", "<u8"), ("size", "<u8")])


class CApiUnavailable(RuntimeError):
    """LoadGen's C functions cannot be located in this build of the extension."""


@dataclass(frozen=True)
class LoadGenCApi:
    """Runtime addresses of LoadGen's C API functions, and the QuerySampleResponse size in 8-byte words."""

    construct_sut: int
    destroy_sut: int
    query_samples_complete: int
    response_words: int


def _section_headers(data: bytes, path: Path) -> list[tuple[int, int, int, int, int]]:
    """(type, offset, size, link, entsize) per section of an ELF64 little-endian file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise CApiUnavailable(f"{path}: not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    headers = []
    for i in range(shnum):
        base = shoff + i * shentsize
        _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, base)
        headers.append((sh_type, offset, size, link, entsize))
    return headers


def symbol_values(path: Path, names: list[str]) -> dict[str, int]:
    """{name: st_value} for the function symbols `names` in `path`'s .symtab (missing names are left out)."""
    data = path.read_bytes()
    headers = _section_headers(data, path)
    tables = [h for h in headers if h[0] == SHT_SYMTAB]
    if not tables:
        raise CApiUnavailable(f"{path}: no symbol table (stripped build)")
    _type, offset, size, link, entsize = tables[0]
    if entsize != SYMBOL_DTYPE.itemsize:
        raise CApiUnavailable(f"{path}: unexpected symbol entry size {entsize}")
    symbols = np.frombuffer(data, dtype=SYMBOL_DTYPE, count=size // entsize, offset=offset)
    _stype, str_offset, str_size, _link, _entsize = headers[link]
    strings = data[str_offset:str_offset + str_size]
    wanted = {name.encode(): name for name in names}
    found: dict[str, int] = {}
    for sym in symbols[(symbols["info"] & 0xF) == STT_FUNC]:
        start = int(sym["name"])
        end = strings.find(b"\0", start)
        name = wanted.get(strings[start:end])
        if name is not None and int(sym["value"]):
            found[name] = int(sym["value"])
    return found


def response_words() -> int:
    """4 when QuerySampleResponse carries n_tokens (LoadGen >= 4.1), else 3."""
    try:
        lg.QuerySampleResponse(0, 0, 0, 0)
    except TypeError:
        return 3
    return 4


@functools.lru_cache(maxsize=1)
def load_c_api() -> LoadGenCApi:
    """Locate LoadGen's C API in the loaded extension (once per process); raises CApiUnavailable."""
    path = Path(lg.__file__)
    values = symbol_values(path, [ANCHOR, *SYMBOLS.values()])
    missing = [name for name in [ANCHOR, *SYMBOLS.values()] if name not in values]
    if missing:
        raise CApiUnavailable(f"{path}: symbols not found: {', '.join(missing)}")
    library = ctypes.CDLL(str(path))  # the already-loaded extension: same mapping, one more reference
    anchor = ctypes.cast(getattr(library, ANCHOR), ctypes.c_void_p).value
    if anchor is None:
        raise CApiUnavailable(f"{path}: {ANCHOR} has no address")
    base = anchor - values[ANCHOR]
    addresses = {key: base + values[symbol] for key, symbol in SYMBOLS.items()}
    return LoadGenCApi(**addresses, response_words=response_words())
