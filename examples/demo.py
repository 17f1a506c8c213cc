"""A short real demonstration of p2p leases, run by the README's first command.

In a scratch repository: two runs of one task contend and the second waits for the first; then a
holder is killed with SIGKILL and its lease is taken over at once, with a newer fencing token.
Everything here is the real CLI in real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

TASK = "TASK-DEMO-001"
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:5.2f}s] {text}", flush=True)


def orc(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orc_git", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="orc-demo-") as tmp:
        env_home = os.path.join(tmp, "home")
        os.makedirs(env_home)
        os.environ["ORC_HOME"] = env_home
        repo = os.path.join(tmp, "repo")
        subprocess.run(["git", "init", "-q", repo], check=True)
        say(f"scratch repository {repo}")
        say("$ orc init --mode p2p\n" + orc("init", "--mode", "p2p", cwd=repo).stderr.strip())

        say("run A: orc lock run --  sleep 2   (holds the lease for 2 s)")
        a = subprocess.Popen([sys.executable, "-m", "orc_git", "lock", "run", TASK, "--",
                              "sh", "-c", "echo '  run A is working'; sleep 2"], cwd=repo)
        while not os.path.exists(os.path.join(repo, ".orc", "tasks", TASK, "lock.yaml")):
            time.sleep(0.01)
        say("run B: orc lock run --wait -- ...   (must wait for A)")
        b = subprocess.run([sys.executable, "-m", "orc_git", "lock", "run", TASK, "--wait", "--",
                            "sh", "-c", "echo '  run B got the lease'"], cwd=repo, timeout=60)
        a.wait(30)
        say(f"A exited {a.returncode}, then B exited {b.returncode}: they never overlapped")

        say("run C holds the lease, then is killed with SIGKILL")
        c = subprocess.Popen([sys.executable, "-m", "orc_git", "lock", "run", TASK, "--",
                              "sleep", "60"], cwd=repo, start_new_session=True)
        while orc("lock", "status", TASK, "--json", cwd=repo).stdout.find('"locked": true') < 0:
            time.sleep(0.05)
        print(orc("lock", "status", TASK, cwd=repo).stdout, end="")
        os.kill(c.pid, signal.SIGKILL)
        c.wait()
        os.killpg(c.pid, signal.SIGKILL)  # its `sleep` child too
        say("$ orc lock status  (the dead holder is seen at once)")
        print(orc("lock", "status", TASK, cwd=repo).stdout, end="")
        say("$ orc lock run -- true  (takes the stale lease over without waiting)")
        d = orc("lock", "run", TASK, "--", "true", cwd=repo)
        print(d.stderr, end="")
        say(f"exit {d.returncode}; the fencing token went up with every grant")
        return 0 if (a.returncode, b.returncode, d.returncode) == (0, 0, 0) else 1


if __name__ == "__main__":
    sys.exit(main())
