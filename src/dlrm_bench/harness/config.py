"""Per-system, per-config_ver settings from `configs/dlrm/<Scenario>/config.json` (configuration is data)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dlrm_bench.errors import UserError
from dlrm_bench.setting_checks import check_settings, unknown_settings
from dlrm_bench.harness.system import SystemInfo
from dlrm_bench.paths import configs_dir

SCENARIOS = ("Offline", "Server", "SingleStream")
CONFIG_VERS = ("default", "high_accuracy", "triton", "high_accuracy_triton")
TEST_MODES = ("PerformanceOnly", "AccuracyOnly")
CONFIG_VER_BASE = {"triton": "default", "high_accuracy_triton": "high_accuracy"}
"""Triton config_vers start from the in-process settings of the same accuracy level."""


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


def config_path(scenario: str) -> Path:
    return configs_dir() / "dlrm" / scenario / "config.json"


def load_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path}: config file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data.get("systems"), dict) or not data["systems"]:
        raise UserError(f"{path}: expected a 'systems' object with at least one system")
    return data


def _matches(match: dict[str, Any], system: SystemInfo) -> bool:
    if "gpus" in match and int(match["gpus"]) != system.gpus:
        return False
    name = match.get("gpu_name")
    return name is None or any(name.lower() in g.lower() for g in system.gpu_names)


def pick_system(config: dict[str, Any], system: SystemInfo, path: Path) -> str:
    """The first system entry whose 'match' fits this machine."""
    for name, entry in config["systems"].items():
        if _matches(entry.get("match", {}), system):
            return name
    raise UserError(f"{path}: no system entry matches this machine ({system.describe()}); "
                    f"add one with a 'match' for it")


def resolve_settings(config: dict[str, Any], system_name: str, config_ver: str,
                     engine: str | None) -> dict[str, Any]:
    """Merge defaults <- system default <- config_ver <- engine overrides. Returns a flat settings dict."""
    entry = config["systems"][system_name]
    settings: dict[str, Any] = dict(config.get("defaults", {}))
    settings.update(entry.get("default", {}))
    base_ver = CONFIG_VER_BASE.get(config_ver)
    if base_ver and base_ver != "default":
        settings.update(entry.get(base_ver, {}))
    if config_ver != "default":
        settings.update(entry.get(config_ver, {}))
    chosen = engine or settings.get("engine")
    settings.update(entry.get("engines", {}).get(chosen, {}))
    settings["engine"] = chosen
    settings["system_config"] = system_name
    return settings


def scenario_settings(scenario: str, config_ver: str, engine: str | None, system: SystemInfo,
                      override_path: Path | None = None) -> dict[str, Any]:
    """Everything the run needs for one (scenario, config_ver) on this machine."""
    path = override_path or config_path(scenario)
    config = load_config_file(path)
    name = pick_system(config, system, path)
    settings = resolve_settings(config, name, config_ver, engine)
    check_settings(settings, f"{path} (system {name}, config_ver {config_ver})")
    return settings


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['a=1', 'b=true', 'c=cpu'] -> {'a': 1, 'b': True, 'c': 'cpu'} (values parsed as JSON, else strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    check_settings(out, "--set")
    unwarned = [key for key in out if key not in _WARNED]
    for key, close in unknown_settings(unwarned, shipped_setting_names()) if unwarned else []:
        hint = f" (did you mean {close}?)" if close else ""
        print(f"warning: --set {key}: no part of dlrm-bench reads this setting{hint}", file=sys.stderr)
    _WARNED.update(out)
    return out


_WARNED: set[str] = set()
"""--set names already looked at in this process (each run parses the flags again: warn once)."""


def shipped_setting_names() -> set[str]:
    """Every setting name the shipped config files use, in any system entry."""
    names: set[str] = set()
    for scenario in SCENARIOS:
        config = load_config_file(config_path(scenario))
        names.update(config.get("defaults", {}))
        for entry in config["systems"].values():
            for part in (entry.get(ver, {}) for ver in CONFIG_VERS):
                names.update(part)
            for overrides in entry.get("engines", {}).values():
                names.update(overrides)
    return names
