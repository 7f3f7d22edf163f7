"""The interaction kernel compiled for a GPU target on any machine (no GPU needed): how its output is stored,
per column layout, from the PTX. One-byte stores (st.global.b8) against two-byte ones (st.global.b16) are the
difference between the "triangle" and "paired" layouts (engines/cuda/interaction.py).

    .venv/bin/python benchmarks/ptx_stores.py                 # sm_90 (H100 / H200)
    .venv/bin/python benchmarks/ptx_stores.py --arch 100 --block-p 8

Prints a table and writes build/bench/ptx_stores.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # compile for real, even where the project would use the interpreter
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dlrm_bench.criteo.schema import NUM_SPARSE  # noqa: E402
from dlrm_bench.engines.cuda import interaction  # noqa: E402
from dlrm_bench.paths import scratch_path  # noqa: E402


def compile_ptx(layout: str, arch: int, block_p: int, num_warps: int) -> str:
    """PTX of the interaction kernel (row indirection, all rows on the device, plain ids) for `layout`."""
    from sass_ops import INTERACTION_POINTERS as POINTERS, compile_kernel

    fn = interaction._interaction_kernel
    constexprs = {"NUM_TABLES": NUM_SPARSE, "HAS_ROWS": True, "HAS_COLD": False, "PACKED": False,
                  "BLOCK_P": block_p, "ITERS": 1, "NUM_STAGES": 1, "PROBE_NO_SCATTER": False,
                  "PAIRED": layout == "paired"}
    types = {name: POINTERS.get(name, "i32") for name in fn.arg_names}
    return compile_kernel(fn, types, constexprs, arch, num_warps, 1,
                          [*POINTERS, "top_stride", "cat_stride"]).asm["ptx"]


def store_counts(ptx: str) -> dict[str, int]:
    """Global store instructions by kind (st.global.b8, st.global.b16, st.global.v4.b32, ...)."""
    return dict(Counter(m.split(" ")[0] for m in re.findall(r"st\.global[.\w]*", ptx)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90 = Hopper)")
    p.add_argument("--block-p", type=int, default=4, help="pairs per program (the engine's default is 4)")
    p.add_argument("--num-warps", type=int, default=4)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    rows = {}
    for layout in interaction.LAYOUTS:
        rows[layout] = store_counts(compile_ptx(layout, args.arch, args.block_p, args.num_warps))
    print(f"interaction kernel, sm_{args.arch}, {args.block_p} pairs per program, {args.num_warps} warps: "
          f"global stores per thread in the PTX")
    for layout, counts in rows.items():
        print(f"  {layout:<9} " + ", ".join(f"{n} x {kind}" for kind, n in sorted(counts.items())))
    out = args.out or scratch_path() / "bench" / "ptx_stores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"arch": args.arch, "block_p": args.block_p, "num_warps": args.num_warps,
                               "stores": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
