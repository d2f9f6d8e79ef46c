"""Hardware configuration files for sPyNNaker (``hardware_configs/spinnaker/*.cfg``, selected by path or by
short name: ``spinn5`` is ``hardware_configs/spinnaker/spinn5.cfg``), and a fast check that the machine
they name can be reached.

sPyNNaker reads ``.spynnaker.cfg`` from the user's config folders and writes a template into ``$HOME``
when it finds none. The backend never touches the user's home: it writes the chosen file, plus a
[Reports] section that sends sPyNNaker's reports into the run folder, as ``<run>/config/.spynnaker.cfg``
and starts sPyNNaker in a process whose ``XDG_CONFIG_HOME`` points there. Because that copy lands in
every run folder, a config file must hold no password: the spalloc service's comes from the environment
variable SPALLOC_PASSWORD, which sPyNNaker reads itself.

A config file is checked before any work, against the defaults the installed sPyNNaker packages ship
(``spinn_utilities``, ``spinn_machine``, ``spinnman``, ``pacman``, ``spinn_front_end_common`` and
``spynnaker``: their ``*.cfg``, which list every section and option they read): UTF-8 text, no unknown
section or option, no ``%`` interpolation, a value of the option's kind (a boolean where the default is
one, a whole number where it is one), and ``version`` one of the boards sPyNNaker knows. Otherwise
sPyNNaker only logs a warning into the run's log or fails after the network was converted and mapped.
"""

from __future__ import annotations

import configparser
import functools
import os
import socket
import time
from dataclasses import dataclass
from importlib import resources, util
from pathlib import Path
from urllib.parse import urlsplit

from neurodeploy.errors import BackendError
from neurodeploy.safe_io import clip, read_file, shorten

#: packages whose default config files list the options sPyNNaker reads, with the file's path in each
_DEFAULT_CFGS = (("spinn_utilities", "spinn_utilities.cfg"), ("spinn_machine", "spinn_machine.cfg"),
                 ("spinnman", "spinnman.cfg"), ("pacman", "pacman.cfg"),
                 ("spinn_front_end_common", "interface/spinnaker.cfg"), ("spynnaker", "pyNN/spynnaker.cfg"))
#: board versions sPyNNaker knows (spinn_machine.cfg: 3, 5, 201, 248)
BOARD_VERSIONS = ("3", "5", "201", "248")
#: largest config file read
_MAX_CONFIG_BYTES = 1 << 20
_BOOLEANS = {"1", "yes", "true", "on", "0", "no", "false", "off"}

#: the shipped configs: package data of ``neurodeploy.hardware_configs`` (the repository's ``hardware_configs/``)
CONFIG_DIR = Path(str(resources.files("neurodeploy.hardware_configs") / "spinnaker"))
DEFAULT_CONFIG = "virtual-spinn5.cfg"
#: UDP port on which a booted SpiNNaker board (SC&MP) answers SCP requests
SCAMP_PORT = 17893
#: TCP port of a spalloc server speaking the original (non-HTTP) protocol
SPALLOC_PORT = 22244


@dataclass
class HardwareConfig:
    path: Path
    parser: configparser.ConfigParser

    @property
    def virtual(self) -> bool:
        return self.parser.getboolean("Machine", "virtual_board", fallback=False)

    @property
    def allocated(self) -> bool:
        """The machine is allocated by a service (a spalloc server or a remote SpiNNaker service), which
        takes the number of boards to allocate."""
        machine = self.parser["Machine"]
        return "spalloc_server" in machine or "remote_spinnaker_url" in machine

    @property
    def target(self) -> str:
        machine = self.parser["Machine"]
        if self.virtual:
            return f"virtual SpiNN-{machine.get('version', '5')} board"
        if "spalloc_server" in machine:
            return f"spalloc server {machine['spalloc_server']}"
        if "remote_spinnaker_url" in machine:
            return f"remote SpiNNaker service {machine['remote_spinnaker_url']}"
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


def available_hardware_configs() -> list[str]:
    """Short names of the shipped configs (``hardware_configs/spinnaker/<name>.cfg``)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.cfg"))


def _resolve(name: str | Path | None) -> Path:
    """A config file's path: an existing file, or a short name (with or without ``.cfg``) of a shipped one."""
    if not name:
        return CONFIG_DIR / DEFAULT_CONFIG
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix == ".cfg" else f"{path.name}.cfg")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise BackendError(f"{name}: no such hardware config; give a .cfg file or one of "
                       f"{', '.join(available_hardware_configs())} (in {CONFIG_DIR})")


@functools.cache
def known_options() -> dict[str, dict[str, str]] | None:
    """section -> option -> default value, from the installed sPyNNaker packages' default configs (option
    names lower case, as configparser keeps them); None when sPyNNaker is not installed."""
    known: dict[str, dict[str, str]] = {}
    for package, relative in _DEFAULT_CFGS:
        spec = util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        parser = configparser.RawConfigParser()
        parser.read(Path(next(iter(spec.submodule_search_locations))) / relative, encoding="utf-8")
        for section in parser.sections():
            options = known.setdefault(section, {})
            options.update({k: v for k, v in parser[section].items() if not k.startswith("@")})
    return known


def _check_value(path: Path, section: str, option: str, value: str, default: str | None) -> None:
    where = f"{path}: [{section}] {option} = {shorten(value, 40)}"
    lowered = value.strip().lower()
    if option == "version" and section == "Machine" and value.strip() not in BOARD_VERSIONS:
        raise BackendError(f"{where}: not a board version sPyNNaker knows ({', '.join(BOARD_VERSIONS)})")
    if default is None or default.strip().lower() == "none" or lowered == "none":
        return
    if default.strip().lower() in ("true", "false") and lowered not in _BOOLEANS:
        raise BackendError(f"{where}: not a boolean (True or False)")
    if default.strip().lstrip("-").isdigit():
        try:
            int(value)
        except ValueError:
            raise BackendError(f"{where}: not a whole number") from None


def _check_options(path: Path, parser: configparser.ConfigParser) -> None:
    """Every section, option and value of ``parser`` against sPyNNaker's defaults (:func:`known_options`)."""
    known = known_options()
    for section in parser.sections():
        options = None if known is None else known.get(section)
        if known is not None and options is None:
            raise BackendError(f"{path}: unknown section [{shorten(section, 40)}] (sPyNNaker reads "
                               f"{', '.join(sorted(known))})")
        for option in parser[section]:
            if options is not None and option not in options:
                raise BackendError(f"{path}: [{section}] has no option {clip(option, 40)} in sPyNNaker (a typo?)")
            try:
                value = parser[section][option]
            except configparser.Error as err:  # % interpolation that does not resolve
                raise BackendError(f"{path}: [{section}] {option}: {str(err).splitlines()[0][:120]} (a '%' must "
                                   "be written '%%')") from None
            _check_value(path, section, option, value, None if options is None else options.get(option))


def load_hardware_config(name: str | Path | None = None) -> HardwareConfig:
    """Reads a config file, given as a path or as the short name of a shipped one (default: the virtual
    SpiNN-5 board); raises BackendError when the file is missing, not UTF-8, malformed, holds an option
    sPyNNaker does not know or a value of the wrong kind, names no machine or holds a password."""
    path = _resolve(name)
    parser = configparser.ConfigParser()
    data = read_file(path, _MAX_CONFIG_BYTES, BackendError, "hardware config")
    try:
        parser.read_string(data.decode("utf-8"), source=str(path))
    except UnicodeDecodeError as err:
        raise BackendError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except configparser.Error as err:
        raise BackendError(f"{path}: not a valid sPyNNaker config file ({' '.join(str(err).split())[:160]})"
                           ) from None
    _check_options(path, parser)
    machine = parser["Machine"] if parser.has_section("Machine") else {}
    named = [key for key in ("machine_name", "spalloc_server", "remote_spinnaker_url") if key in machine]
    if parser.getboolean("Machine", "virtual_board", fallback=False):
        named.append("virtual_board")
    if len(named) != 1:
        raise BackendError(f"{path}: [Machine] needs exactly one of virtual_board = True, machine_name, spalloc_server "
                           f"or remote_spinnaker_url (found: {', '.join(named) or 'none'})")
    if "spalloc_password" in machine or urlsplit(machine.get("spalloc_server", "")).password is not None:
        raise BackendError(f"{path}: holds a spalloc password; remove it and set SPALLOC_PASSWORD (config files "
                           "are copied into every run folder)")
    return HardwareConfig(path, parser)


def _check_board(host: str, port: int, timeout_s: float) -> str:
    """Sends an SCP version request through spinnman's own connection and waits for any answer: a UDP send
    alone reports nothing, while a connected socket's receive reports an ICMP refusal at once."""
    from spinnman.connections.udp_packet_connections import SCAMPConnection
    from spinnman.exceptions import SpinnmanException, SpinnmanTimeoutException
    from spinnman.messages.scp.impl import GetVersion

    start = time.perf_counter()
    connection = None
    try:
        connection = SCAMPConnection(0, 0, remote_host=host, remote_port=port)
        connection.send(connection.get_scp_data(GetVersion(0, 0, 0)))
        connection.receive(timeout_s)
    except SpinnmanTimeoutException:
        raise BackendError(f"SpiNNaker board {host}: no answer to an SCP version request on UDP port {port} within "
                           f"{timeout_s:g} s (switched off, unreachable, or on but not booted yet)") from None
    except (SpinnmanException, OSError) as err:
        raise BackendError(f"SpiNNaker board {host}: SCP on UDP port {port} failed ({err})") from None
    finally:
        if connection is not None:
            connection.close()
    return f"SpiNNaker board {host} answered SCP on UDP port {port} in {1000 * (time.perf_counter() - start):.0f} ms"


def _spalloc_address(machine: configparser.SectionProxy) -> tuple[str, int]:
    """(host, port) of the spalloc server; raises BackendError when the HTTP service's password is not in
    SPALLOC_PASSWORD (the original protocol has none)."""
    server = machine["spalloc_server"]
    parts = urlsplit(server if "://" in server else f"spalloc://{server}")
    if parts.scheme in ("http", "https"):
        if not os.environ.get("SPALLOC_PASSWORD"):
            raise BackendError(f"spalloc server {server} needs a password: set the environment variable "
                               "SPALLOC_PASSWORD")
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", parts.port or machine.getint("spalloc_port", fallback=SPALLOC_PORT)


def check_reachable(config: HardwareConfig, timeout_s: float = 3.0, port: int | None = None) -> str:
    """Checks within about ``timeout_s`` seconds that the machine of ``config`` answers: a board (machine_name)
    must answer an SCP version request on UDP port 17893; a spalloc server must accept a TCP connection
    (port from its URL, ``spalloc_port``, or 22244; 80 / 443 for the HTTP service, which also needs
    SPALLOC_PASSWORD). ``port`` overrides the port. Returns one line on what answered; raises a one-line
    BackendError naming the address and the cause. A virtual board needs nothing."""
    if config.virtual:
        return "virtual board: nothing to reach"
    machine = config.parser["Machine"]
    if "machine_name" in machine:
        return _check_board(machine["machine_name"], port or SCAMP_PORT, timeout_s)
    if "remote_spinnaker_url" in machine:
        what, url = "remote SpiNNaker service", urlsplit(machine["remote_spinnaker_url"])
        host, server_port = url.hostname or "", url.port or (80 if url.scheme == "http" else 443)
    else:
        what, (host, server_port) = "spalloc server", _spalloc_address(machine)
    server_port = port or server_port
    start = time.perf_counter()
    try:
        with socket.create_connection((host, server_port), timeout=timeout_s):
            pass
    except OSError as err:
        cause = f"no answer within {timeout_s:g} s" if isinstance(err, TimeoutError) else str(err)
        raise BackendError(f"{what} {host}:{server_port} is not reachable ({cause})") from None
    return f"{what} {host}:{server_port} accepted a TCP connection in " \
           f"{1000 * (time.perf_counter() - start):.0f} ms"
