"""The CUDA engine's kernels compiled for a GPU target on any machine (no GPU needed), with the instruction mix of
their SASS: conversions (I2FP, FRND, F2I), fp32 math, tensor-core MMAs. Triton ships ptxas and nvdisasm, so this
runs on the CPU-only machine too.

    .venv/bin/python benchmarks/sass_ops.py              # sm_90 (H100 / H200), the engine's default tiles
    .venv/bin/python benchmarks/sass_ops.py --arch 100

Counts are of static instructions in the kernel (a loop body once). Prints a table and writes
build/bench/sass_ops.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # compile for real, even where the project would use the interpreter
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dlrm_bench.criteo.schema import NUM_SPARSE  # noqa: E402
from dlrm_bench.paths import scratch_path  # noqa: E402

INTERACTION_POINTERS = {"top_ptr": "*i8", "cat_ptr": "*i32", "rows_ptr": "*i64", "tables_ptr": "*i8",
                        "offsets_ptr": "*i64", "mult_ptr": "*fp32", "column_ptr": "*i32", "remap_ptr": "*i32",
                        "cold_ptr": "*i8", "unpack_ptr": "*i64"}
"""The interaction kernel's pointer arguments and their element types."""
SHOWN = ("IGMMA", "IMMA", "HGMMA", "I2FP", "I2F", "FRND", "F2I", "FFMA", "FMUL", "FADD", "FMNMX", "PRMT")
"""The columns of the table: int8 and fp16 MMAs, int<->float conversions and rounding, fp32 math, byte moves."""


def compile_kernel(fn, types: dict[str, str], constexprs: dict[str, object], arch: int, num_warps: int,
                   num_stages: int, aligned: list[str]):
    """triton.compile of a @triton.jit kernel for `arch`: types names each runtime argument's type ("*i8", "i32",
    "tensordesc<i8[128, 128]>", ...); aligned: arguments known to be 16-byte aligned / divisible by 16."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: "constexpr" if name in constexprs else types[name] for name in fn.arg_names}
    source = ASTSource(fn=fn, signature=signature,
                       constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()},
                       attrs={(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in aligned})
    return triton.compile(source, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})


def sass_counts(compiled) -> Counter:
    """Opcode -> static count in the kernel's SASS (nvdisasm of the cubin)."""
    import triton

    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        sass = subprocess.run([str(nvdisasm), "-c", f.name], capture_output=True, text=True, check=True).stdout
    ops: Counter = Counter()
    for line in sass.splitlines():
        m = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m:
            ops[m.group(1)] += 1
    return ops


def engine_kernels(arch: int) -> dict[str, object]:
    """The engine's kernels with their default configurations: bottom MLP, interaction (paired layout, row
    indirection), a hidden top-MLP layer (512 x 1024, the persistent TMA GEMM, folded epilogue)."""
    from dlrm_bench.engines.cuda import bottom_mlp, interaction, top_mlp

    kernels = {}
    fn = bottom_mlp._bottom_mlp_kernel
    for name, fp16 in (("bottom_mlp", True), ("bottom_mlp_int8_l1", False)):
        types = {n: "*fp16" if n == "w1_ptr" and fp16 else "*i8" if n in ("x_ptr", "out_ptr") or n.startswith("w")
                 else "*i64" if n == "rows_ptr" else "*fp32" if n.endswith("_ptr") else "i32" for n in fn.arg_names}
        kernels[name] = compile_kernel(
            fn, types, {"K_IN": 13, "HAS_ROWS": True, "BLOCK_M": 64, "CHUNK": 128, "NUM_STAGES": 2, "L1_FP16": fp16},
            arch, 4, 2, [n for n, t in types.items() if t.startswith("*")])
    fn = interaction._interaction_kernel
    types = {n: INTERACTION_POINTERS.get(n, "i32") for n in fn.arg_names}
    kernels["interaction"] = compile_kernel(
        fn, types, {"NUM_TABLES": NUM_SPARSE, "HAS_ROWS": True, "HAS_COLD": False, "PACKED": False, "BLOCK_P": 4,
                    "ITERS": 1, "NUM_STAGES": 1, "PROBE_NO_SCATTER": False, "PAIRED": True}, arch, 4, 1,
        [*INTERACTION_POINTERS, "top_stride", "cat_stride"])
    fn = top_mlp._linear_int8_tma_kernel
    cfg = top_mlp.default_config(1024, False)
    types = {n: "tensordesc<i8[128, 128]>" if n.endswith("_desc") else "*i8" if n == "c_ptr"
             else "*fp32" if n.endswith("_ptr") else "fp32" if n == "final_b" else "i32" for n in fn.arg_names}
    kernels["top_512x1024"] = compile_kernel(
        fn, types, {"N": 1024, "K": 512, "FINAL": False, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n,
                    "BLOCK_K": cfg.block_k, "GROUP_M": cfg.group_m, "NUM_SMS": 132 * cfg.programs_per_sm,
                    "TMA_STORE": True, "WARP_SPECIALIZE": False, "FLATTEN": True,
                    "EPILOGUE": top_mlp.EPILOGUES[cfg.epilogue]}, arch, cfg.num_warps, cfg.num_stages,
        [n for n, t in types.items() if t.startswith("*")])
    return kernels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90 = Hopper)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    rows = {name: sass_counts(k) for name, k in engine_kernels(args.arch).items()}
    print(f"SASS instructions per kernel, sm_{args.arch} (static counts)")
    print(f"{'kernel':<14} {'total':>6} " + " ".join(f"{op:>6}" for op in SHOWN))
    for name, ops in rows.items():
        print(f"{name:<14} {sum(ops.values()):6d} " + " ".join(f"{ops[op]:6d}" for op in SHOWN))
    out = args.out or scratch_path() / "bench" / "sass_ops.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"arch": args.arch, "kernels": {k: dict(v) for k, v in rows.items()}}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
