"""CURVE on the TCP endpoints: key files, the [control] keys, the clients' options, admin commands,
and a real CURVE ROUTER on loopback (who gets an answer, who is an admin)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from pathlib import Path
from typing import Iterator

import pytest
import zmq
import zmq.asyncio

from dsd import commands
from dsd.client import ControlClient, Unreachable
from dsd.config import ConfigError, ControlSettings
from dsd.curve import (ClientCurve, CurveError, create_certificates, keygen, load_server_keys, public_keys,
                       require_server_key)
from dsd.io.control import ControlServer, CurveServer, cancel
from dsd.usage import UsageError
from tests.unit.test_config import error_of, parse
from tests.unit.test_fuzz import StubDaemon

TCP = '[control]\ntcp_endpoint = "tcp://*:5009"\ntcp_feed = "tcp://*:5010"\n'


def control(tmp_path: Path, **keys: object) -> ControlSettings:
    values: dict[str, object] = {
        "endpoint": "ipc:///x", "feed": "ipc:///y", "tcp_endpoint": "tcp://*:5009", "tcp_feed": "tcp://*:5010",
        "server_key": str(tmp_path / "state" / "server.key_secret"), "client_keys": "", "any_client": True,
        "admin_keys": "",
    }
    values.update(keys)
    return ControlSettings(**values)  # type: ignore[arg-type]


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- configuration ------------------------------------------------------------------------------

def test_a_tcp_endpoint_needs_client_keys_or_any_client() -> None:
    message = error_of(TCP)
    assert message.startswith('/etc/dsd.toml: [control] tcp_endpoint = "tcp://*:5009": ')
    assert "client_keys" in message and "any_client = true" in message and "\n" not in message
    assert parse(TCP + "any_client = true\n").control.any_client is True
    assert parse(TCP + 'client_keys = "/etc/dsd/clients"\n').control.client_keys == "/etc/dsd/clients"


def test_client_keys_and_any_client_together_are_refused() -> None:
    message = error_of(TCP + 'client_keys = "/etc/dsd/clients"\nany_client = true\n')
    assert message.startswith("/etc/dsd.toml: [control] any_client = true, client_keys = ")
    assert "set one of them" in message


@pytest.mark.parametrize("key", ["server_key", "client_keys", "admin_keys"])
def test_key_paths_must_be_absolute(key: str) -> None:
    message = error_of(f'[control]\n{key} = "keys/here"\n')
    assert message.startswith(f'/etc/dsd.toml: [control] {key} = "keys/here": ') and "absolute path" in message


def test_the_server_key_defaults_to_the_state_dir() -> None:
    s = parse('[node]\nstate_dir = "/srv/dsd"\n')
    assert s.control.server_key == "/srv/dsd/server.key_secret"
    assert (s.control.client_keys, s.control.any_client, s.control.admin_keys) == ("", False, "")


# --- the daemon's key files ---------------------------------------------------------------------

def test_no_tcp_endpoint_means_no_keys_and_no_file(tmp_path: Path) -> None:
    assert load_server_keys(control(tmp_path, tcp_endpoint="", tcp_feed="")) is None
    assert not (tmp_path / "state").exists()


def test_the_server_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    settings = control(tmp_path)
    assert load_server_keys(settings, create=False) is None  # a check does not make it
    assert not (tmp_path / "state").exists()
    first = load_server_keys(settings)
    assert first is not None and first.allowed is None  # any_client
    assert mode(settings.server_key) == 0o600
    public = tmp_path / "state" / "server.key"  # for handing to clients
    assert zmq.auth.load_certificate(str(public)) == (first.keypair.public, None)
    again = load_server_keys(settings)
    assert again is not None and again.keypair == first.keypair  # a restart keeps it
    assert sorted(os.listdir(tmp_path / "state")) == ["server.key", "server.key_secret"]


def test_one_key_file_can_serve_several_daemons(tmp_path: Path) -> None:
    _, secret = create_certificates(str(tmp_path), "cluster")
    a = load_server_keys(control(tmp_path, server_key=secret))
    b = load_server_keys(control(tmp_path / "other", server_key=secret))
    assert a is not None and b is not None and a.keypair == b.keypair


def test_a_server_key_others_can_read_is_refused(tmp_path: Path) -> None:
    _, secret = create_certificates(str(tmp_path), "cluster")
    os.chmod(secret, 0o640)
    with pytest.raises(ConfigError, match=r"group or others can access it \(mode 0640\); run chmod 600"):
        load_server_keys(control(tmp_path, server_key=secret))


def test_a_public_certificate_is_no_server_key(tmp_path: Path) -> None:
    public, _ = create_certificates(str(tmp_path), "cluster")
    os.chmod(public, 0o600)
    with pytest.raises(ConfigError, match="no secret-key"):
        load_server_keys(control(tmp_path, server_key=public))


def test_allowed_clients_are_client_keys_and_admin_keys(tmp_path: Path) -> None:
    _, _, alice = keygen(str(tmp_path / "clients"), "alice")
    _, _, root = keygen(str(tmp_path / "admins"), "root")
    keys = load_server_keys(control(tmp_path, any_client=False, client_keys=str(tmp_path / "clients"),
                                    admin_keys=str(tmp_path / "admins")))
    assert keys is not None
    assert keys.allowed == {alice.encode(), root.encode()} and keys.admins == {root.encode()}


def test_a_missing_key_directory_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    settings = control(tmp_path, any_client=False, client_keys=str(tmp_path / "absent"))
    with pytest.raises(ConfigError) as caught:
        load_server_keys(settings, create=False)
    assert str(caught.value).startswith(f"[control] client_keys = '{tmp_path / 'absent'}': not a directory")
    assert not (tmp_path / "state").exists()


def test_a_bad_certificate_in_a_key_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "admins").mkdir()
    (tmp_path / "admins" / "eve.key").write_text('curve\n    public-key = "short"\n')
    with pytest.raises(ConfigError, match="admin_keys = .*: eve.key: not a ZeroMQ certificate"):
        public_keys(str(tmp_path / "admins"), "admin_keys")


# --- dsctl keygen ------------------------------------------------------------------------------

def test_keygen_makes_a_private_secret_and_never_overwrites(tmp_path: Path) -> None:
    public, secret, key = keygen(str(tmp_path / "new"), "alice")
    assert mode(str(tmp_path / "new")) == 0o700 and mode(secret) == 0o600 and mode(public) == 0o644
    assert zmq.auth.load_certificate(public) == (key.encode(), None)
    before = Path(secret).read_text()
    with pytest.raises(CurveError, match="already exists"):
        keygen(str(tmp_path / "new"), "alice")
    assert Path(secret).read_text() == before
    assert sorted(os.listdir(tmp_path / "new")) == ["alice.key", "alice.key_secret"]


@pytest.mark.parametrize("name", ["", "a/b", "../x", "x" * 65, "é"])
def test_keygen_refuses_a_bad_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="bad name"):
        keygen(str(tmp_path), name)
    assert os.listdir(tmp_path) == []


# --- the clients' options ------------------------------------------------------------------------

def test_server_key_as_z85_or_as_a_certificate_file(tmp_path: Path) -> None:
    public, secret, key = keygen(str(tmp_path), "server")
    for given in (key, public, secret):
        curve = ClientCurve.from_options(given, None)
        assert curve is not None and curve.server_key == key.encode()
    assert ClientCurve.from_options(None, None) is None


def test_without_key_each_client_has_a_fresh_keypair(tmp_path: Path) -> None:
    _, _, key = keygen(str(tmp_path), "server")
    one, two = ClientCurve.from_options(key, None), ClientCurve.from_options(key, None)
    assert one is not None and two is not None and one.keypair.public != two.keypair.public
    assert zmq.curve_public(one.keypair.secret) == one.keypair.public


def test_key_is_read_from_a_secret_certificate(tmp_path: Path) -> None:
    _, _, server = keygen(str(tmp_path), "server")
    public, secret, key = keygen(str(tmp_path), "alice")
    curve = ClientCurve.from_options(server, secret)
    assert curve is not None and curve.keypair.public == key.encode()
    with pytest.raises(UsageError, match=r"--key .*alice.key: it holds no secret-key: give the NAME.key_secret"):
        ClientCurve.from_options(server, public)


@pytest.mark.parametrize("given", ["tooshort", "x" * 40 + "y", "~" * 40, "/no/such/file"])
def test_a_bad_server_key_is_a_clear_error(given: str) -> None:
    with pytest.raises(UsageError, match=r"--server-key .*neither a 40-character Z85 key nor a readable certificate"):
        ClientCurve.from_options(given, None)


def test_key_without_server_key_is_an_error(tmp_path: Path) -> None:
    _, secret, _ = keygen(str(tmp_path), "alice")
    with pytest.raises(UsageError, match="--key goes with --server-key"):
        ClientCurve.from_options(None, secret)


def test_a_tcp_endpoint_needs_a_server_key_before_connecting() -> None:
    require_server_key(["ipc:///run/dsd/dsd.ctl"], None)
    with pytest.raises(UsageError, match=r"tcp://h:5009 is a TCP endpoint.*--server-key KEY.*dsctl server-key"):
        require_server_key(["ipc:///run/dsd/dsd.ctl", "tcp://h:5009"], None)


# --- admin commands --------------------------------------------------------------------------------

def answer(payload: dict[str, object], admin: bool) -> dict[str, object]:
    reply = commands.handle(StubDaemon(), json.dumps(payload).encode(), [b""], admin=admin)
    assert reply is not None
    return json.loads(reply)


def test_elect_without_admin_rights_is_forbidden_and_not_run() -> None:
    daemon = StubDaemon()
    daemon.elect = lambda: pytest.fail("elect ran")  # type: ignore[method-assign]
    reply = json.loads(commands.handle(daemon, b'{"cmd": "elect", "rid": "r7"}', [b""], admin=False) or b"")
    assert reply["ok"] is False and reply["rid"] == "r7"
    assert reply["error"]["code"] == "forbidden" and "admin_keys" in reply["error"]["message"]
    assert answer({"cmd": "elect"}, admin=True) == {"ok": True, "result": {"started": True}}


def test_only_elect_and_forget_are_admin_commands() -> None:
    assert [name for name, command in commands.COMMANDS.items() if command.admin] == ["elect", "forget"]
    for cmd in ("ping", "view", "leader", "stats", "info", "server-key", "chat.who"):
        assert answer({"cmd": cmd}, admin=False)["ok"] is True, cmd


# --- a real CURVE ROUTER on loopback -------------------------------------------------------------------

class Served:
    """A ControlServer with a CurveServer on 127.0.0.1, in an event loop on a thread."""

    def __init__(self, tmp_path: Path, allowed: list[str], admins: list[str]) -> None:
        for name in allowed:
            keygen(str(tmp_path / "clients"), name)
        for name in admins:
            keygen(str(tmp_path / "admins"), name)
        (tmp_path / "clients").mkdir(exist_ok=True)
        (tmp_path / "admins").mkdir(exist_ok=True)
        self.keys = load_server_keys(control(tmp_path, any_client=False, client_keys=str(tmp_path / "clients"),
                                             admin_keys=str(tmp_path / "admins")))
        self.ipc = f"ipc://{tmp_path}/ctl"
        self.seen: list[tuple[bytes, bool]] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def handle(self, payload: bytes, envelope: list[bytes], admin: bool) -> bytes:
        self.seen.append((payload, admin))
        return json.dumps({"ok": True, "result": {"admin": admin}}).encode()

    async def _main(self) -> None:
        assert self.keys is not None
        context = zmq.asyncio.Context()
        self.curve = CurveServer(self.keys)
        server = ControlServer(context, self.ipc, self.handle, "tcp://127.0.0.1:*", self.curve)
        self.endpoint = server.tcp_endpoint
        self._stop = asyncio.Event()
        task = asyncio.ensure_future(server.serve())
        self._ready.set()
        await self._stop.wait()
        await cancel(task)
        server.close()
        self.curve.close()
        context.term()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path, ["alice"], ["root"])
    try:
        yield server
    finally:
        server.close()


def ask(served: Served, server_key: str | None, key: str | None, timeout: float = 2.0) -> dict[str, object]:
    with ControlClient(served.endpoint, timeout=timeout, retries=1,
                       curve=ClientCurve.from_options(server_key, key)) as client:
        return client.request("ping")


def test_an_allowed_key_is_answered_and_only_an_admin_key_is_admin(served: Served, tmp_path: Path) -> None:
    server = served.keys.keypair.public.decode()  # type: ignore[union-attr]
    assert ask(served, server, str(tmp_path / "clients" / "alice.key_secret")) == {"admin": False}
    assert ask(served, server, str(tmp_path / "admins" / "root.key_secret")) == {"admin": True}
    with ControlClient(served.ipc, timeout=2, retries=1) as local:
        assert local.request("ping") == {"admin": True}  # ipc: everything allowed, as before


def test_a_stranger_or_a_wrong_server_key_gets_no_answer(served: Served, tmp_path: Path) -> None:
    server = served.keys.keypair.public.decode()  # type: ignore[union-attr]
    _, mallory, _ = keygen(str(tmp_path / "elsewhere"), "mallory")
    _, _, wrong = keygen(str(tmp_path / "elsewhere"), "wrong")
    for server_key, key in ((server, mallory), (server, None), (wrong, str(tmp_path / "clients" / "alice.key_secret"))):
        with pytest.raises(Unreachable) as caught:
            ask(served, server_key, key, timeout=0.5)
        assert "--server-key" in str(caught.value) and "client_keys" in str(caught.value)
    assert served.seen == []  # nothing reached the handler
    assert ask(served, server, str(tmp_path / "clients" / "alice.key_secret")) == {"admin": False}
