"""The config files: which system this machine is, and the `Settings` of a (scenario, config_ver, engine) on it.

`configs/dlrm/systems.json` names the systems: each has a `match` (GPU name substring `gpu_name`, exact `gpus`, or
`min_gpus`), settings shared by every scenario, and may `extends` another system, whose settings (and scenario
entries) it inherits. `configs/dlrm/<Scenario>/config.json` holds, per system, blocks `default`, `high_accuracy`,
`triton`, `high_accuracy_triton` and `engines.<engine>`. Resolution, later wins:

    schema defaults (settings.py) <- the scenario file's `defaults` <- systems.json settings along the extends chain
    <- the scenario entries' blocks along the chain, in the order of config_ver_blocks (`high_accuracy_triton`:
    default, high_accuracy, triton, high_accuracy_triton) <- their `engines.<engine>` <- the machine's user
    settings (user_settings.py, from `dlrm-bench find-peak`) <- `--set KEY=VALUE`

Every file is checked whole before anything runs: an unknown setting, block or key anywhere is an error naming the
file, the entry, the key and the closest real name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dlrm_bench.errors import UserError
from dlrm_bench.json_files import read_json_object
from dlrm_bench.paths import configs_dir
from dlrm_bench.settings import Settings, closest_name
from dlrm_bench.system import SystemInfo
from dlrm_bench.user_settings import entry_for

SCENARIOS = ("Offline", "Server", "SingleStream")
CONFIG_VERS = ("default", "high_accuracy", "triton", "high_accuracy_triton")
TEST_MODES = ("PerformanceOnly", "AccuracyOnly")
ENGINES = ("reference", "cpu", "cuda")
SYSTEM_KEYS = ("match", "extends", "settings", "_comment")
MATCH_KEYS = ("gpu_name", "gpus", "min_gpus")
ENTRY_KEYS = (*CONFIG_VERS, "engines", "_comment")
FILE_KEYS = ("scenario", "defaults", "systems", "_comment")


def parse_choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """'Offline,Server' -> ['Offline', 'Server'], case-insensitive; unknown names are a UserError."""
    by_lower = {a.lower(): a for a in allowed}
    picked = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item.lower() not in by_lower:
            raise UserError(f"unknown {what} '{item}': choose from {', '.join(allowed)}")
        picked.append(by_lower[item.lower()])
    if not picked:
        raise UserError(f"no {what} given: choose from {', '.join(allowed)}")
    return picked


def systems_path() -> Path:
    return configs_dir() / "dlrm" / "systems.json"


def scenario_path(scenario: str) -> Path:
    return configs_dir() / "dlrm" / scenario / "config.json"


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected an object, found {json.dumps(value)}")
    return value


def _known_keys(block: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in block:
        if key not in allowed:
            raise UserError(f"{where}: unknown key '{key}'{closest_name(key, list(allowed))}; "
                            f"expected {', '.join(k for k in allowed if not k.startswith('_'))}")


def _checked(block: Any, where: str) -> dict[str, Any]:
    """A block of settings, validated against the schema."""
    Settings().with_values(_object(block, where), where)
    return block


@dataclass(frozen=True)
class SystemEntry:
    name: str
    match: dict[str, Any]
    extends: str | None
    settings: dict[str, Any]


def load_systems(path: Path | None = None) -> dict[str, SystemEntry]:
    """systems.json, checked: keys, match fields, settings, and that every `extends` names a system (no loop)."""
    path = path or systems_path()
    data = read_json_object(path, "config file")
    _known_keys(data, ("systems", "_comment"), str(path))
    systems: dict[str, SystemEntry] = {}
    for name, raw in _object(data.get("systems"), f"{path}: 'systems'").items():
        where = f"{path} (system {name})"
        entry = _object(raw, where)
        _known_keys(entry, SYSTEM_KEYS, where)
        match = _object(entry.get("match", {}), f"{where} 'match'")
        _known_keys(match, MATCH_KEYS, f"{where} 'match'")
        systems[name] = SystemEntry(name, match, entry.get("extends"),
                                    _checked(entry.get("settings", {}), f"{where} 'settings'"))
    for name in systems:
        chain(systems, name, path)
    return systems


def chain(systems: Mapping[str, SystemEntry], name: str, path: Path) -> list[str]:
    """[root, ..., name] along `extends`."""
    out: list[str] = []
    current: str | None = name
    while current is not None:
        if current not in systems:
            raise UserError(f"{path}: system '{out[-1]}' extends '{current}', which is not a system"
                            f"{closest_name(current, list(systems))}")
        if current in out:
            raise UserError(f"{path}: systems extend each other in a loop: {' -> '.join(out + [current])}")
        out.append(current)
        current = systems[current].extends
    return out[::-1]


def matches(match: Mapping[str, Any], system: SystemInfo) -> bool:
    if "gpus" in match and int(match["gpus"]) != system.gpus:
        return False
    if "min_gpus" in match and system.gpus < int(match["min_gpus"]):
        return False
    name = match.get("gpu_name")
    return name is None or any(str(name).lower() in g.lower() for g in system.gpu_names)


def pick_system(systems: Mapping[str, SystemEntry], system: SystemInfo) -> str:
    """The first system whose `match` fits this machine."""
    for name, entry in systems.items():
        if entry.match and matches(entry.match, system):
            return name
    raise UserError(f"{systems_path()}: no system matches this machine ({system.describe()}); add one with a "
                    f"'match' for it")


def load_scenario_file(path: Path, systems: Mapping[str, SystemEntry]) -> dict[str, Any]:
    """A scenario's config.json, checked whole (every block of every system, not only this machine's)."""
    data = read_json_object(path, "config file")
    _known_keys(data, FILE_KEYS, str(path))
    _checked(data.get("defaults", {}), f"{path} 'defaults'")
    for name, raw in _object(data.get("systems", {}), f"{path}: 'systems'").items():
        where = f"{path} (system {name})"
        if name not in systems:
            raise UserError(f"{where}: not a system of {systems_path()}{closest_name(name, list(systems))}")
        entry = _object(raw, where)
        _known_keys(entry, ENTRY_KEYS, where)
        for ver in CONFIG_VERS:
            _checked(entry.get(ver, {}), f"{where} '{ver}'")
        engines = _object(entry.get("engines", {}), f"{where} 'engines'")
        _known_keys(engines, ENGINES, f"{where} 'engines'")
        for engine, block in engines.items():
            _checked(block, f"{where} 'engines.{engine}'")
    return data


def config_ver_blocks(config_ver: str) -> list[str]:
    """The blocks a config_ver reads, in order: 'high_accuracy_triton' -> default, high_accuracy, triton,
    high_accuracy_triton."""
    blocks = ["default"]
    if config_ver.startswith("high_accuracy"):
        blocks.append("high_accuracy")
    if config_ver.endswith("triton"):
        blocks.append("triton")
    return blocks + ([config_ver] if config_ver not in blocks else [])


@dataclass(frozen=True)
class Resolved:
    """The settings of one run and where they came from."""

    system: str
    settings: Settings
    source: str


def resolve(scenario: str, config_ver: str, engine: str | None, system: SystemInfo,
            scenario_file: Path | None = None, overrides: Mapping[str, Any] | None = None,
            user_file: Path | None = None) -> Resolved:
    """The settings of (scenario, config_ver, engine) on this machine; engine None: the config's. `user_file`:
    the machine's user settings (user_settings.py), applied to their own scenario, config_ver and engine."""
    systems = load_systems()
    path = scenario_file or scenario_path(scenario)
    data = load_scenario_file(path, systems)
    name = pick_system(systems, system)
    names = chain(systems, name, systems_path())
    entries = [data.get("systems", {}).get(n, {}) for n in names]
    where = f"{path} (system {name}, config_ver {config_ver})"
    settings = Settings().with_values(data.get("defaults", {}), where)
    for n in names:
        settings = settings.with_values(systems[n].settings, where)
    for block in config_ver_blocks(config_ver):
        for entry in entries:
            settings = settings.with_values(entry.get(block, {}), where)
    chosen = engine or settings.engine
    if chosen:
        for entry in entries:
            settings = settings.with_values(entry.get("engines", {}).get(chosen, {}), where)
        settings = settings.with_values({"engine": chosen}, where)
    user = entry_for(user_file, scenario, config_ver, settings.engine) if user_file else None
    if user:
        settings = settings.with_values(user, str(user_file))
        where += f" + {user_file}"
    if overrides:
        settings = settings.with_values(overrides, "--set")
    return Resolved(name, settings, where)


def parse_overrides(items: list[str] | None, flag: str = "--set") -> dict[str, Any]:
    """['a=1', 'b=true', 'c=cpu'] -> {'a': 1, 'b': True, 'c': 'cpu'} (values parsed as JSON, else strings),
    checked against the schema (an unknown name or a bad value is a UserError naming `flag`, the option that gave
    them)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} expects KEY=VALUE, got '{item}'")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    Settings().with_values(out, flag)
    return out


def check_all_config_files() -> int:
    """Load and check systems.json and every scenario file; returns the number of scenario files."""
    systems = load_systems()
    for scenario in SCENARIOS:
        load_scenario_file(scenario_path(scenario), systems)
    return len(SCENARIOS)
