"""`dsd`: the command line of the daemon.

Everything that can fail for a reason the operator should see (configuration,
another daemon on the same endpoints, a busy pidfile) is checked before
detaching, so the error reaches the terminal. The event loop and the ZeroMQ
context are created only after detaching, as forking must not copy them.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import socket
import sys

from dsd import __version__, logs
from dsd.auth import read_keyring
from dsd.config import ConfigError, Settings, find_config_path, load_settings, render_settings
from dsd.curve import load_server_keys
from dsd.io.control import BindError
from dsd.io.multicast import TransportError, interface_address
from dsd.pidfile import Pidfile, PidfileError
from dsd.store import StoreError
from dsd.usage import Parser, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="dsd",
        description="LAN cluster daemon: multicast discovery, heartbeats, failure detection, "
        "bully election; operated with dsctl.",
        epilog="Configuration: -c PATH, else $DSD_CONFIG, else /etc/dsd.toml, else built-in defaults.",
    )
    parser.add_argument("-c", "--config", metavar="PATH", help="configuration file")
    parser.add_argument("--check-config", action="store_true", help="validate, print the effective settings, exit")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override [log] level")
    parser.add_argument("--daemon", action="store_true", help="detach from the terminal (hosts without systemd)")
    parser.add_argument("--pidfile", metavar="PATH", help="with --daemon: write the process id here")
    parser.add_argument("--log-file", metavar="PATH", help="with --daemon: append logs here instead of discarding them")
    parser.add_argument("--version", action="version", version=f"dsd {__version__}")
    args = parser.parse_args(argv)
    if (args.pidfile or args.log_file) and not args.daemon:
        parser.error("--pidfile and --log-file need --daemon")
    return args


def ipc_path(endpoint: str) -> str | None:
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


def claim_endpoints(settings: Settings) -> list[int]:
    """Lock each ipc endpoint so a second dsd refuses to start instead of stealing it.

    The lock is a `flock` on PATH.lock, held by the open descriptor for the
    process's life, so a crashed daemon never leaves a stale lock behind; its
    stale socket file is removed before binding.
    """
    descriptors = []
    for endpoint in (settings.control.endpoint, settings.control.feed):
        path = ipc_path(endpoint)
        if path is None:
            continue
        os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BindError(
                f"another dsd is already running on {endpoint} (its lock {path}.lock is held); "
                "stop it or give this one other [control] endpoints"
            ) from None
        if os.path.exists(path):
            os.unlink(path)
        descriptors.append(fd)
    return descriptors


def serve(settings: Settings, config_path: str | None, log_level: str | None) -> int:
    from dsd.service import Service

    async def main() -> int:
        service = Service(settings, config_path, log_level=log_level)
        await service.run()
        return service.exit_status

    try:
        return asyncio.run(main())
    except (BindError, ConfigError, TransportError, StoreError) as error:
        logging.getLogger("dsd").error("%s", error)
        return EXIT_FAILED


def check_interface(settings: Settings) -> None:
    """The multicast interface must exist and have an IPv4 address (else dsd would stop at start)."""
    cluster = settings.cluster
    try:
        interface_address(cluster.interface, cluster.group)
    except TransportError as error:
        known = ", ".join(name for _, name in socket.if_nameindex())
        raise ConfigError(f"{settings.source or 'built-in defaults'}: [cluster] interface = "
                          f"{cluster.interface!r}: {error}; this host has {known}") from None


def detach(args: argparse.Namespace, keep: list[int]) -> None:
    """Become a daemon; every check that can fail (the pidfile, the log file) is made first."""
    import daemon

    pidfile = None
    if args.pidfile:
        pidfile = Pidfile(args.pidfile)
        pidfile.acquire()
        assert pidfile.fd is not None
        keep = keep + [pidfile.fd]
    log_file = open(args.log_file, "a", buffering=1) if args.log_file else None
    context = daemon.DaemonContext(
        pidfile=pidfile, umask=0o027, files_preserve=keep, stderr=log_file, stdout=log_file,
        detach_process=True,
    )
    context.open()


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as error:
        print(f"dsd: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config_path = find_config_path(args.config)
        if config_path is not None:
            config_path = os.path.abspath(config_path)  # --daemon changes to /; SIGHUP reloads this path
        settings = load_settings(config_path)
        read_keyring(settings.cluster.secret_file)  # checked here so that the error reaches the terminal
        load_server_keys(settings.control, create=False)  # the same for the TCP endpoints' keys
        check_interface(settings)
    except ConfigError as error:
        print(f"dsd: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.check_config:
        print(render_settings(settings), end="")
        return EXIT_OK
    try:
        locks = claim_endpoints(settings)
        if args.daemon:
            detach(args, locks)
    except (BindError, PidfileError, OSError) as error:
        print(f"dsd: {error}", file=sys.stderr)
        return EXIT_FAILED
    logs.setup(settings.node.name, args.log_level or settings.log.level, settings.log.format, sys.stderr)
    return serve(settings, config_path, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
