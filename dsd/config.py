"""Settings for dsd: /etc/dsd.toml -> frozen, validated :class:`Settings`.

Every key is described once, in ``_KEYS``: its TOML type, default, check and a description
of what is allowed. Parsing, error messages and :func:`render_settings` all read that
table, so adding a setting means one table entry plus one dataclass field.

dsd, dsctl and dschat all call :func:`load_settings`, so they agree on the endpoints.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import pwd
import re
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dsd.core.link_messages import utf8_size

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DEFAULT_PATH = "/etc/dsd.toml"

_NO_FILE = "built-in defaults"

# Longest ipc:// path ZeroMQ can bind on Linux: sizeof(sockaddr_un.sun_path) - 1.
_IPC_PATH_MAX = 107
MIN_HEARTBEATS_PER_TIMEOUT = 3  # fewer, and one late heartbeat makes a peer suspect
MAX_PEERS = 256  # configured [cluster] peers: one is enough, members are learned from it


class ConfigError(Exception):
    """A bad configuration.

    ``str(e)`` is one line: ``<file or 'built-in defaults'>: [section] key = <value>: <what
    is allowed>``, so it can go straight to stderr or a journal.
    """


@dataclass(frozen=True)
class NodeSettings:
    name: str
    priority: int
    runtime_dir: str
    state_dir: str


@dataclass(frozen=True)
class ClusterSettings:
    group: str
    port: int
    interface: str
    ttl: int
    secret_file: str
    multicast: bool
    peers: tuple[str, ...]
    bind: str


@dataclass(frozen=True)
class TimingSettings:
    heartbeat_interval: float
    failure_timeout: float
    discovery_timeout: float


@dataclass(frozen=True)
class ElectionSettings:
    preempt: bool


@dataclass(frozen=True)
class ControlSettings:
    endpoint: str
    feed: str
    tcp_endpoint: str
    tcp_feed: str
    server_key: str
    client_keys: str
    any_client: bool
    admin_keys: str


@dataclass(frozen=True)
class ChatSettings:
    peer_endpoint: str
    client_timeout: float
    max_message: int
    rate: float
    burst: int
    retention: int
    max_clients: int
    bootstrap_expect: int
    remove_dead_after: float


@dataclass(frozen=True)
class MetricsSettings:
    listen: str


@dataclass(frozen=True)
class LogSettings:
    level: str
    format: str


@dataclass(frozen=True)
class Settings:
    node: NodeSettings
    cluster: ClusterSettings
    timing: TimingSettings
    election: ElectionSettings
    control: ControlSettings
    chat: ChatSettings
    metrics: MetricsSettings
    log: LogSettings
    source: str | None  # the file actually loaded; None = built-in defaults


# Section name -> its dataclass, in the order sections are rendered.
_SECTIONS: dict[str, type] = {
    "node": NodeSettings,
    "cluster": ClusterSettings,
    "timing": TimingSettings,
    "election": ElectionSettings,
    "control": ControlSettings,
    "chat": ChatSettings,
    "metrics": MetricsSettings,
    "log": LogSettings,
}

# Effective values so far, by section and key: computed defaults may depend on earlier keys.
_Values = dict[str, dict[str, Any]]
_ComputedDefault = Callable[[Mapping[str, str], _Values], Any]


@dataclass(frozen=True)
class _Key:
    """One setting: everything the parser, the error messages and the renderer need."""

    section: str
    name: str
    kind: type  # bool, int, float, str or list as written in TOML; float also accepts an int
    default: Any  # a plain value, or a _ComputedDefault called with (env, values so far)
    check: Callable[[Any], bool]  # applied after the type test and normalisation
    allowed: str  # what is allowed, for error messages
    normalize: Callable[[Any], Any] | None = None
    culprit: Callable[[Any], str] | None = None  # for a list: which entry is wrong, and why


# --- checks -------------------------------------------------------------------------------

_NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_INTERFACE_NAME = re.compile(r"[A-Za-z0-9._:-]{1,15}")
_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _is_multicast_group(text: str) -> bool:
    address = _ipv4(text)
    return address is not None and address.is_multicast


def _is_interface(text: str) -> bool:
    """"" (system default), an IPv4 address, or something that can be an interface name.

    Digits and dots only is taken for a mistyped address (``10.0.0.300``), not a name.
    """
    if text == "" or _ipv4(text) is not None:
        return True
    return bool(_INTERFACE_NAME.fullmatch(text)) and not _DIGITS_AND_DOTS.fullmatch(text)


def _is_absolute_path(text: str) -> bool:
    """Absolute, because ``dsd --daemon`` changes directory to / when it detaches."""
    return os.path.isabs(text) and "\0" not in text


def is_ipc_endpoint(text: str) -> bool:
    """ipc://PATH only: the main control socket and feed are guarded by file permissions.

    TCP goes through tcp_endpoint/tcp_feed, which are CURVE-encrypted and check client keys.
    """
    address = text.removeprefix("ipc://")
    size = utf8_size(address)
    return (text.startswith("ipc://") and bool(address) and "\0" not in address
            and size is not None and size <= _IPC_PATH_MAX)


def is_tcp_endpoint(text: str, any_port: bool = False) -> bool:
    """tcp://HOST:PORT, PORT a number (or * when `any_port`)."""
    host, separator, port = text.removeprefix("tcp://").rpartition(":")
    port_ok = (port.isascii() and port.isdigit() and 0 < int(port) < 65536) or (any_port and port == "*")
    host_ok = bool(host) and host.isprintable() and not any(c.isspace() for c in host)
    return text.startswith("tcp://") and bool(separator) and host_ok and port_ok


def _is_peer_endpoint(text: str) -> bool:
    """"" (the multicast interface's address, any free port) or tcp://HOST:PORT (PORT may be *)."""
    return text == "" or is_tcp_endpoint(text, any_port=True)


def _is_listen_address(text: str) -> bool:
    """"" (off) or HOST:PORT, HOST an IPv4 address or a host name, PORT from 1 to 65535."""
    if text == "":
        return True
    host, separator, port = text.rpartition(":")
    port_ok = port.isascii() and port.isdigit() and 0 < int(port) < 65536
    host_ok = _ipv4(host) is not None or (bool(_HOST_NAME.fullmatch(host)) and not _DIGITS_AND_DOTS.fullmatch(host))
    return bool(separator) and port_ok and host_ok


def parse_peer(entry: str, default_port: int) -> tuple[str, int] | None:
    """A `[cluster] peers` entry "HOST" or "HOST:PORT" as (host, port); None if malformed.

    HOST is an IPv4 address or a host name (resolved when the daemon starts, and again
    while the peer stays unreachable); PORT defaults to `[cluster] port`.
    """
    host, separator, port = entry.rpartition(":")
    if not separator:
        host, port = entry, str(default_port)
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    if _ipv4(host) is None and (not _HOST_NAME.fullmatch(host) or _DIGITS_AND_DOTS.fullmatch(host)):
        return None
    return host, int(port)


def _is_peer_list(value: tuple[Any, ...]) -> bool:
    return _bad_peer(value) == ""


def _bad_peer(value: tuple[Any, ...] | list[Any]) -> str:
    """"" if `value` is a good peer list, else which entry is wrong (appended to the error)."""
    if len(value) > MAX_PEERS:
        return f"; {len(value)} entries"
    seen: set[str] = set()
    for entry in value:
        if not isinstance(entry, str) or parse_peer(entry, 1) is None:
            return f"; {_toml(entry)} is not"
        if entry in seen:
            return f"; {_toml(entry)} is there twice"
        seen.add(entry)
    return ""


def _int_range(low: int, high: int) -> Callable[[int], bool]:
    return lambda value: low <= value <= high


def _seconds_up_to(high: float) -> Callable[[float], bool]:
    return lambda value: 0 < value <= high


_LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


# --- computed defaults --------------------------------------------------------------------


def _first_absolute(paths: str | None) -> str | None:
    """The first of systemd's colon-separated directories, if it is an absolute path."""
    first = (paths or "").split(":")[0]
    return first if os.path.isabs(first) else None


def _default_runtime_dir(env: Mapping[str, str], values: _Values) -> str:
    systemd = _first_absolute(env.get("RUNTIME_DIRECTORY"))
    if systemd:
        return systemd
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):  # the XDG spec says to ignore a relative value
        return os.path.join(xdg, "dsd")
    return f"/tmp/dsd-{os.getuid()}"


def _default_state_dir(env: Mapping[str, str], values: _Values) -> str:
    """Returns "" when no home directory is known, so the usual error asks for a value."""
    systemd = _first_absolute(env.get("STATE_DIRECTORY"))
    if systemd:
        return systemd
    uid = os.getuid()
    if uid == 0:
        return "/var/lib/dsd"
    home = env.get("HOME", "")
    if not os.path.isabs(home):
        try:
            home = pwd.getpwuid(uid).pw_dir
        except KeyError:
            return ""
    return os.path.join(home, ".local", "state", "dsd")


def _socket_in_runtime_dir(filename: str) -> _ComputedDefault:
    return lambda env, values: "ipc://" + os.path.join(values["node"]["runtime_dir"], filename)


def _in_state_dir(filename: str) -> _ComputedDefault:
    return lambda env, values: os.path.join(values["node"]["state_dir"], filename)


# --- the table ----------------------------------------------------------------------------

_SECONDS = "a number of seconds"
_ENDPOINT = (f'"ipc://PATH" (PATH at most {_IPC_PATH_MAX} bytes); for clients on other hosts set '
             'tcp_endpoint and tcp_feed (encrypted, client keys checked)')
_CERTIFICATES = '"" (none) or the absolute path of a directory of client certificates (NAME.key)'

_KEYS: tuple[_Key, ...] = (
    _Key("node", "name", str, lambda env, values: socket.gethostname(),
         lambda v: bool(_NODE_NAME.fullmatch(v)), "1-64 characters of A-Z a-z 0-9 . _ -"),
    _Key("node", "priority", int, 100,
         _int_range(0, 2**31 - 1), f"an integer from 0 to {2**31 - 1}"),
    _Key("node", "runtime_dir", str, _default_runtime_dir,
         _is_absolute_path, "an absolute path"),
    _Key("node", "state_dir", str, _default_state_dir,
         _is_absolute_path, "an absolute path"),
    _Key("cluster", "group", str, "239.255.77.1",
         _is_multicast_group, "an IPv4 multicast address (224.0.0.0/4) as a string"),
    _Key("cluster", "port", int, 5008,
         _int_range(1, 65535), "an integer from 1 to 65535"),
    _Key("cluster", "interface", str, "",
         _is_interface, '"" (system default), an IPv4 address, '
                        "or an interface name of 1-15 characters of A-Z a-z 0-9 . _ : -"),
    _Key("cluster", "ttl", int, 1,
         _int_range(0, 255), "an integer from 0 to 255"),
    _Key("cluster", "secret_file", str, "",
         lambda v: v == "" or _is_absolute_path(v),
         '"" (none: cluster traffic is not authenticated) or the absolute path of a key file'),
    _Key("cluster", "multicast", bool, True,
         lambda v: True, "true or false"),
    _Key("cluster", "peers", list, (),
         _is_peer_list, f'a list of at most {MAX_PEERS} different "HOST" or "HOST:PORT" strings '
                        "(HOST an IPv4 address or a host name, PORT from 1 to 65535)",
         normalize=tuple, culprit=_bad_peer),
    _Key("cluster", "bind", str, "0.0.0.0",
         lambda v: _ipv4(v) is not None, "an IPv4 address of this host, or \"0.0.0.0\" (all)"),
    _Key("timing", "heartbeat_interval", float, 0.2,
         _seconds_up_to(60.0), f"{_SECONDS}, more than 0 and at most 60"),
    _Key("timing", "failure_timeout", float, 1.0,
         math.isfinite, f"{_SECONDS}, at least {MIN_HEARTBEATS_PER_TIMEOUT} * heartbeat_interval"),
    _Key("timing", "discovery_timeout", float, 0.2,
         _seconds_up_to(60.0), f"{_SECONDS}, more than 0 and at most 60"),
    _Key("election", "preempt", bool, True,
         lambda v: True, "true or false"),
    _Key("control", "endpoint", str, _socket_in_runtime_dir("dsd.ctl"),
         is_ipc_endpoint, _ENDPOINT),
    _Key("control", "feed", str, _socket_in_runtime_dir("dsd.feed"),
         is_ipc_endpoint, _ENDPOINT),
    _Key("control", "tcp_endpoint", str, "",
         lambda v: v == "" or is_tcp_endpoint(v), '"" (none) or "tcp://HOST:PORT" (HOST may be *)'),
    _Key("control", "tcp_feed", str, "",
         lambda v: v == "" or is_tcp_endpoint(v), '"" (none) or "tcp://HOST:PORT" (HOST may be *)'),
    _Key("control", "server_key", str, _in_state_dir("server.key_secret"),
         _is_absolute_path, "the absolute path of the daemon's secret certificate (made if missing)"),
    _Key("control", "client_keys", str, "",
         lambda v: v == "" or _is_absolute_path(v), _CERTIFICATES),
    _Key("control", "any_client", bool, False,
         lambda v: True, "true or false"),
    _Key("control", "admin_keys", str, "",
         lambda v: v == "" or _is_absolute_path(v), _CERTIFICATES),
    _Key("chat", "peer_endpoint", str, "",
         _is_peer_endpoint, '"" (the cluster interface\'s address, a free port) or "tcp://HOST:PORT" (PORT may be *)'),
    _Key("chat", "client_timeout", float, 10.0,
         lambda v: 1 <= v <= 3600, f"{_SECONDS} from 1 to 3600"),
    _Key("chat", "max_message", int, 4096,
         _int_range(1, 65536), "a number of bytes from 1 to 65536"),
    _Key("chat", "rate", float, 20.0,
         lambda v: 0 < v <= 1e6, "messages per second per client, more than 0 and at most 1000000"),
    _Key("chat", "burst", int, 50,
         _int_range(1, 10**6), "an integer from 1 to 1000000"),
    _Key("chat", "retention", int, 100_000,
         _int_range(100, 10**9), "a number of entries from 100 to 1000000000"),
    _Key("chat", "max_clients", int, 1000,
         _int_range(1, 10**6), "a number of users from 1 to 1000000"),
    _Key("chat", "bootstrap_expect", int, 0,
         _int_range(0, 1000), "0 (form the chat with whoever is there) or the daemons to wait for, at most 1000"),
    _Key("chat", "remove_dead_after", float, 30.0,
         lambda v: 1 <= v <= 86400, "seconds from 1 to 86400"),
    _Key("metrics", "listen", str, "",
         _is_listen_address, '"" (off) or "HOST:PORT" (HOST an IPv4 address or a host name, PORT from 1 to 65535)'),
    _Key("log", "level", str, "info",
         lambda v: v in _LOG_LEVELS, "one of " + ", ".join(f'"{x}"' for x in _LOG_LEVELS),
         normalize=str.lower),
    _Key("log", "format", str, "text",
         lambda v: v in LOG_FORMATS, "one of " + ", ".join(f'"{x}"' for x in LOG_FORMATS),
         normalize=str.lower),
)


# --- TOML rendering, for error messages and render_settings ---------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(text: str) -> str:
    """A TOML basic string; control characters are escaped so the result is one line."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml(value: Any) -> str:
    """``value`` as the operator would have written it in TOML, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 256 else f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return value.isoformat()  # TOML dates and times


# --- parsing ------------------------------------------------------------------------------


def _has_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # bool is an int subclass, but `priority = true` is a mistake
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    if kind is list:
        return isinstance(value, (list, tuple))  # a default is a tuple: settings are frozen
    return isinstance(value, kind)


def _validate(key: _Key, value: Any, where: str, defaulted: bool) -> Any:
    if _has_kind(value, key.kind) and not (key.kind is float and isinstance(value, int) and value.bit_length() > 1023):
        converted = float(value) if key.kind is float else value
        if key.normalize is not None:
            converted = key.normalize(converted)
        if key.check(converted):
            return converted
    note = " (this is the built-in default: set the key explicitly)" if defaulted else ""
    if key.culprit is not None and isinstance(value, (list, tuple)):
        note += key.culprit(value)
    raise ConfigError(f"{where}: [{key.section}] {key.name} = {_toml(value)}: {key.allowed}{note}")


def _reject_unknown(data: dict[str, Any], where: str) -> None:
    sections = ", ".join(f"[{name}]" for name in _SECTIONS)
    for section, table in data.items():
        if section not in _SECTIONS:
            if isinstance(table, dict):
                raise ConfigError(f"{where}: [{_toml_key(section)}]: unknown section"
                                  f"{_did_you_mean(section, _SECTIONS)}; allowed: {sections}")
            raise ConfigError(f"{where}: {_toml_key(section)} = {_toml(table)}: "
                              f"every key belongs in a section: {sections}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} = {_toml(table)}: "
                              f"must be a section, written [{section}]")
        known = [key.name for key in _KEYS if key.section == section]
        for name, value in table.items():
            if (section, name) in _REMOVED:
                raise ConfigError(f"{where}: [{section}] {name} = {_toml(value)}: {_REMOVED[section, name]}")
            if name not in known:
                raise ConfigError(f"{where}: [{section}] {_toml_key(name)} = {_toml(value)}: "
                                  f"unknown key{_did_you_mean(name, known)}; "
                                  f"[{section}] allows: {', '.join(known)}")


# Keys of earlier versions, and what replaced them: a file that still sets one stops dsd.
_REMOVED = {
    ("chat", "cluster_size"): "no longer exists: the chat's voters are now kept in its log and change as "
                              "daemons join and leave, so remove this line (to wait for N daemons before the "
                              "chat forms for the first time, set [chat] bootstrap_expect = N)",
}


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_relations(values: _Values, where: str) -> None:
    """Checks that involve two keys; the message names both."""
    timing = values["timing"]
    heartbeat, timeout = timing["heartbeat_interval"], timing["failure_timeout"]
    if timeout < MIN_HEARTBEATS_PER_TIMEOUT * heartbeat:
        raise ConfigError(f"{where}: [timing] failure_timeout = {_toml(timeout)}: at least "
                          f"{MIN_HEARTBEATS_PER_TIMEOUT} * heartbeat_interval = "
                          f"{_toml(round(MIN_HEARTBEATS_PER_TIMEOUT * heartbeat, 9))} "
                          f"([timing] heartbeat_interval = {_toml(heartbeat)})")
    cluster = values["cluster"]
    if not cluster["multicast"] and not cluster["peers"]:
        raise ConfigError(f"{where}: [cluster] multicast = false, peers = []: without multicast the daemons "
                          f"find each other through [cluster] peers; list at least one other daemon, "
                          f'e.g. peers = ["10.0.1.5"], or set multicast = true')
    control = values["control"]
    if control["endpoint"] == control["feed"]:
        raise ConfigError(f"{where}: [control] feed = {_toml(control['feed'])}: "
                          f"must differ from [control] endpoint")
    if bool(control["tcp_endpoint"]) != bool(control["tcp_feed"]):
        raise ConfigError(f"{where}: [control] tcp_endpoint = {_toml(control['tcp_endpoint'])}, "
                          f"tcp_feed = {_toml(control['tcp_feed'])}: set both (clients need both) or neither")
    if control["tcp_endpoint"] and control["tcp_endpoint"] == control["tcp_feed"]:
        raise ConfigError(f"{where}: [control] tcp_feed = {_toml(control['tcp_feed'])}: "
                          f"must differ from [control] tcp_endpoint")
    if control["tcp_endpoint"] and not control["client_keys"] and not control["any_client"]:
        raise ConfigError(f"{where}: [control] tcp_endpoint = {_toml(control['tcp_endpoint'])}: "
                          f"say which clients may connect: set [control] client_keys (a directory of their "
                          f"certificates) or any_client = true (any key; still encrypted)")
    if control["client_keys"] and control["any_client"]:
        raise ConfigError(f"{where}: [control] any_client = true, client_keys = {_toml(control['client_keys'])}: "
                          f"set one of them (any_client lets every key in)")


def parse_settings(text: str, source: str | None,
                   env: Mapping[str, str] = os.environ) -> Settings:
    """Validate TOML ``text`` read from ``source`` (None: no file) into :class:`Settings`.

    Missing keys take their defaults, some computed from ``env`` and from earlier keys (the
    control endpoints live in the effective runtime_dir).
    """
    where = source if source is not None else _NO_FILE
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = " ".join(str(error).split())
        raise ConfigError(f"{where}: TOML syntax error: {message}") from None
    except (ValueError, RecursionError) as error:  # a 5000-digit integer, arrays nested 1000 deep
        raise ConfigError(f"{where}: TOML the parser cannot take: {type(error).__name__}") from None
    _reject_unknown(data, where)

    values: _Values = {section: {} for section in _SECTIONS}
    for key in _KEYS:
        given = data.get(key.section, {})
        if key.name in given:
            value = _validate(key, given[key.name], where, defaulted=False)
        else:
            default = key.default(env, values) if callable(key.default) else key.default
            value = _validate(key, default, where, defaulted=True)
        values[key.section][key.name] = value
    _check_relations(values, where)

    tables = {name: cls(**values[name]) for name, cls in _SECTIONS.items()}
    return Settings(**tables, source=source)


# --- finding and loading ------------------------------------------------------------------


def find_config_path(explicit: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """The file to load: ``explicit`` (-c), else $DSD_CONFIG, else /etc/dsd.toml if present.

    A file named explicitly or by $DSD_CONFIG must exist: silently running on defaults
    because of a typo would be worse than stopping. An empty $DSD_CONFIG counts as unset.
    None means no file: use the built-in defaults.
    """
    if explicit is not None:
        if not os.path.exists(explicit):
            raise ConfigError(f"{explicit}: no such file (named on the command line)")
        return explicit
    from_env = env.get("DSD_CONFIG")
    if from_env:
        if not os.path.exists(from_env):
            raise ConfigError(f"{from_env}: no such file (named by $DSD_CONFIG)")
        return from_env
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


def load_settings(explicit: str | None = None,
                  env: Mapping[str, str] = os.environ) -> Settings:
    """Find the configuration file (see :func:`find_config_path`) and parse it."""
    path = find_config_path(explicit, env)
    if path is None:
        return parse_settings("", None, env)
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text: {error}") from None
    return parse_settings(text, path, env)


def render_settings(s: Settings) -> str:
    """The effective settings as TOML that :func:`parse_settings` reads back to ``s``."""
    origin = _toml_string(s.source) if s.source is not None else _NO_FILE
    lines = [f"# dsd effective settings, from {origin}"]
    for section in _SECTIONS:
        lines += ["", f"[{section}]"]
        table = getattr(s, section)
        lines += [f"{key.name} = {_toml(getattr(table, key.name))}"
                  for key in _KEYS if key.section == section]
    return "\n".join(lines) + "\n"
