"""Hardware configuration files for sPyNNaker (``hardware_configs/spinnaker/*.cfg``).

sPyNNaker reads ``.spynnaker.cfg`` from the user's config folders and writes a template into ``$HOME``
when it finds none. The backend never touches the user's home: it writes the chosen file, plus a
[Reports] section that sends sPyNNaker's reports into the run folder, as ``<run>/config/.spynnaker.cfg``
and starts sPyNNaker in a process whose ``XDG_CONFIG_HOME`` points there.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

from neurodeploy.errors import BackendError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "hardware_configs" / "spinnaker"
DEFAULT_CONFIG = "virtual-spinn5.cfg"


@dataclass
class HardwareConfig:
    path: Path
    parser: configparser.ConfigParser

    @property
    def virtual(self) -> bool:
        return self.parser.getboolean("Machine", "virtual_board", fallback=False)

    @property
    def target(self) -> str:
        machine = self.parser["Machine"]
        if self.virtual:
            return f"virtual SpiNN-{machine.get('version', '5')} board"
        if "spalloc_server" in machine:
            return f"spalloc server {machine['spalloc_server']}"
        return f"SpiNN-{machine.get('version', '?')} board at {machine.get('machine_name', '?')}"

    def write_for_run(self, run_dir: Path) -> Path:
        """Writes the per-run config folder; returns it (the value for XDG_CONFIG_HOME)."""
        folder = run_dir / "config"
        folder.mkdir(parents=True, exist_ok=True)
        parser = configparser.ConfigParser()
        parser.read_dict(self.parser)
        if not parser.has_section("Reports"):
            parser.add_section("Reports")
        parser["Reports"]["default_report_file_path"] = str((run_dir / "reports").resolve())
        with (folder / ".spynnaker.cfg").open("w") as handle:
            parser.write(handle)
        return folder


def load_hardware_config(path: str | Path | None = None) -> HardwareConfig:
    """Reads a config file (default: the virtual SpiNN-5 board); raises BackendError when the file is
    missing or names no machine."""
    path = Path(path) if path else CONFIG_DIR / DEFAULT_CONFIG
    if not path.is_file():
        raise BackendError(f"{path}: no such hardware config (see {CONFIG_DIR} for examples)")
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as err:
        raise BackendError(f"{path}: not a valid sPyNNaker config file ({err})") from None
    machine = parser["Machine"] if parser.has_section("Machine") else {}
    if not (parser.getboolean("Machine", "virtual_board", fallback=False) or "machine_name" in machine
            or "spalloc_server" in machine):
        raise BackendError(f"{path}: [Machine] needs virtual_board = True, a machine_name or a spalloc_server")
    return HardwareConfig(path, parser)
