"""CURVE keys for the TCP control endpoint and feed, in zmq.auth's certificate files.

A certificate is the text file `zmq.auth.create_certificates` writes: NAME.key holds a
public key, NAME.key_secret the public and the secret key. The daemon's keypair is the
secret certificate `[control] server_key`, made on first start; the clients allowed in
are the NAME.key files in `[control] client_keys` (and `admin_keys`, whose clients may
also run admin commands such as `elect`).

The client side (dsctl, dschat) is :class:`ClientCurve`: the daemon's public key, given
as `--server-key` (Z85 text or a certificate file), and the client's own keypair, from
`--key` or made afresh for each run.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.auth

from dsd.config import ConfigError, ControlSettings
from dsd.usage import UsageError

Z85_KEY = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
CERTIFICATE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
KEYGEN_HINT = "dsctl keygen DIR NAME"


class CurveError(Exception):
    """A keypair cannot be made; ``str(e)`` is one line. (Unusable keys given as options are UsageErrors.)"""


@dataclass(frozen=True)
class Keypair:
    public: bytes  # Z85, 40 bytes
    secret: bytes


def start_zap(context: zmq.Context, domain: str, admit: Any | None, logger: str) -> Any:
    """Start zmq.auth's ZAP handler on `context` for `domain`; `admit.callback(domain, key)` decides
    which client keys get in, or any key when `admit` is None.

    Start it before binding a CURVE server there: without a handler libzmq lets every key in.
    One handler serves a whole context, so each set of rules needs a context of its own.
    """
    from zmq.auth.asyncio import AsyncioAuthenticator  # the daemon's side only: clients load no zmq.asyncio

    authenticator = AsyncioAuthenticator(context, log=logging.getLogger(logger))
    authenticator.start()
    if admit is None:
        authenticator.configure_curve(domain=domain, location=zmq.auth.CURVE_ALLOW_ANY)
    else:
        authenticator.configure_curve_callback(domain=domain, credentials_provider=admit)
    return authenticator


def make_server(socket: zmq.Socket, secret_key: bytes, domain: str) -> None:
    """Make `socket` (not bound yet) a CURVE server judged by the ZAP handler of `domain`."""
    socket.curve_server = True
    socket.curve_secretkey = secret_key
    socket.zap_domain = domain.encode()


def is_z85_key(text: str | bytes) -> bool:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return bool(Z85_KEY.fullmatch(text))


def _read_certificate(path: str) -> tuple[bytes, bytes | None]:
    """(public, secret or None) of a certificate file; ValueError with the reason."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as error:
        raise ValueError(f"cannot read it: {error.strerror or 'no such file'}") from None
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not a ZeroMQ certificate (no public-key line)") from None
    if not is_z85_key(public) or (secret is not None and not is_z85_key(secret)):
        raise ValueError("not a ZeroMQ certificate (a key is not 40 characters of Z85)")
    if secret is not None and zmq.curve_public(secret) != public:
        raise ValueError("its public-key does not belong to its secret-key")
    return public, secret


def _read_keypair(path: str) -> Keypair:
    public, secret = _read_certificate(path)
    if secret is None:
        raise ValueError("it holds no secret-key: give the NAME.key_secret file, not the public NAME.key")
    return Keypair(public, secret)


def create_certificates(directory: str, name: str) -> tuple[str, str]:
    """NAME.key and NAME.key_secret (mode 0600) in `directory`; never overwrites either.

    The files are written in a private temporary directory and moved into place, so the
    secret is never readable by others, not even for a moment, nor ever half written.
    """
    public_path = os.path.join(directory, f"{name}.key")
    secret_path = os.path.join(directory, f"{name}.key_secret")
    for path in (public_path, secret_path):
        if os.path.lexists(path):
            raise FileExistsError(f"{path} already exists; remove it or choose another name")
    scratch = tempfile.mkdtemp(prefix=".keygen-", dir=directory)  # mode 0700
    try:
        public_tmp, secret_tmp = zmq.auth.create_certificates(scratch, name)
        os.chmod(secret_tmp, 0o600)
        os.chmod(public_tmp, 0o644)
        os.rename(secret_tmp, secret_path)
        os.rename(public_tmp, public_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return public_path, secret_path


def keygen(directory: str, name: str) -> tuple[str, str, str]:
    """`dsctl keygen`: DIR/NAME.key, DIR/NAME.key_secret and the public key.

    UsageError for a bad NAME, CurveError if the files cannot be made.
    """
    if not CERTIFICATE_NAME.fullmatch(name):
        raise UsageError(f"bad name {name!r}: 1-64 characters of A-Z a-z 0-9 . _ -")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        public, secret = create_certificates(directory, name)
    except OSError as error:
        raise CurveError(f"cannot make the keypair in {directory}: {error.strerror or error}") from None
    return public, secret, _read_keypair(secret).public.decode("ascii")


# --- the daemon's side -----------------------------------------------------------------------

@dataclass(frozen=True)
class ServerKeys:
    """What the TCP endpoints need: the daemon's keypair, who may connect, who is an admin.

    `allowed` None means any client key (`any_client = true`).
    """

    keypair: Keypair
    allowed: frozenset[bytes] | None
    admins: frozenset[bytes]


def _server_keypair(path: str, create: bool) -> Keypair | None:
    """The keypair in `path`; made there first if it is missing and `create` (else None)."""
    where = f"[control] server_key = {path!r}"
    if not os.path.lexists(path):
        if not create:
            return None
        directory, filename = os.path.split(path)
        name = filename.removesuffix(".key_secret")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            _, secret = create_certificates(directory, name)
            if secret != path:  # a name without the usual suffix: the secret goes where asked
                os.rename(secret, path)
        except OSError as error:
            raise ConfigError(f"{where}: cannot create the daemon's key: {error.strerror or error}") from None
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as error:
        raise ConfigError(f"{where}: cannot read it: {error.strerror or error}") from None
    if mode & 0o077:
        raise ConfigError(f"{where}: group or others can access it (mode {mode:04o}); run chmod 600 {path}")
    try:
        return _read_keypair(path)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def public_keys(directory: str, key: str) -> frozenset[bytes]:
    """The public keys of the NAME.key certificates in `directory` ([control] `key`)."""
    where = f"[control] {key} = {directory!r}"
    if not os.path.isdir(directory):
        raise ConfigError(f"{where}: not a directory; it holds the clients' public certificates "
                          f"(NAME.key, made by `{KEYGEN_HINT}`)")
    keys = set()
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        raise ConfigError(f"{where}: cannot read it: {error.strerror or error}") from None
    for name in names:
        if name.endswith(".key"):
            path = os.path.join(directory, name)
            try:
                keys.add(_read_certificate(path)[0])
            except ValueError as error:
                raise ConfigError(f"{where}: {name}: {error}") from None
    return frozenset(keys)


def load_server_keys(control: ControlSettings, create: bool = True) -> ServerKeys | None:
    """The keys for `[control]` tcp_endpoint (None without one); ConfigError when unusable.

    With `create` False (a check before starting) a missing server key is not made.
    """
    if not control.tcp_endpoint:
        return None
    keypair = _server_keypair(control.server_key, create)
    admins = public_keys(control.admin_keys, "admin_keys") if control.admin_keys else frozenset()
    allowed = None if control.any_client else public_keys(control.client_keys, "client_keys") | admins
    if keypair is None:
        return None
    return ServerKeys(keypair, allowed, admins)


# --- the clients' side -----------------------------------------------------------------------

@dataclass(frozen=True)
class ClientCurve:
    """How a client reaches tcp:// endpoints: the daemon's public key and its own keypair."""

    server_key: bytes
    keypair: Keypair

    @classmethod
    def from_options(cls, server_key: str | None, key: str | None) -> "ClientCurve | None":
        """From --server-key and --key; None (no CURVE) without --server-key; UsageError if unusable."""
        if server_key is None:
            if key is not None:
                raise UsageError("--key goes with --server-key (the daemon's public key)")
            return None
        if is_z85_key(server_key):
            public = server_key.encode("ascii")
        else:
            try:
                public = _read_certificate(server_key)[0]
            except ValueError as error:
                raise UsageError(f"--server-key {server_key}: neither a 40-character Z85 key nor a "
                                 f"readable certificate: {error}") from None
        if key is None:
            return cls(public, Keypair(*zmq.curve_keypair()))
        try:
            return cls(public, _read_keypair(key))
        except ValueError as error:
            raise UsageError(f"--key {key}: {error}") from None

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_serverkey = self.server_key
        socket.curve_publickey = self.keypair.public
        socket.curve_secretkey = self.keypair.secret


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def connect(socket: zmq.Socket, endpoint: str, curve: ClientCurve | None) -> None:
    """Connect `socket`, with CURVE when `endpoint` is tcp:// and there is a key (ipc stays plain)."""
    if curve is not None and is_tcp(endpoint):
        curve.apply(socket)
    socket.connect(endpoint)


def require_server_key(endpoints: list[str], curve: ClientCurve | None) -> None:
    """A tcp:// endpoint needs --server-key: say so before connecting (else: silence, then timeouts)."""
    remote = [endpoint for endpoint in endpoints if is_tcp(endpoint)]
    if remote and curve is None:
        raise UsageError(f"{remote[0]} is a TCP endpoint, which is encrypted: {SERVER_KEY_NEEDED}")


SERVER_KEY_NEEDED = ("give the daemon's public key with --server-key KEY "
                     "(`dsctl server-key` prints it on the daemon's host)")


UNANSWERED_TCP_HINT = (
    "over TCP, no answer is also what a wrong --server-key or a client key the daemon does not "
    "allow ([control] client_keys) looks like"
)
