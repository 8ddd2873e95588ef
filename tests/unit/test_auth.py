"""Tests for dsd.auth: the key file, sealing and opening datagrams, the replay window."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from pathlib import Path

import pytest
import zmq

from dsd import auth, wire
from dsd.auth import (
    BAD_TAG, INCARNATIONS, MALFORMED, REPLAYED, UNKNOWN_KEY, UNSIGNED, WINDOW, Keyring, Opener, Rejected, Sealer,
    parse_keyring, read_keyring,
)
from dsd.config import ConfigError, parse_settings
from dsd.core import datagrams
from dsd.io.links import client_keypair

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 140))
KEY_C = bytes(range(200, 232))
COORDINATOR = datagrams.Coordinator("alpha", 7, 100, 3)


def sealed(keyring: Keyring, message: datagrams.Message = COORDINATOR, counter: int | None = None) -> bytes:
    sealer = Sealer(keyring)
    if counter is not None:
        sealer.counter = counter - 1
    return sealer.seal(message)


def reason(opener: Opener, data: bytes) -> str:
    with pytest.raises(Rejected) as info:
        opener.open(data)
    return info.value.reason


# --- sealing and opening ------------------------------------------------------------------


def test_a_sealed_datagram_opens_to_the_same_message() -> None:
    ring = Keyring((KEY_A,))
    data = Sealer(ring).seal(COORDINATOR)
    assert data.startswith(auth.HEADER)
    assert len(data) == len(wire.encode(COORDINATOR)) + auth.OVERHEAD
    assert Opener(ring).open(data) == COORDINATOR


def test_the_largest_message_still_fits_one_ethernet_frame() -> None:
    assert auth.MAX_SEALED <= 1472  # 1500 - IPv4 header - UDP header


@pytest.mark.parametrize("index", range(len(sealed(Keyring((KEY_A,))))))
def test_changing_any_byte_is_rejected(index: int) -> None:
    data = bytearray(sealed(Keyring((KEY_A,))))
    data[index] ^= 0x01
    # A changed header is not a dsd datagram, a changed key id an unknown key, the rest a bad tag.
    if index < len(auth.HEADER):
        expected = MALFORMED
    elif index < len(auth.HEADER) + auth.KEY_ID_SIZE:
        expected = UNKNOWN_KEY
    else:
        expected = BAD_TAG
    assert reason(Opener(Keyring((KEY_A,))), bytes(data)) == expected


def test_a_wrong_key_with_a_known_key_id_is_a_bad_tag() -> None:
    forged = bytearray(sealed(Keyring((KEY_B,))))
    start = len(auth.HEADER)
    forged[start:start + auth.KEY_ID_SIZE] = auth.key_id(KEY_A)
    assert reason(Opener(Keyring((KEY_A,))), bytes(forged)) == BAD_TAG


def test_an_unknown_key_id_is_rejected() -> None:
    assert reason(Opener(Keyring((KEY_A,))), sealed(Keyring((KEY_B,)))) == UNKNOWN_KEY


def test_truncated_and_oversized_signed_datagrams_are_malformed() -> None:
    data = sealed(Keyring((KEY_A,)))
    opener = Opener(Keyring((KEY_A,)))
    for size in (len(auth.HEADER), auth.OVERHEAD - 1):
        assert reason(opener, data[:size]) == MALFORMED
    assert reason(opener, data + b"x" * auth.MAX_SEALED) == MALFORMED


def test_a_validly_signed_garbage_payload_is_malformed() -> None:
    content = auth.HEADER + auth.key_id(KEY_A) + (1).to_bytes(8, "big") + b"not a message"
    data = content + hmac.new(KEY_A, content, hashlib.sha256).digest()
    assert reason(Opener(Keyring((KEY_A,))), data) == MALFORMED


def test_unsigned_member_messages_are_rejected_discover_and_offer_pass() -> None:
    opener = Opener(Keyring((KEY_A,)))
    assert reason(opener, wire.encode(COORDINATOR)) == UNSIGNED
    assert reason(opener, wire.encode(datagrams.Leave("alpha", 7, 100))) == UNSIGNED
    assert reason(opener, b"garbage") == MALFORMED
    for message in (datagrams.Discover(5), datagrams.Offer("alpha", 5, "tcp://h:1", "tcp://h:2")):
        data = Sealer(Keyring((KEY_A,))).seal(message)
        assert data == wire.encode(message), "sent unsigned, for hosts without the secret"
        assert opener.open(data) == message


def test_without_a_secret_only_plain_datagrams_decode() -> None:
    assert auth.decode_plain(wire.encode(COORDINATOR)) == COORDINATOR
    with pytest.raises(Rejected) as info:
        auth.decode_plain(sealed(Keyring((KEY_A,))))
    assert info.value.reason == MALFORMED


# --- replays --------------------------------------------------------------------------------


def test_a_replayed_datagram_is_rejected() -> None:
    ring = Keyring((KEY_A,))
    sealer, opener = Sealer(ring), Opener(ring)
    first, second = sealer.seal(COORDINATOR), sealer.seal(COORDINATOR)
    assert opener.open(first) == COORDINATOR
    assert opener.open(second) == COORDINATOR
    assert reason(opener, first) == REPLAYED
    assert reason(opener, second) == REPLAYED


def test_reordering_within_the_window_is_accepted_once() -> None:
    ring = Keyring((KEY_A,))
    sealer, opener = Sealer(ring), Opener(ring)
    data = [sealer.seal(COORDINATOR) for _ in range(WINDOW)]
    order = list(reversed(data[1:])) + [data[0]]  # the newest first, the oldest still in the window
    for datagram in order:
        assert opener.open(datagram) == COORDINATOR
    for datagram in data:
        assert reason(opener, datagram) == REPLAYED


def test_a_counter_older_than_the_window_is_rejected_even_if_never_seen() -> None:
    ring = Keyring((KEY_A,))
    sealer, opener = Sealer(ring), Opener(ring)
    data = [sealer.seal(COORDINATOR) for _ in range(WINDOW + 1)]
    assert opener.open(data[-1]) == COORDINATOR
    assert opener.open(data[1]) == COORDINATOR  # age WINDOW - 1: the oldest still inside
    assert reason(opener, data[0]) == REPLAYED  # age WINDOW: outside


def test_a_jump_beyond_the_window_forgets_the_old_bits() -> None:
    ring = Keyring((KEY_A,))
    opener = Opener(ring)
    assert opener.open(sealed(ring, counter=1))
    assert opener.open(sealed(ring, counter=1 + 10 * WINDOW))
    assert reason(opener, sealed(ring, counter=1 + 10 * WINDOW)) == REPLAYED
    assert opener.open(sealed(ring, counter=10 * WINDOW))


def coordinator(incarnation: int) -> datagrams.Coordinator:
    return datagrams.Coordinator("alpha", incarnation, 100, 3)


def test_a_newer_incarnation_starts_afresh_beside_the_older_one() -> None:
    ring = Keyring((KEY_A,))
    opener = Opener(ring)
    old, new = coordinator(7), coordinator(8)
    assert opener.open(sealed(ring, old, counter=500)) == old
    assert opener.open(sealed(ring, new, counter=1)) == new  # a restart, or a second daemon named alpha
    # The older one's own new datagrams still count: a newcomer cannot make them look replayed.
    assert opener.open(sealed(ring, old, counter=501)) == old
    assert reason(opener, sealed(ring, old, counter=500)) == REPLAYED
    assert reason(opener, sealed(ring, new, counter=1)) == REPLAYED
    assert opener.open(sealed(ring, new, counter=2)) == new
    assert reason(opener, sealed(ring, coordinator(6), counter=1)) == REPLAYED  # older than every kept one
    assert opener.senders == 1


def test_newcomers_that_come_and_go_never_push_out_a_holder_that_keeps_speaking() -> None:
    ring = Keyring((KEY_A,))
    opener = Opener(ring)
    counter = 100
    assert opener.open(sealed(ring, coordinator(7), counter=counter))
    for newcomer in range(8, 8 + 3 * INCARNATIONS):  # a duplicate restarted again and again
        assert opener.open(sealed(ring, coordinator(newcomer), counter=1))
        counter += 1
        assert opener.open(sealed(ring, coordinator(7), counter=counter)), f"after newcomer {newcomer}"
    assert reason(opener, sealed(ring, coordinator(7), counter=counter)) == REPLAYED


def test_a_dead_incarnation_goes_once_newer_ones_fill_the_windows() -> None:
    ring = Keyring((KEY_A,))
    opener = Opener(ring)
    assert opener.open(sealed(ring, coordinator(7), counter=1))
    for restart in range(8, 8 + INCARNATIONS):  # 7 speaks no more: restarts, each heard from
        assert opener.open(sealed(ring, coordinator(restart), counter=1))
    assert reason(opener, sealed(ring, coordinator(7), counter=2)) == REPLAYED  # older than every kept one


def test_under_its_own_name_a_daemon_hears_an_older_incarnation_once() -> None:
    ring = Keyring((KEY_A,))
    opener = Opener(ring, own_name="alpha")
    mine, holder = sealed(ring, coordinator(8), counter=1), sealed(ring, coordinator(7), counter=1)
    assert opener.open(mine) == coordinator(8)
    assert opener.open(holder) == coordinator(7), "the daemon holding the name this one wants"
    assert reason(opener, holder) == REPLAYED and reason(opener, mine) == REPLAYED
    other = Opener(ring, own_name="beta")
    assert other.open(mine) and reason(other, sealed(ring, coordinator(7), counter=2)) == REPLAYED


def test_senders_are_tracked_separately() -> None:
    ring = Keyring((KEY_A,))
    opener = Opener(ring)
    for name in ("alpha", "beta"):
        assert opener.open(sealed(ring, datagrams.Coordinator(name, 7, 100, 3), counter=1))
    assert opener.senders == 2


def test_replay_state_is_bounded_and_the_least_recent_sender_goes() -> None:
    ring = Keyring((KEY_A,))
    opener = Opener(ring, max_senders=3)
    first = sealed(ring, datagrams.Coordinator("n0", 7, 100, 3), counter=1)
    opener.open(first)
    for i in range(1, 3):
        opener.open(sealed(ring, datagrams.Coordinator(f"n{i}", 7, 100, 3), counter=1))
    opener.open(sealed(ring, datagrams.Coordinator("n1", 7, 100, 3), counter=2))  # n1 is recent again
    assert reason(opener, first) == REPLAYED
    opener.open(sealed(ring, datagrams.Coordinator("n3", 7, 100, 3), counter=1))
    assert opener.senders == 3
    assert opener.open(first), "n0 was the least recent and was evicted"
    assert reason(opener, sealed(ring, datagrams.Coordinator("n1", 7, 100, 3), counter=2)) == REPLAYED


def test_rejected_datagrams_create_no_replay_state() -> None:
    opener = Opener(Keyring((KEY_A,)))
    for data in (sealed(Keyring((KEY_B,))), wire.encode(COORDINATOR), sealed(Keyring((KEY_A,)))[:-1] + b"\0"):
        reason(opener, data)
    assert opener.senders == 0


# --- rotation -------------------------------------------------------------------------------


def test_rotation_the_first_key_signs_and_every_key_verifies() -> None:
    old, both_old_first, both_new_first, new = (
        Keyring((KEY_A,)), Keyring((KEY_A, KEY_B)), Keyring((KEY_B, KEY_A)), Keyring((KEY_B,)),
    )
    message = datagrams.Coordinator("alpha", 7, 100, 3)
    # Step 1: the new key added second everywhere; old-only daemons still understand everyone.
    assert Opener(old).open(sealed(both_old_first, message)) == message
    assert Opener(both_old_first).open(sealed(old, message)) == message
    # Step 2: the new key moved first: signs with it, and every step-1 daemon verifies it.
    assert Opener(both_old_first).open(sealed(both_new_first, message)) == message
    assert Opener(both_new_first).open(sealed(both_old_first, message)) == message
    # Step 3: the old key removed.
    assert Opener(new).open(sealed(both_new_first, message)) == message
    assert reason(Opener(new), sealed(old, message)) == UNKNOWN_KEY


def test_a_reloaded_keyring_keeps_the_replay_state() -> None:
    opener = Opener(Keyring((KEY_A,)))
    data = sealed(Keyring((KEY_A,)))
    opener.open(data)
    opener.keyring = Keyring((KEY_B, KEY_A))
    assert reason(opener, data) == REPLAYED


# --- the key file ----------------------------------------------------------------------------


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_keys_in_base64_and_hex_comments_and_blank_lines() -> None:
    text = f"# cluster keys\n\n  {b64(KEY_A)}  \n# the next one\n{KEY_B.hex().upper()}\r\n"
    assert parse_keyring(text, "k").keys == (KEY_A, KEY_B)


@pytest.mark.parametrize("line, why", [
    (b64(KEY_A[:31]), "31 bytes, at least 32"),
    (KEY_A[:31].hex(), "neither hex nor base64"),  # 62 hex digits are taken for base64
    (KEY_A.hex() + "0", "odd number of hex digits"),
    (b64(KEY_A)[:-1], "neither hex nor base64"),
    ("not a key!", "neither hex nor base64"),
    ("00" * 32, "not random"),
    (b64(b"a" * 48), "not random"),
    (f"{b64(KEY_A)} {b64(KEY_B)}", "neither hex nor base64"),
])
def test_bad_key_text_names_the_file_line_and_how_to_make_one(line: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_keyring(f"# first\n{line}\n", "/etc/dsd.key")
    message = str(info.value)
    assert message.startswith("/etc/dsd.key: line 2: bad key: ") and why in message, message
    assert auth.KEYGEN in message and "\n" not in message


def test_the_same_key_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="line 2: the same key twice"):
        parse_keyring(f"{b64(KEY_A)}\n{KEY_A.hex()}\n", "k")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_a_file_without_keys_is_an_error(text: str) -> None:
    with pytest.raises(ConfigError, match="no key"):
        parse_keyring(text, "k")


def write_key_file(path: Path, text: str, mode: int = 0o600) -> str:
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_read_keyring(tmp_path: Path) -> None:
    assert read_keyring("") is None
    path = write_key_file(tmp_path / "dsd.key", f"{b64(KEY_A)}\n{b64(KEY_B)}\n", 0o400)
    assert read_keyring(path) == Keyring((KEY_A, KEY_B))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o660, 0o601])
def test_a_key_file_others_or_the_group_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_key_file(tmp_path / "dsd.key", b64(KEY_A) + "\n", mode)
    with pytest.raises(ConfigError) as info:
        read_keyring(path)
    assert str(info.value) == (f"{path} ([cluster] secret_file): group or others can access it "
                               f"(mode {mode:04o}); run chmod 600 {path}")


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.key")
    with pytest.raises(ConfigError, match=r"missing.key \(\[cluster\] secret_file\): cannot read: No such file"):
        read_keyring(path)


def test_a_directory_empty_file_or_binary_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file|cannot read"):
        read_keyring(str(directory))
    with pytest.raises(ConfigError, match="no key"):
        read_keyring(write_key_file(tmp_path / "empty.key", ""))
    (tmp_path / "bin.key").write_bytes(b"\xff" * 40)
    os.chmod(tmp_path / "bin.key", 0o600)
    with pytest.raises(ConfigError, match="not text"):
        read_keyring(str(tmp_path / "bin.key"))
    with pytest.raises(ConfigError, match="larger than 64 KiB"):
        read_keyring(write_key_file(tmp_path / "big.key", "#" * (64 * 1024 + 1)))


def test_secret_file_setting_must_be_absolute() -> None:
    assert parse_settings('[cluster]\nsecret_file = "/etc/dsd.key"\n', "f", {}).cluster.secret_file == "/etc/dsd.key"
    with pytest.raises(ConfigError, match=r'\[cluster\] secret_file = "dsd.key": "" \(none'):
        parse_settings('[cluster]\nsecret_file = "dsd.key"\n', "f", {})


# --- the links' CURVE client keys ------------------------------------------------------------


def test_the_link_client_keypair_is_derived_from_the_key_alone() -> None:
    pair = client_keypair(KEY_A)
    assert client_keypair(KEY_A) == pair, "every holder of the key derives the same pair"
    assert zmq.curve_public(pair.secret) == pair.public and len(pair.public) == len(pair.secret) == 40
    assert client_keypair(KEY_B).public != pair.public
    assert re.fullmatch(datagrams.LINK_KEY, pair.public.decode())
