"""`dsctl`: the operator's window into a dsd daemon.

Aligned columns for people, ``--json`` for scripts. Exit codes: 0 ok,
1 failed, 2 usage, 3 daemon unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

import zmq

from dsd import human, usage
from dsd.client import ControlClient, DaemonError, Unreachable, feed_address
from dsd.commands import COMMANDS
from dsd.config import ConfigError, load_settings
from dsd.curve import ClientCurve, CurveError, connect, keygen, require_server_key
from dsd.usage import Parser, check_endpoint, seconds

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
WATCH_HELP = "stream feed events until Ctrl-C, one line each"
WATCH_CHECK = 2.0  # seconds of silence on the feed after which watch asks whether the daemon is there
KEYGEN_HELP = ("make a client keypair: DIR/NAME.key (public: for the daemon's [control] client_keys or "
               "admin_keys) and DIR/NAME.key_secret (for --key)")
# The chat commands are dschat's (docs/chat-api.md); an operator sees the users in `view`.
OPERATOR_COMMANDS = {name: command for name, command in COMMANDS.items() if not name.startswith("chat.")}


def render_view(view: dict[str, Any]) -> str:
    rows = [["", "NAME", "ADDRESS", "PRIORITY", "STATE", "ROLE", "CHAT", "LEADER", "TERM", "LAST SEEN"]]
    for server in view["servers"]:
        mark = "*" if server["name"] == view["leader"] else ""
        name = server["name"] + (" (self)" if server["name"] == view["self"] else "")
        rows.append([
            mark, name, human.value(server["address"] or None), str(server["priority"]), server["state"],
            human.value(server.get("role") or None), human.value(server.get("chat")), human.value(server["leader"]),
            str(server["term"]), f"{server['last_seen']:.1f}s",
        ])
    leader = view["leader"] or "none (election in progress)"
    text = human.table(rows) + f"\n\nleader: {leader}  term: {view['term']}  servers: {len(view['servers'])}"
    clients = view.get("clients", [])
    users = ", ".join(f"{c['user']} ({c['server']})" for c in clients) or "none"
    text += f"\nchat users: {users}"
    if view.get("chat_cluster"):
        text += f"\nchat cluster: {view['chat_cluster']}"
    others = sorted({server["name"] for server in view["servers"] if server.get("chat") == "other cluster"})
    if others:
        text += (f"\nwarning: {', '.join(others)} belong(s) to another chat cluster; the two never merge "
                 "(README: two chat clusters)")
    return text


def render_leader(result: dict[str, Any]) -> str:
    if result["leader"] is None:
        return f"no leader (term {result['term']}): an election is in progress"
    return f"{result['leader']} (term {result['term']})"


def render_elect(result: dict[str, Any]) -> str:
    before, after = result["previous_term"], result["term"]
    return f"election started (term was {before}, now {after})" if after != before else \
        f"election started (term was {before})"


# `dsctl stats` groups, like `serf info`: a counter goes to the first group whose prefix it has
# (a new counter needs no change here), shown without the group's name (datagrams_sent: sent).
STATS_GROUPS = (("datagrams", ("datagrams_",)), ("election", ("election", "leader_")),
                ("chat", ("chat_", "link_")), ("cluster", ("",)))
STATS_ORDER = ("cluster", "datagrams", "election", "chat")


def render_stats(stats: dict[str, Any]) -> str:
    groups: dict[str, list[tuple[str, Any]]] = {title: [] for title in STATS_ORDER}
    for key, item in stats.items():
        title, prefix = next((title, prefix) for title, prefixes in STATS_GROUPS
                             for prefix in prefixes if key.startswith(prefix))
        label = key.removeprefix(f"{title}_")
        groups[title].append((label, human.duration(item) if key == "uptime" else item))
    return human.sections(groups.items())


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "view": render_view,
    "leader": render_leader,
    "stats": render_stats,
    "info": lambda result: human.pairs(result.items()),
    "ping": lambda result: "pong",
    "elect": render_elect,
    "forget": lambda result: f"removing {result['forgetting']} from the chat's voters",
    "server-key": lambda result: result["server_key"],
}


def render_event(event: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time", time.time())))
    details = " ".join(
        f"{key}={human.value(item)}" for key, item in event.items() if key not in ("topic", "time", "node")
    )
    return f"{stamp} {event.get('node', '?')} {event['topic']} {details}".rstrip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # The options are accepted before and after COMMAND ("dsctl view --json").
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="dsd configuration to read the endpoints from")
    common.add_argument("-e", "--endpoint", default=argparse.SUPPRESS,
                        help="control endpoint: ipc://PATH or tcp://HOST:PORT (overrides the configuration)")
    common.add_argument("--timeout", type=seconds, default=argparse.SUPPRESS, metavar="S",
                        help="seconds per try (default 1)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output: one JSON object per line")
    common.add_argument("--server-key", metavar="KEY", default=argparse.SUPPRESS,
                        help="with -e tcp://...: the daemon's public key (Z85, or a certificate file), "
                             "as `dsctl server-key` prints it on the daemon's host; quote it, "
                             "Z85 has shell characters")
    common.add_argument("--key", metavar="PATH", default=argparse.SUPPRESS,
                        help="with --server-key: your secret certificate (NAME.key_secret from `dsctl keygen`); "
                             "default: a new key each run, which only a daemon with any_client = true lets in")
    parser = Parser(
        prog="dsctl",
        description="Inspect and operate a dsd daemon.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage, 3 daemon unreachable.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, text in [(c.name, c.help) for c in OPERATOR_COMMANDS.values()] + [("watch", WATCH_HELP)]:
        command = sub.add_parser(name, help=text, description=text, parents=[common])
        for arg in OPERATOR_COMMANDS[name].args if name in OPERATOR_COMMANDS else ():
            command.add_argument(arg.name, metavar=arg.name.upper(), type=arg.kind)
    keys = sub.add_parser("keygen", help=KEYGEN_HELP, description=KEYGEN_HELP, parents=[common])
    keys.add_argument("directory", metavar="DIR", help="where to write them (made if missing)")
    keys.add_argument("name", metavar="NAME", help="the files' name: 1-64 characters of A-Z a-z 0-9 . _ -")
    args = parser.parse_args(argv)
    for option, default in (("config", None), ("endpoint", None), ("timeout", 1.0), ("json", False),
                            ("server_key", None), ("key", None)):
        if not hasattr(args, option):
            setattr(args, option, default)
    if args.endpoint is not None:
        check_endpoint(args.endpoint)
    return args


def watch(client: ControlClient, as_json: bool) -> int:
    """Print the feed's events; say on stderr when the daemon stops answering, and when it is back.

    The feed alone cannot tell a quiet daemon from a dead one, so after WATCH_CHECK seconds
    of silence a ping asks; the SUB socket reconnects by itself when the daemon returns.
    """
    info = client.request("info")
    remote = client.endpoint.startswith("tcp://") and isinstance(info.get("tcp_feed"), str)
    feed = feed_address(client.endpoint, info["tcp_feed"]) if remote else info["feed"]
    context = zmq.Context.instance()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    connect(socket, feed, client.curve)
    down = False
    try:
        while True:
            if socket.poll(int(WATCH_CHECK * 1000), zmq.POLLIN):
                for body in socket.recv_multipart()[1:]:  # [topic, event, ...]
                    event = json.loads(body)
                    print(json.dumps(event) if as_json else render_event(event), flush=True)
                continue
            try:
                client.request("ping")
            except Unreachable as error:
                if not down:
                    print(f"dsctl: {error}; still watching", file=sys.stderr, flush=True)
                down = True
                continue
            if down:
                print(f"dsctl: dsd at {client.endpoint} answers again; events meanwhile were missed",
                      file=sys.stderr, flush=True)
            down = False
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        socket.close(linger=0)


def make_keys(directory: str, name: str, as_json: bool) -> int:
    try:
        public, secret, public_key = keygen(directory, name)
    except CurveError as error:
        print(f"dsctl: {error}", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        print(json.dumps({"public": public, "secret": secret, "public_key": public_key}))
    else:
        print(human.table([["public", public, "for the daemon's [control] client_keys (or admin_keys) directory"],
                           ["secret", secret, "yours only: dschat/dsctl --key"], ["key", public_key, ""]]))
    return EXIT_OK


def run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args.command == "keygen":
        return make_keys(args.directory, args.name, args.json)
    endpoint = args.endpoint
    if endpoint is None:
        try:
            endpoint = load_settings(args.config).control.endpoint
        except ConfigError as error:
            print(f"dsctl: {error}", file=sys.stderr)
            return EXIT_FAILED
    curve = ClientCurve.from_options(args.server_key, args.key)
    require_server_key([endpoint], curve)
    try:
        with ControlClient(endpoint, timeout=args.timeout, curve=curve) as client:
            if args.command == "watch":
                return watch(client, args.json)
            arguments = {arg.name: getattr(args, arg.name) for arg in OPERATOR_COMMANDS[args.command].args}
            result = client.request(args.command, **arguments)
    except Unreachable as error:
        print(f"dsctl: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except DaemonError as error:
        print(f"dsctl: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result) if args.json else RENDERERS[args.command](result))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return usage.run("dsctl", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
