"""What an MLPerf compliance test's `audit.config` asks of LoadGen, read and applied to its TestSettings.

LoadGen 6.0 reads an audit.config passed to StartTestWithLogSettings for `mode`, `accuracy_log_rng_seed`,
`accuracy_log_sampling_target` and the other plain keys, but ignores its seed and `test05*` keys: TEST05 seeds take
effect only through `TestSettings.test05 = True` and `TestSettings.test05_*_rng_seed`, which
`apply_audit_settings` sets (to the round's TEST05 seeds, mlperf_rules.test05_seeds, unless the file names others).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrm_bench.errors import UserError
from dlrm_bench.mlperf_rules import SEED_NAMES, test05_seeds

def read_audit_config(path: Path, scenario: str, model: str = "dlrm") -> dict[str, str]:
    """key -> value for this model and scenario (exact > '*.scenario' > 'model.*' > '*.*', as LoadGen looks up)."""
    entries: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the audit config ({exc.strerror})") from None
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        key, sep, value = (part.strip() for part in text.partition("="))
        if not sep or key.count(".") < 2 or not value:
            raise UserError(f"{path}:{number}: expected 'model.scenario.key = value', found {line.strip()!r}")
        entries[key] = value
    found: dict[str, str] = {}
    for prefix in ("*.*.", f"{model}.*.", f"*.{scenario}.", f"{model}.{scenario}."):  # later wins
        found.update({k[len(prefix):]: v for k, v in entries.items() if k.startswith(prefix)})
    return found


def _int(value: str, path: Path, key: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise UserError(f"{path}: {key} must be an integer, found {value!r}") from None


def apply_audit_settings(ts: Any, path: Path, scenario: str) -> None:
    """Set on LoadGen TestSettings `ts` what an audit.config asks for that LoadGen 6 does not read from it:
    `test05 = 1` with `test05_*_rng_seed` keys, or (older TEST05 configs) plain `*_rng_seed` keys, become
    ts.test05 = True and ts.test05_*_rng_seed. Everything else LoadGen reads from the file itself."""
    keys = read_audit_config(path, scenario)
    seeds = {name: keys.get(f"test05_{name}") for name in SEED_NAMES}
    plain = {name: keys.get(name) for name in SEED_NAMES}
    if keys.get("test05", "0") not in ("0", "") or any(plain.values()):
        defaults = test05_seeds()
        for name in SEED_NAMES:
            value = seeds[name] or plain[name]
            chosen = _int(value, path, name) if value else defaults[name]
            setattr(ts, f"test05_{name}", chosen)
        ts.test05 = True
