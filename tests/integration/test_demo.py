"""The README's first command: the demo cluster starts, agrees, and stops cleanly on Ctrl-C."""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading

from tests.cluster import wait_until
from tests.netns import PrivateNetwork
from tests.integration.conftest import NAMESPACES_UNAVAILABLE


def test_demo_shows_the_view_and_stops_every_daemon_on_ctrl_c():
    net = PrivateNetwork(1) if NAMESPACES_UNAVAILABLE is None else None
    prefix = []
    if net is not None:
        net.__enter__()
        prefix = net.prefix(1)
    port = str(21000 + os.getpid() % 20000)
    demo = subprocess.Popen(prefix + [sys.executable, "-m", "dsd.demo", "--port", port],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Ctrl-C stops every daemon" in line for line in lines), 20, what="the demo")
        output = "".join(lines)
        assert "leader: charlie  term: 1  servers: 3" in output
        assert output.count("alive") == 3
        chat_line = next(line for line in lines if line.startswith("Chat: "))
        command = shlex.split(chat_line[len("Chat: "):])
        assert command[-1] == "alice"
        chat = subprocess.run(prefix + command + ["--json"], input="hello from the demo\n",
                              capture_output=True, text=True, timeout=30)
        assert chat.returncode == 0, chat.stderr
        entries = [json.loads(line) for line in chat.stdout.splitlines()]
        assert [(e["kind"], e["user"], e["text"]) for e in entries if e["kind"] == "message"] == [
            ("message", "alice", "hello from the demo")]
        pids = [int(part.split("=")[1].rstrip(");")) for part in output.split("(", 1)[1].split(")", 1)[0].split()]
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=20) == 0
        reader.join(timeout=5)
        assert "stopped 3 daemons" in "".join(lines)
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}"), f"daemon {pid} still running"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if net is not None:
            net.destroy()
