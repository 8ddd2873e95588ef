"""Tests for dsd.config: defaults, search order, validation messages, rendering."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from pathlib import Path

import pytest

from dsd import config
from dsd.config import (
    ClusterSettings,
    ConfigError,
    ControlSettings,
    ElectionSettings,
    LogSettings,
    ChatSettings,
    MetricsSettings,
    NodeSettings,
    Settings,
    TimingSettings,
    find_config_path,
    load_settings,
    parse_settings,
    render_settings,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "dsd.toml"

# The environment of a systemd service with RuntimeDirectory= and StateDirectory=.
ENV = {"RUNTIME_DIRECTORY": "/run/dsd", "STATE_DIRECTORY": "/var/lib/dsd", "HOME": "/home/op"}

# The public contract: every key and its default under ENV.
DEFAULTS = {
    "node": {"name": socket.gethostname(), "priority": 100,
             "runtime_dir": "/run/dsd", "state_dir": "/var/lib/dsd"},
    "cluster": {"group": "239.255.77.1", "port": 5008, "interface": "", "ttl": 1, "secret_file": "",
                "multicast": True, "peers": (), "bind": "0.0.0.0"},
    "timing": {"heartbeat_interval": 0.2, "failure_timeout": 1.0, "discovery_timeout": 0.2},
    "election": {"preempt": True},
    "control": {"endpoint": "ipc:///run/dsd/dsd.ctl", "feed": "ipc:///run/dsd/dsd.feed",
                "tcp_endpoint": "", "tcp_feed": "", "server_key": "/var/lib/dsd/server.key_secret",
                "client_keys": "", "any_client": False, "admin_keys": ""},
    "chat": {"peer_endpoint": "", "client_timeout": 10.0, "max_message": 4096, "rate": 20.0,
             "burst": 50, "retention": 100_000, "max_clients": 1000, "bootstrap_expect": 0, "remove_dead_after": 30.0},
    "metrics": {"listen": ""},
    "log": {"level": "info", "format": "text"},
}
STATIC_DEFAULTS = {"priority", "group", "port", "interface", "ttl", "heartbeat_interval",
                   "failure_timeout", "discovery_timeout", "preempt", "level", "peer_endpoint",
                   "client_timeout", "max_message", "rate", "burst", "retention", "max_clients", "bootstrap_expect", "remove_dead_after", "tcp_endpoint",
                   "tcp_feed", "secret_file", "multicast", "peers", "bind", "client_keys", "any_client", "admin_keys", "listen", "format"}


def as_dict(s: Settings) -> dict[str, dict[str, object]]:
    return {section: dataclasses.asdict(getattr(s, section)) for section in DEFAULTS}


def parse(text: str, source: str | None = "/etc/dsd.toml") -> Settings:
    return parse_settings(text, source, ENV)


def error_of(text: str, source: str | None = "/etc/dsd.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, source)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults and the dataclasses ---------------------------------------------------------


def test_no_file_gives_defaults() -> None:
    s = parse("", None)
    assert as_dict(s) == DEFAULTS
    assert s.source is None
    assert s == Settings(
        node=NodeSettings(socket.gethostname(), 100, "/run/dsd", "/var/lib/dsd"),
        cluster=ClusterSettings("239.255.77.1", 5008, "", 1, "", True, (), "0.0.0.0"),
        timing=TimingSettings(0.2, 1.0, 0.2),
        election=ElectionSettings(True),
        control=ControlSettings("ipc:///run/dsd/dsd.ctl", "ipc:///run/dsd/dsd.feed", "", "",
                                "/var/lib/dsd/server.key_secret", "", False, ""),
        chat=ChatSettings("", 10.0, 4096, 20.0, 50, 100_000, 1000, 0, 30.0),
        metrics=MetricsSettings(""),
        log=LogSettings("info", "text"),
        source=None,
    )


def test_empty_file_and_empty_sections_give_defaults() -> None:
    s = parse("\n# nothing\n[node]\n[log]\n")
    assert as_dict(s) == DEFAULTS
    assert s.source == "/etc/dsd.toml"


def test_settings_are_frozen() -> None:
    s = parse("")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.cluster.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.source = "x"  # type: ignore[misc]


def test_number_types_are_normalised() -> None:
    s = parse("[timing]\nheartbeat_interval = 1\nfailure_timeout = 3\n")
    assert type(s.timing.heartbeat_interval) is float and s.timing.heartbeat_interval == 1.0
    assert type(s.timing.failure_timeout) is float
    assert type(s.cluster.port) is int and type(s.node.priority) is int


# --- search order -------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Three config files; DEFAULT_PATH points at the third so /etc is never read."""
    paths = {}
    for name, port in (("explicit", 1001), ("env", 1002), ("default", 1003)):
        paths[name] = tmp_path / f"{name}.toml"
        paths[name].write_text(f"[cluster]\nport = {port}\n")
    monkeypatch.setattr(config, "DEFAULT_PATH", str(paths["default"]))
    return paths


def test_explicit_path_wins(files: dict[str, Path]) -> None:
    env = {**ENV, "DSD_CONFIG": str(files["env"])}
    assert find_config_path(str(files["explicit"]), env) == str(files["explicit"])
    s = load_settings(str(files["explicit"]), env)
    assert s.cluster.port == 1001 and s.source == str(files["explicit"])


def test_dsd_config_beats_default_path(files: dict[str, Path]) -> None:
    env = {**ENV, "DSD_CONFIG": str(files["env"])}
    assert find_config_path(None, env) == str(files["env"])
    assert load_settings(None, env).cluster.port == 1002


def test_default_path_used_when_present(files: dict[str, Path]) -> None:
    assert find_config_path(None, ENV) == str(files["default"])
    assert load_settings(None, ENV).cluster.port == 1003


def test_empty_dsd_config_is_unset(files: dict[str, Path]) -> None:
    assert find_config_path(None, {**ENV, "DSD_CONFIG": ""}) == str(files["default"])


def test_no_file_anywhere_gives_builtin_defaults(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    assert find_config_path(None, ENV) is None
    s = load_settings(None, ENV)
    assert s.source is None and as_dict(s) == DEFAULTS


def test_missing_explicit_file_is_an_error(files: dict[str, Path], tmp_path: Path) -> None:
    missing = str(tmp_path / "typo.toml")
    with pytest.raises(ConfigError, match=re.escape(missing)):
        find_config_path(missing, {**ENV, "DSD_CONFIG": str(files["env"])})
    with pytest.raises(ConfigError, match=re.escape(missing)):
        load_settings(missing, ENV)


def test_missing_dsd_config_file_is_an_error(files: dict[str, Path], tmp_path: Path) -> None:
    missing = str(tmp_path / "typo.toml")
    with pytest.raises(ConfigError) as info:
        find_config_path(None, {**ENV, "DSD_CONFIG": missing})
    assert missing in str(info.value) and "DSD_CONFIG" in str(info.value)


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_settings(str(tmp_path), ENV)  # a directory
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[node]\nname = \"\xff\"\n")
    with pytest.raises(ConfigError, match=re.escape(str(binary)) + ".*UTF-8"):
        load_settings(str(binary), ENV)


def test_load_reports_errors_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "dsd.toml"
    path.write_text("[cluster]\nport = 0\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: \\[cluster\\] port = 0: "):
        load_settings(str(path), ENV)


# --- directory defaults from the environment ----------------------------------------------


@pytest.mark.parametrize(("env", "expected"), [
    ({"RUNTIME_DIRECTORY": "/run/dsd:/run/other", "XDG_RUNTIME_DIR": "/run/user/7"}, "/run/dsd"),
    ({"RUNTIME_DIRECTORY": "", "XDG_RUNTIME_DIR": "/run/user/7"}, "/run/user/7/dsd"),
    ({"XDG_RUNTIME_DIR": "/run/user/7"}, "/run/user/7/dsd"),
    ({"XDG_RUNTIME_DIR": "relative"}, f"/tmp/dsd-{os.getuid()}"),
    ({}, f"/tmp/dsd-{os.getuid()}"),
])
def test_runtime_dir_fallbacks(env: dict[str, str], expected: str) -> None:
    s = parse_settings("", None, {**env, "STATE_DIRECTORY": "/s"})
    assert s.node.runtime_dir == expected
    assert s.control.endpoint == f"ipc://{expected}/dsd.ctl"
    assert s.control.feed == f"ipc://{expected}/dsd.feed"


@pytest.mark.parametrize(("env", "uid", "expected"), [
    ({"STATE_DIRECTORY": "/var/lib/dsd:/var/lib/x", "HOME": "/home/op"}, 1000, "/var/lib/dsd"),
    ({"STATE_DIRECTORY": "/var/lib/custom"}, 0, "/var/lib/custom"),
    ({"HOME": "/root"}, 0, "/var/lib/dsd"),
    ({"HOME": "/home/op"}, 1000, "/home/op/.local/state/dsd"),
])
def test_state_dir_fallbacks(env: dict[str, str], uid: int, expected: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: uid)
    s = parse_settings("", None, {**env, "RUNTIME_DIRECTORY": "/r"})
    assert s.node.state_dir == expected


def test_directories_from_file_beat_the_environment() -> None:
    s = parse('[node]\nruntime_dir = "/srv/run"\nstate_dir = "/srv/state"\n')
    assert (s.node.runtime_dir, s.node.state_dir) == ("/srv/run", "/srv/state")


# --- control endpoints ----------------------------------------------------------------------


def test_endpoint_defaults_follow_runtime_dir() -> None:
    s = parse('[node]\nruntime_dir = "/srv/dsd/"\n')
    assert s.control.endpoint == "ipc:///srv/dsd/dsd.ctl"
    assert s.control.feed == "ipc:///srv/dsd/dsd.feed"


def test_explicit_endpoint_keeps_default_feed() -> None:
    s = parse('[node]\nruntime_dir = "/srv/dsd"\n[control]\nendpoint = "ipc:///run/other/dsd.ctl"\n')
    assert s.control.endpoint == "ipc:///run/other/dsd.ctl"
    assert s.control.feed == "ipc:///srv/dsd/dsd.feed"


def test_the_main_endpoint_and_feed_are_ipc_only_tcp_goes_through_the_curve_endpoints() -> None:
    for key in ("endpoint", "feed"):
        message = error_of(f'[control]\n{key} = "tcp://127.0.0.1:7000"\n')
        assert message.startswith(f'/etc/dsd.toml: [control] {key} = "tcp://127.0.0.1:7000": ')
        assert "tcp_endpoint and tcp_feed" in message


def test_endpoint_and_feed_must_differ() -> None:
    message = error_of('[control]\nendpoint = "ipc:///run/x"\nfeed = "ipc:///run/x"\n')
    assert message.startswith('/etc/dsd.toml: [control] feed = "ipc:///run/x": ')
    assert "endpoint" in message.split(": ", 2)[2]


def test_tcp_client_endpoints_come_in_pairs() -> None:
    message = error_of('[control]\ntcp_endpoint = "tcp://*:5009"\n')
    assert message.startswith('/etc/dsd.toml: [control] tcp_endpoint = "tcp://*:5009", tcp_feed = "": ')
    assert "set both" in message
    message = error_of('[control]\ntcp_endpoint = "tcp://*:5009"\ntcp_feed = "tcp://*:5009"\n')
    assert "must differ" in message
    s = parse('[control]\ntcp_endpoint = "tcp://*:5009"\ntcp_feed = "tcp://10.0.0.1:5010"\nany_client = true\n')
    assert (s.control.tcp_endpoint, s.control.tcp_feed) == ("tcp://*:5009", "tcp://10.0.0.1:5010")


# --- validation of each key -----------------------------------------------------------------

LONG_IPC = '"ipc:///' + "d" * 110 + '"'

# (section, key, value as written in TOML, a word of the "allowed" text)
BAD_VALUES = [
    ("node", "name", '""', "1-64"),
    ("node", "name", '"two words"', "1-64"),
    ("node", "name", '"' + "n" * 65 + '"', "1-64"),
    ("node", "name", '"caf\u00e9"', "1-64"),
    ("node", "name", "5", "1-64"),
    ("node", "priority", "-1", "2147483647"),
    ("node", "priority", "2147483648", "2147483647"),
    ("node", "priority", "1.5", "integer"),
    ("node", "priority", "true", "integer"),
    ("node", "priority", '"100"', "integer"),
    ("node", "runtime_dir", '"run/dsd"', "absolute"),
    ("node", "runtime_dir", '""', "absolute"),
    ("node", "runtime_dir", "1", "absolute"),
    ("node", "state_dir", '"state"', "absolute"),
    ("node", "state_dir", "[]", "absolute"),
    ("cluster", "group", '"10.0.0.1"', "multicast"),
    ("cluster", "group", '"239.255.77"', "multicast"),
    ("cluster", "group", '"224.0.0.256"', "multicast"),
    ("cluster", "group", '"ff02::1"', "multicast"),
    ("cluster", "group", "239", "multicast"),
    ("cluster", "port", "0", "65535"),
    ("cluster", "port", "65536", "65535"),
    ("cluster", "port", '"5008"', "integer"),
    ("cluster", "port", "5008.0", "integer"),
    ("cluster", "port", "true", "integer"),
    ("cluster", "interface", '"eth0 "', "interface name"),
    ("cluster", "interface", '"' + "e" * 16 + '"', "interface name"),
    ("cluster", "interface", '"10.0.0.300"', "IPv4"),
    ("cluster", "interface", "1", "interface name"),
    ("cluster", "ttl", "-1", "255"),
    ("cluster", "ttl", "256", "255"),
    ("cluster", "ttl", "1.0", "integer"),
    ("cluster", "multicast", '"false"', "true or false"),
    ("cluster", "multicast", "0", "true or false"),
    ("cluster", "peers", '"10.0.0.1"', "a list of"),
    ("cluster", "peers", '["10.0.0.1", 5008]', '5008 is not'),
    ("cluster", "peers", '["two words"]', '"two words" is not'),
    ("cluster", "peers", '["h1:0"]', '"h1:0" is not'),
    ("cluster", "peers", '["h1:65536"]', "PORT from 1 to 65535"),
    ("cluster", "peers", '["h1:port"]', '"h1:port" is not'),
    ("cluster", "peers", '["10.0.0.300"]', "IPv4 address or a host name"),
    ("cluster", "peers", '["h1:"]', '"h1:" is not'),
    ("cluster", "peers", '[":5008"]', '":5008" is not'),
    ("cluster", "peers", '["http://h1"]', '"http://h1" is not'),
    ("cluster", "peers", '["h1", "h1"]', '"h1" is there twice'),
    ("cluster", "peers", '[["h1"]]', "is not"),
    ("cluster", "peers", "[" + ", ".join(f'"h{i}"' for i in range(257)) + "]", "at most 256"),
    ("cluster", "bind", '"eth0"', "IPv4 address"),
    ("cluster", "bind", '"10.0.0.300"', "IPv4 address"),
    ("cluster", "bind", '""', "IPv4 address"),
    ("cluster", "bind", "0", "IPv4 address"),
    ("timing", "heartbeat_interval", "0", "more than 0"),
    ("timing", "heartbeat_interval", "-0.1", "more than 0"),
    ("timing", "heartbeat_interval", "60.5", "at most 60"),
    ("timing", "heartbeat_interval", "nan", "seconds"),
    ("timing", "heartbeat_interval", "inf", "seconds"),
    ("timing", "heartbeat_interval", '"0.2"', "seconds"),
    ("timing", "heartbeat_interval", "true", "seconds"),
    ("timing", "failure_timeout", '"1s"', "seconds"),
    ("timing", "failure_timeout", "inf", "seconds"),
    ("timing", "failure_timeout", "nan", "seconds"),
    ("timing", "failure_timeout", "false", "seconds"),
    ("timing", "discovery_timeout", "0", "more than 0"),
    ("timing", "discovery_timeout", "61", "at most 60"),
    ("timing", "discovery_timeout", "true", "seconds"),
    ("election", "preempt", "1", "true or false"),
    ("election", "preempt", "0", "true or false"),
    ("election", "preempt", '"true"', "true or false"),
    ("control", "endpoint", '""', "ipc://"),
    ("control", "endpoint", '"ipc://"', "ipc://"),
    ("control", "endpoint", '"udp://host:1"', "ipc://"),
    ("control", "endpoint", '"/run/dsd/dsd.ctl"', "ipc://"),
    ("control", "endpoint", LONG_IPC, "107 bytes"),
    ("control", "endpoint", "5", "ipc://"),
    ("control", "feed", '"tcp://"', "ipc://"),
    ("control", "feed", '"inproc://feed"', "ipc://"),
    ("control", "tcp_endpoint", '"ipc:///tmp/x"', "tcp://HOST:PORT"),
    ("control", "tcp_endpoint", '"tcp://*:*"', "tcp://HOST:PORT"),
    ("control", "tcp_feed", '"tcp://*:70000"', "tcp://HOST:PORT"),
    ("chat", "peer_endpoint", '"ipc:///tmp/x"', "tcp://HOST:PORT"),
    ("chat", "peer_endpoint", '"tcp://:5000"', "tcp://HOST:PORT"),
    ("chat", "peer_endpoint", '"tcp://host:port"', "tcp://HOST:PORT"),
    ("chat", "client_timeout", "0.5", "from 1 to 3600"),
    ("chat", "client_timeout", "3601", "from 1 to 3600"),
    ("chat", "client_timeout", "nan", "from 1 to 3600"),
    ("chat", "max_message", "0", "from 1 to 65536"),
    ("chat", "max_message", "65537", "from 1 to 65536"),
    ("chat", "max_message", '"4k"', "bytes"),
    ("chat", "rate", "0", "more than 0"),
    ("chat", "rate", "inf", "at most 1000000"),
    ("chat", "burst", "0", "from 1"),
    ("chat", "burst", "2.5", "integer"),
    ("chat", "retention", "99", "from 100"),
    ("chat", "max_clients", "0", "from 1"),
    ("chat", "max_clients", "1000001", "to 1000000"),
    ("chat", "bootstrap_expect", "-1", "0 (form the chat with whoever is there)"),
    ("chat", "bootstrap_expect", "1001", "at most 1000"),
    ("chat", "remove_dead_after", "0.5", "seconds from 1 to 86400"),
    ("log", "level", '"verbose"', '"debug"'),
    ("log", "level", '""', '"warning"'),
    ("log", "level", "1", '"error"'),
    ("log", "format", '"logfmt"', '"json"'),
    ("log", "format", "true", '"text"'),
    ("metrics", "listen", '"9100"', "HOST:PORT"),
    ("metrics", "listen", '":9100"', "HOST:PORT"),
    ("metrics", "listen", '"127.0.0.1:0"', "PORT from 1 to 65535"),
    ("metrics", "listen", '"127.0.0.1:65536"', "HOST:PORT"),
    ("metrics", "listen", '"10.0.0.300:9100"', "IPv4 address"),
    ("metrics", "listen", '"http://127.0.0.1:9100"', "HOST:PORT"),
    ("metrics", "listen", "9100", "HOST:PORT"),
]


@pytest.mark.parametrize(("section", "key", "value", "allowed"), BAD_VALUES,
                         ids=[f"{s}.{k}={v[:20]}" for s, k, v, _ in BAD_VALUES])
def test_bad_value_names_file_key_value_and_what_is_allowed(
        section: str, key: str, value: str, allowed: str) -> None:
    message = error_of(f"[{section}]\n{key} = {value}\n", "/srv/my.toml")
    prefix = f"/srv/my.toml: [{section}] {key} = {value}: "
    assert message.startswith(prefix), message
    assert allowed in message[len(prefix):], message


@pytest.mark.parametrize(("text", "section", "key", "expected"), [
    ("[node]\npriority = 0", "node", "priority", 0),
    ("[node]\npriority = 2147483647", "node", "priority", 2**31 - 1),
    ('[node]\nname = "' + "a.B_9-" * 10 + 'abcd"', "node", "name", "a.B_9-" * 10 + "abcd"),
    ("[cluster]\nport = 1", "cluster", "port", 1),
    ("[cluster]\nport = 65535", "cluster", "port", 65535),
    ('[cluster]\ngroup = "224.0.0.0"', "cluster", "group", "224.0.0.0"),
    ('[cluster]\ngroup = "239.255.255.255"', "cluster", "group", "239.255.255.255"),
    ('[cluster]\ninterface = "127.0.0.1"', "cluster", "interface", "127.0.0.1"),
    ('[cluster]\ninterface = "eth0"', "cluster", "interface", "eth0"),
    ('[cluster]\ninterface = "wlan0:1"', "cluster", "interface", "wlan0:1"),
    ('[cluster]\ninterface = "br-lan.100_x"', "cluster", "interface", "br-lan.100_x"),
    ("[cluster]\nttl = 0", "cluster", "ttl", 0),
    ("[cluster]\nttl = 255", "cluster", "ttl", 255),
    ('[cluster]\npeers = ["10.0.1.5", "db-2.example.com:6000", "h3:1"]', "cluster", "peers",
     ("10.0.1.5", "db-2.example.com:6000", "h3:1")),
    ('[cluster]\npeers = ["h1"]\nmulticast = false', "cluster", "multicast", False),
    ('[cluster]\nbind = "10.0.1.5"', "cluster", "bind", "10.0.1.5"),
    ("[timing]\nheartbeat_interval = 0.01", "timing", "heartbeat_interval", 0.01),
    ("[timing]\nheartbeat_interval = 60\nfailure_timeout = 180", "timing",
     "heartbeat_interval", 60.0),
    ("[timing]\ndiscovery_timeout = 60", "timing", "discovery_timeout", 60.0),
    ("[election]\npreempt = false", "election", "preempt", False),
    ('[control]\nendpoint = "ipc:///run/dsd-10/ctl"', "control", "endpoint", "ipc:///run/dsd-10/ctl"),
    ('[control]\nfeed = "ipc://@dsd-feed"', "control", "feed", "ipc://@dsd-feed"),
    ('[log]\nlevel = "WARNING"', "log", "level", "warning"),
    ('[log]\nlevel = "Debug"', "log", "level", "debug"),
    ('[log]\nformat = "JSON"', "log", "format", "json"),
    ('[metrics]\nlisten = "127.0.0.1:9100"', "metrics", "listen", "127.0.0.1:9100"),
    ('[metrics]\nlisten = "0.0.0.0:65535"', "metrics", "listen", "0.0.0.0:65535"),
    ('[metrics]\nlisten = "localhost:1"', "metrics", "listen", "localhost:1"),
])
def test_edge_values_accepted(text: str, section: str, key: str, expected: object) -> None:
    value = getattr(getattr(parse(text), section), key)
    assert value == expected and type(value) is type(expected)


def test_without_multicast_peers_are_needed() -> None:
    message = error_of("[cluster]\nmulticast = false\n")
    assert message.startswith("/etc/dsd.toml: [cluster] multicast = false, peers = []: ")
    assert "list at least one other daemon" in message
    assert parse('[cluster]\nmulticast = false\npeers = ["10.0.1.5"]\n').cluster.peers == ("10.0.1.5",)


@pytest.mark.parametrize(("entry", "expected"), [
    ("10.0.1.5", ("10.0.1.5", 5008)),
    ("10.0.1.5:6000", ("10.0.1.5", 6000)),
    ("db-2.example.com", ("db-2.example.com", 5008)),
    ("h3:1", ("h3", 1)),
    ("h3:", None),
    ("10.0.1.300", None),
    ("[::1]:5008", None),
])
def test_a_peer_entry_is_a_host_and_a_port_that_defaults_to_the_cluster_port(
        entry: str, expected: tuple[str, int] | None) -> None:
    assert config.parse_peer(entry, 5008) == expected


def test_failure_timeout_at_least_three_heartbeats() -> None:
    message = error_of("[timing]\nheartbeat_interval = 0.5\nfailure_timeout = 1.4\n")
    assert message.startswith("/etc/dsd.toml: [timing] failure_timeout = 1.4: ")
    assert "heartbeat_interval = 0.5" in message
    assert "3 * heartbeat_interval = 1.5" in message
    assert parse("[timing]\nheartbeat_interval = 0.5\nfailure_timeout = 1.5\n")


def test_default_failure_timeout_checked_against_heartbeat() -> None:
    message = error_of("[timing]\nheartbeat_interval = 0.4\n")
    assert "failure_timeout = 1.0" in message and "heartbeat_interval = 0.4" in message


def test_bad_computed_default_says_it_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "bad host")
    message = error_of("", None)
    assert message.startswith('built-in defaults: [node] name = "bad host": ')
    assert "default" in message.split(": ", 2)[2]


# --- unknown keys, structure, syntax --------------------------------------------------------


def test_unknown_key() -> None:
    message = error_of("[cluster]\nprot = 5008\n")
    assert message.startswith("/etc/dsd.toml: [cluster] prot = 5008: unknown key")
    assert "port" in message


def test_unknown_section() -> None:
    message = error_of("[clutser]\nport = 5008\n")
    assert message.startswith("/etc/dsd.toml: [clutser]: unknown section")
    assert "[cluster]" in message


def test_key_outside_any_section() -> None:
    message = error_of("port = 5008\n")
    assert message.startswith("/etc/dsd.toml: port = 5008: ") and "[cluster]" in message


def test_section_that_is_not_a_table() -> None:
    assert error_of('node = "x"\n').startswith('/etc/dsd.toml: node = "x": ')


def test_nested_table_is_an_unknown_key() -> None:
    message = error_of("[node.extra]\na = 1\n")
    assert message.startswith("/etc/dsd.toml: [node] extra = { a = 1 }: unknown key")


def test_weird_key_names_stay_on_one_line() -> None:
    message = error_of('[node]\n"a\\nb" = "x\\ny"\n')
    assert message.startswith('/etc/dsd.toml: [node] "a\\u000ab" = "x\\u000ay": unknown key')


@pytest.mark.parametrize("text", [
    "[node\nname = 'a'\n",
    "[node]\nname = \n",
    "[node]\nname = 'a'\nname = 'b'\n",
    "[cluster]\nport = 50 08\n",
])
def test_syntax_error_names_file_and_position(text: str) -> None:
    message = error_of(text, "/srv/broken.toml")
    assert message.startswith("/srv/broken.toml: TOML syntax error: ")
    assert "line" in message


# --- rendering ------------------------------------------------------------------------------


def test_render_defaults_round_trips() -> None:
    s = parse("", None)
    text = render_settings(s)
    assert parse_settings(text, None, ENV) == s
    assert parse_settings(text, None, {}) == s  # explicit values, not re-derived defaults
    assert "[cluster]\ngroup = \"239.255.77.1\"\nport = 5008\n" in text


def test_render_custom_round_trips() -> None:
    text = """
[node]
name = "db-1.example"
priority = 2147483647
runtime_dir = '/srv/odd "dir" \\ with\ttab/é'
state_dir = "/srv/state"
[cluster]
group = "224.0.0.251"
port = 65535
interface = "wlan0:1"
ttl = 0
[timing]
heartbeat_interval = 1e-3
failure_timeout = 0.30000000000000004
discovery_timeout = 7
[election]
preempt = false
[control]
endpoint = "ipc://@dsd-ctl"
[log]
level = "ERROR"
"""
    s = parse(text, "/srv/custom.toml")
    rendered = render_settings(s)
    assert parse_settings(rendered, "/srv/custom.toml", {}) == s
    assert s.control.feed.startswith('ipc:///srv/odd "dir"')
    assert "/srv/custom.toml" in rendered.splitlines()[0]


# --- the shipped example file ---------------------------------------------------------------


def test_example_file_parses_to_defaults() -> None:
    s = parse_settings(EXAMPLE.read_text(), str(EXAMPLE), ENV)
    assert as_dict(s) == DEFAULTS


def test_a_removed_key_says_what_replaced_it() -> None:
    with pytest.raises(ConfigError, match=r"\[chat\] cluster_size = 5: no longer exists: .*bootstrap_expect"):
        parse("[chat]\ncluster_size = 5\n", "/etc/dsd.toml")


def test_example_file_documents_every_key_with_its_default() -> None:
    text = EXAMPLE.read_text()
    documented = re.findall(r"^#([a-z_]+) = ", text, re.MULTILINE)
    assert sorted(documented) == sorted(k for keys in DEFAULTS.values() for k in keys)
    # Uncommenting every key must still be valid, and give the default for static keys.
    uncommented = re.sub(r"^#([a-z_]+ = )", r"\1", text, flags=re.MULTILINE)
    s = parse_settings(uncommented, str(EXAMPLE), ENV)
    for section, keys in DEFAULTS.items():
        for key, default in keys.items():
            if key in STATIC_DEFAULTS:
                assert getattr(getattr(s, section), key) == default, key


def test_example_file_header_documents_search_order() -> None:
    header = EXAMPLE.read_text().split("[node]")[0]
    for needle in ("-c", "$DSD_CONFIG", "/etc/dsd.toml", "built-in defaults", "--check-config"):
        assert needle in header


def test_dataclasses_match_the_documented_keys() -> None:
    s = parse("", None)
    assert [f.name for f in dataclasses.fields(Settings)] == [*DEFAULTS, "source"]
    for section, keys in DEFAULTS.items():
        assert [f.name for f in dataclasses.fields(getattr(s, section))] == list(keys)
