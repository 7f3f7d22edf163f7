"""The per-machine user settings file that `dlrm-bench find-peak` writes and later runs read.

`$MLPERF_SCRATCH_PATH/user_settings/<system id>.json` holds, per scenario and config_ver, the settings found on
this machine (Server: server_target_qps; Offline: offline_expected_qps), the engine they were found with and how
(date, commit, the search's steps). A run applies an entry only for its own scenario, config_ver and engine, after
the config files and before `--set` (configs.resolve).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrm_bench.atomic import save_json
from dlrm_bench.errors import UserError
from dlrm_bench.json_files import read_json_object
from dlrm_bench.paths import scratch_path
from dlrm_bench.settings import Settings


def user_settings_path(system_id: str) -> Path:
    return scratch_path() / "user_settings" / f"{system_id}.json"


def read_user_settings(path: Path) -> dict[str, Any]:
    """The file's content ({} when absent); a malformed file is a UserError naming it."""
    return read_json_object(path, "user settings file") if path.exists() else {}


def entry_for(path: Path, scenario: str, config_ver: str, engine: str | None) -> dict[str, Any] | None:
    """The settings of (scenario, config_ver) in the file when they were found with `engine`, checked against
    the schema; None when there are none."""
    entry = read_user_settings(path).get(scenario, {}).get(config_ver)
    if not isinstance(entry, dict) or entry.get("engine") != engine:
        return None
    settings = entry.get("settings")
    where = f"{path} ({scenario} {config_ver})"
    if not isinstance(settings, dict):
        raise UserError(f"{where}: expected a 'settings' object")
    Settings().with_values(settings, where)
    return settings


def record_entry(path: Path, scenario: str, config_ver: str, engine: str, settings: dict[str, Any],
                 found: dict[str, Any]) -> None:
    """Write (atomically) the settings found for (scenario, config_ver, engine), keeping the other entries."""
    data = read_user_settings(path)
    data.setdefault("_comment", "written by `dlrm-bench find-peak`; later runs on this machine apply each entry to "
                                "its scenario, config_ver and engine (before --set)")
    data.setdefault(scenario, {})[config_ver] = {"engine": engine, "settings": settings, "found": found}
    save_json(path, data)
