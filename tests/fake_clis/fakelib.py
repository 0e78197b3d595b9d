"""Shared helpers of the fake agent CLIs: record the invocation, pick a scenario, print lines.

Every fake appends one JSON line per invocation to the file named by FAKE_RECORD: its argv,
working directory, stdin, selected environment variables and pid, so tests can assert what the
real process runner handed over. The prompt's first word picks the scenario.
"""
import json
import os
import subprocess
import sys
import time

BIG_LINE_BYTES = 2 * 1024 * 1024 + 17


def record(stdin_text, **extra):
    path = os.environ.get("FAKE_RECORD")
    if not path:
        return
    entry = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "stdin": stdin_text,
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "env": {k: os.environ.get(k) for k in ("PATH", "HOME", "FAKE_SECRET_LEAK", "FAKE_PASSED", "FAKE_CONFIGURED")},
    }
    entry.update(extra)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def noise(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def scenario(prompt):
    words = prompt.split(None, 1)
    return words[0] if words else ""


def arg_after(flag):
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def spawn_and_hang(stubborn=False):
    """Starts a grandchild in our process group, records both pids, then hangs."""
    import signal
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "300"])
    path = os.environ.get("FAKE_PIDS")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"pid": os.getpid(), "grandchild": child.pid}, f)
    return child


def hang():
    while True:
        time.sleep(60)


def big_text():
    return "x" * BIG_LINE_BYTES
