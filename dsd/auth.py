"""Authenticated datagrams: the cluster secret, and the signed envelope around `dsd.wire`.

With ``[cluster] secret_file`` set, every datagram a daemon sends is sealed::

    b"DSA" 0x01 | key id (4) | counter (8, big-endian) | wire.encode(message) | HMAC-SHA256 tag (32)

The tag covers everything before it. The key id (the first 4 bytes of HMAC(key, "dsd key
id v1"), which reveals nothing of the key) tells the receiver which configured key to
verify with: the first key of the file signs, every key verifies, so a new key can be
rolled out without downtime. Replays are refused per sender name, using the message's
incarnation (the sender's start time in ns) and the counter (one per process): within one
incarnation a sliding window of `WINDOW` counters (as in IPsec and DTLS) takes each counter
at most once, in any order, and refuses anything older than the window. A newer
incarnation starts a window of its own beside the ones before, so a second daemon started
under a name in use (which refuses to run, see `dsd.core.node`) cannot make the holder's
later datagrams look replayed. At most `INCARNATIONS` windows are kept per name; the one
used least recently goes (a dead incarnation, not the holder, which keeps sending), and an
incarnation older than every kept one is refused.
Under the daemon's own name an older incarnation is not refused: that is the daemon
that holds the name this one wants, and the core must hear it to refuse to run.

DISCOVER and OFFER stay unsigned both ways: ``dschat --discover`` runs on hosts without
the secret, and neither changes any state.

Pure: no sockets, no clock. Only `read_keyring` touches the file system.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
import string
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

from dsd import wire
from dsd.config import ConfigError
from dsd.core import datagrams

HEADER = b"DSA" + bytes([1])
KEY_ID_SIZE = 4
COUNTER_SIZE = 8
TAG_SIZE = hashlib.sha256().digest_size
OVERHEAD = len(HEADER) + KEY_ID_SIZE + COUNTER_SIZE + TAG_SIZE
MAX_SEALED = wire.MAX_DATAGRAM + OVERHEAD  # 1448: still one Ethernet frame
MIN_KEY_BYTES = 32
MIN_DISTINCT_BYTES = 16  # 32 random bytes have about 30 distinct values; "0000..." has 1
WINDOW = 64
INCARNATIONS = 4  # replay windows kept per sender name
MAX_SENDERS = 1024
UNSIGNED_TYPES = (datagrams.Discover, datagrams.Offer)
KEYGEN = "head -c 32 /dev/urandom | base64"

# Why a datagram was rejected: the keys of `dsctl stats` datagrams_rejected_by_reason.
MALFORMED = "malformed"
UNSIGNED = "unsigned"
BAD_TAG = "bad_tag"
UNKNOWN_KEY = "unknown_key"
REPLAYED = "replayed"
REASONS = (MALFORMED, UNSIGNED, BAD_TAG, UNKNOWN_KEY, REPLAYED)


class Rejected(ValueError):
    """A datagram refused for `reason` (one of REASONS); str() says why in detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def key_id(key: bytes) -> bytes:
    return hmac.new(key, b"dsd key id v1", hashlib.sha256).digest()[:KEY_ID_SIZE]


@dataclass(frozen=True)
class Keyring:
    """The configured keys, in file order: `keys[0]` signs, all verify."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring needs at least one key")

    @property
    def signing(self) -> bytes:
        return self.keys[0]

    @cached_property
    def by_id(self) -> dict[bytes, bytes]:
        return {key_id(key): key for key in self.keys}


# ------------------------------------------------------------------------- the key file


def parse_key(text: str) -> bytes:
    """One key: hex if it is only hex digits (64 or more), else standard base64; ValueError if weak or bad."""
    if len(text) >= 2 * MIN_KEY_BYTES and all(c in string.hexdigits for c in text):
        if len(text) % 2:
            raise ValueError("an odd number of hex digits")
        key = bytes.fromhex(text)
    else:
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("neither hex nor base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{len(key)} bytes, at least {MIN_KEY_BYTES} are needed")
    if len(set(key)) < MIN_DISTINCT_BYTES:
        raise ValueError("not random (too few distinct bytes)")
    return key


def parse_keyring(text: str, path: str) -> Keyring:
    """The keys of a secret file: one per line; blank lines and # comments are ignored."""
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = parse_key(line)
        except ValueError as error:
            raise ConfigError(f"{path}: line {number}: bad key: {error}; "
                              f"a key is at least {MIN_KEY_BYTES} random bytes in base64 or hex, "
                              f"e.g. from `{KEYGEN}`") from None
        if key in keys:
            raise ConfigError(f"{path}: line {number}: the same key twice; remove one")
        if key_id(key) in {key_id(k) for k in keys}:
            raise ConfigError(f"{path}: line {number}: two keys with the same key id; generate a new key")
        keys.append(key)
    if not keys:
        raise ConfigError(f"{path}: no key (the [cluster] secret_file needs one key per line, "
                          f"e.g. from `{KEYGEN}`)")
    return Keyring(tuple(keys))


def read_keyring(path: str) -> Keyring | None:
    """The keyring of ``[cluster] secret_file`` (None when it is ""); ConfigError if unusable.

    The file must be a regular file that neither group nor others can read or write.
    """
    if not path:
        return None
    where = f"{path} ([cluster] secret_file)"
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{where}: not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise ConfigError(f"{where}: group or others can access it (mode {mode:04o}); "
                                  f"run chmod 600 {path}")
            data = file.read(64 * 1024 + 1)
    except OSError as error:
        raise ConfigError(f"{where}: cannot read: {error.strerror or error}") from None
    if len(data) > 64 * 1024:
        raise ConfigError(f"{where}: larger than 64 KiB: not a key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not text: keys are base64 or hex, one per line") from None
    return parse_keyring(text, where)


# ----------------------------------------------------------------------------- sealing


class Sealer:
    """Signs outgoing datagrams with the keyring's first key; one counter for the process."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.counter = 0

    def seal(self, message: datagrams.Message) -> bytes:
        """The datagram for `message`: sealed, except DISCOVER and OFFER (see the module doc)."""
        body = wire.encode(message)
        if isinstance(message, UNSIGNED_TYPES):
            return body
        self.counter += 1
        key = self.keyring.signing
        content = HEADER + key_id(key) + self.counter.to_bytes(COUNTER_SIZE, "big") + body
        return content + hmac.new(key, content, hashlib.sha256).digest()


@dataclass
class _Window:
    """One sender's replay state: its incarnation, highest counter, and which of the last WINDOW were seen."""

    incarnation: int
    highest: int
    seen: int  # bit i set: counter highest - i was accepted
    used: int = 0  # when it last accepted a datagram, in the Opener's accept count


class Opener:
    """Verifies incoming datagrams and refuses replays; state for at most `max_senders` senders.

    `own_name`: this daemon's name, under which older incarnations are let through (module doc).
    """

    def __init__(self, keyring: Keyring, max_senders: int = MAX_SENDERS, own_name: str | None = None) -> None:
        self.keyring = keyring
        self.max_senders = max_senders
        self.own_name = own_name
        # name -> its incarnations' windows; least recently accepted name first
        self._windows: OrderedDict[str, list[_Window]] = OrderedDict()
        self._accepted = 0

    @property
    def senders(self) -> int:
        return len(self._windows)

    def open(self, data: bytes) -> datagrams.Message:
        """The message in `data`; raises Rejected with the reason if it must not be believed."""
        if len(data) > MAX_SEALED:
            raise Rejected(MALFORMED, f"datagram of {len(data)} bytes exceeds {MAX_SEALED}")
        if not data.startswith(HEADER):
            message = decode_plain(data)
            if isinstance(message, UNSIGNED_TYPES):
                return message
            raise Rejected(UNSIGNED, f"unsigned {message.type_name()}")
        if len(data) < OVERHEAD:
            raise Rejected(MALFORMED, "truncated signed datagram")
        start = len(HEADER)
        kid = data[start:start + KEY_ID_SIZE]
        key = self.keyring.by_id.get(kid)
        if key is None:
            raise Rejected(UNKNOWN_KEY, f"unknown key id {kid.hex()}")
        content, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
        if not hmac.compare_digest(hmac.new(key, content, hashlib.sha256).digest(), tag):
            raise Rejected(BAD_TAG, "bad tag")
        counter = int.from_bytes(content[start + KEY_ID_SIZE:start + KEY_ID_SIZE + COUNTER_SIZE], "big")
        message = decode_plain(content[start + KEY_ID_SIZE + COUNTER_SIZE:])
        if isinstance(message, UNSIGNED_TYPES):
            raise Rejected(MALFORMED, f"a signed {message.type_name()}")
        self._accept(message.name, message.incarnation, counter)
        return message

    def _accept(self, name: str, incarnation: int, counter: int) -> None:
        """Record (incarnation, counter) from `name`, or raise Rejected(REPLAYED)."""
        windows = self._windows.get(name, [])
        window = next((w for w in windows if w.incarnation == incarnation), None)
        if window is None:
            oldest = min((w.incarnation for w in windows), default=incarnation)
            if incarnation < oldest and name != self.own_name:
                raise Rejected(REPLAYED, f"{name}: incarnation {incarnation} < {oldest}")
            window = _Window(incarnation, counter, 1)
            windows = sorted(windows, key=lambda w: w.used)[1 - INCARNATIONS:] + [window]
        else:
            _advance(window, name, counter)
        self._accepted += 1
        window.used = self._accepted
        self._windows[name] = windows
        self._windows.move_to_end(name)
        while len(self._windows) > self.max_senders:
            self._windows.popitem(last=False)


def _advance(window: _Window, name: str, counter: int) -> None:
    """Take `counter` into `window`, or raise Rejected(REPLAYED) if seen or too old."""
    if counter > window.highest:
        shift = counter - window.highest
        window.seen = ((window.seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
        window.highest = counter
        return
    age = window.highest - counter
    if age >= WINDOW or window.seen >> age & 1:
        raise Rejected(REPLAYED, f"{name}: counter {counter} already seen or too old")
    window.seen |= 1 << age


def decode_plain(data: bytes) -> datagrams.Message:
    """`wire.decode`, failing with Rejected(MALFORMED)."""
    try:
        return wire.decode(data)
    except wire.WireError as error:
        raise Rejected(MALFORMED, str(error)) from None
