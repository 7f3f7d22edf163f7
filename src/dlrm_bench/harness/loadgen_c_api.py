"""LoadGen's C API, found inside the `mlperf_loadgen` Python extension.

The wheel compiles LoadGen's C bindings (`mlperf::c::ConstructSUT`, `mlperf::c::QuerySamplesComplete`, ...) into
the extension but exports only `PyInit_mlperf_loadgen`. Their addresses are read from the extension's ELF symbol
table (.symtab, through pyelftools) and offset by where the loader mapped the extension (the runtime address of
`PyInit_mlperf_loadgen` minus its symbol value). Nothing is copied or patched: these are the same LoadGen functions
the Python bindings call, reached without building one Python object per sample.

`load_c_api` raises `CApiUnavailable` (with the reason) when the extension is not a 64-bit little-endian ELF shared
object, has no symbol table (a stripped build) or lacks one of the functions; the harness then uses the Python
bindings.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import mlperf_loadgen as lg
from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

ANCHOR = "PyInit_mlperf_loadgen"
SYMBOLS = {
    "construct_sut": "_ZN6mlperf1c12ConstructSUTEmPKcmPFvmPKNS_11QuerySampleEmEPFvvE",
    "destroy_sut": "_ZN6mlperf1c10DestroySUTEPv",
    "query_samples_complete": "_ZN6mlperf1c20QuerySamplesCompleteEPNS_19QuerySampleResponseEm",
}


class CApiUnavailable(RuntimeError):
    """LoadGen's C functions cannot be located in this build of the extension."""


@dataclass(frozen=True)
class LoadGenCApi:
    """Runtime addresses of LoadGen's C API functions, and the QuerySampleResponse size in 8-byte words."""

    construct_sut: int
    destroy_sut: int
    query_samples_complete: int
    response_words: int


def symbol_values(path: Path, names: list[str]) -> dict[str, int]:
    """{name: st_value} for the function symbols `names` in `path`'s .symtab (missing names are left out)."""
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            if elf.elfclass != 64 or not elf.little_endian:
                raise CApiUnavailable(f"{path}: not a 64-bit little-endian ELF file")
            table = next((s for s in elf.iter_sections() if s["sh_type"] == "SHT_SYMTAB"), None)
            if not isinstance(table, SymbolTableSection):
                raise CApiUnavailable(f"{path}: no symbol table (stripped build)")
            found: dict[str, int] = {}
            for name in names:
                for symbol in table.get_symbol_by_name(name) or ():
                    if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_value"]:
                        found[name] = int(symbol["st_value"])
                        break
            return found
    except (ELFError, ConstructError) as exc:  # no ELF header, or a truncated or damaged file
        raise CApiUnavailable(f"{path}: not a 64-bit little-endian ELF file, or a damaged one ({exc})") from exc


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
