"""What dschat prints: entries, /who, /status, /help. Pure functions of their inputs.

Lines are built as prompt_toolkit-style fragments ``[(style, text), ...]`` so the terminal
can colour them; :func:`plain` joins them for pipes. Text from other users is escaped
(:func:`clean`) so that nobody can move the cursor or recolour someone else's terminal.
"""

from __future__ import annotations

import json
import time
import unicodedata
from typing import Any

from dsd.human import table, value, wrap

Fragments = list[tuple[str, str]]
Entry = dict[str, Any]

JSON_KEYS = ("seq", "kind", "user", "text", "id", "server", "time")

STYLE = {
    "time": "#888888",
    "user": "bold",
    "me": "bold ansigreen",
    "presence": "#888888 italic",
    "notice": "ansicyan",
    "error": "ansired",
}

# Bidirectional overrides reorder what follows them on screen ("Trojan Source").
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

HELP = """\
commands:
  /who          who is here, and the server each is on
  /status       the servers (state, leader, term), the users, your server, message counts
  /history N    the last N entries of the log (1-1000)
  /help         this text
  /quit         leave the chat (Ctrl-D too)
anything else is sent as a message; start it with // to send a line beginning with /"""


def clean(text: str) -> str:
    """`text` with control characters shown as escapes (``\\x1b``, ``\\n``) instead of obeyed."""
    if text.isprintable():
        return text
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS else char
        for char in text
    )


def clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def plain(fragments: Fragments) -> str:
    return "".join(text for _, text in fragments)


def entry_fragments(entry: Entry, me: str) -> Fragments:
    """One log entry: ``12:00:01 <alice> hello`` or ``12:00:01 --> bob joined (on h2)``."""
    stamp = ("class:time", clock(entry.get("time", 0.0)) + " ")
    user = clean(str(entry.get("user", "?")))
    who = "class:me" if user == me else "class:user"
    kind = entry.get("kind")
    text = clean(str(entry.get("text", "")))
    if kind == "message":
        return [stamp, (who, f"<{user}>"), ("", f" {text}")]
    server = clean(str(entry.get("server") or "?"))
    if kind == "join":
        action = "rejoined" if text == "rejoined" else "joined"
        line = f"--> {user} {action} (on {server})"
    elif kind == "leave":
        line = f"<-- {user} left"
    elif kind == "timeout":
        line = f"<-- {user} timed out"
    else:  # a kind this client does not know yet: show it rather than drop it
        line = f"--- {user} {clean(str(kind))} {text}".rstrip()
    return [stamp, ("class:presence", line)]


def entry_json(entry: Entry) -> str:
    """The --json line: exactly the keys of docs/chat-api.md, whatever else the frame had."""
    return json.dumps({key: entry.get(key) for key in JSON_KEYS})


def render_who(users: list[dict[str, Any]], me: str) -> str:
    if not users:
        return "nobody is here"
    rows = [["USER", "SERVER", "SINCE"]]
    for user in sorted(users, key=lambda u: str(u.get("user"))):
        name = clean(str(user.get("user", "?")))
        rows.append([name + (" (you)" if name == me else ""), clean(str(user.get("server") or "-")),
                     clock(user["since"]) if user.get("since") is not None else "-"])
    return table(rows)


def render_status(view: dict[str, Any], stats: dict[str, Any], users: list[dict[str, Any]],
                  me: str, server: str | None, endpoint: str, last_seq: int | None,
                  sent: int, pending: int, width: int = 80) -> str:
    """`/status`: the servers as the daemon sees them, the users, where you are, counts.

    The lines of prose are wrapped to `width` (the terminal's); the table is as wide as it is.
    """
    rows = [["", "SERVER", "STATE", "ROLE", "LEADER", "TERM"]]
    for s in view.get("servers", []):
        rows.append(["*" if s.get("name") == view.get("leader") else "", clean(str(s.get("name"))),
                     str(s.get("state", "?")), str(s.get("role", "") or "-"),
                     clean(str(s.get("leader") or "-")), str(s.get("term", "?"))])
    leader = view.get("leader") or "none (election in progress)"
    names = ", ".join(sorted(clean(str(u.get("user"))) for u in users)) or "nobody"
    # The daemon's chat counters, whatever it names them; the rest of stats is dsctl's business.
    counters = ", ".join(f"{key} {clean(value(item))}" for key, item in stats.items()
                         if "chat" in key or "message" in key)
    prose = [
        f"leader: {clean(str(leader))}  term: {view.get('term', '?')}",
        f"users: {len(users)} ({names})",
        f"you: {me} on {clean(str(server or '?'))} via {endpoint}",
        f"messages: last seq {last_seq if last_seq is not None else '-'}, you sent {sent}"
        + (f" ({pending} not yet acknowledged)" if pending else ""),
    ]
    if counters:
        prose.append(f"daemon: {counters}")
    return "\n".join([table(rows), ""] + [wrap(line, width) for line in prose])
