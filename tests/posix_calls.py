"""The static half of the portability check: every call or import on the product path (the packages
the wheel ships) that has no Windows equivalent. `python -m tests.posix_calls` prints them all,
with the reason of each one a `# posix-only: <why>` comment marks as guarded; tests/test_portability.py
fails on any that is not marked.

Known to work on Windows and so not listed: os.replace, os.dup/dup2, tempfile, pathlib, select.select
on sockets, Path.chmod (only the read-only bit there), pyserial URLs (COM3, socket://)."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = ("app", "model_builder", "capture")

# Modules Windows' Python does not have (or, for curses and readline, does not ship).
POSIX_ONLY_MODULES = frozenset({"fcntl", "pty", "tty", "termios", "resource", "grp", "pwd", "crypt", "syslog",
                                "nis", "spwd", "posix", "curses", "readline"})
# Attributes with no Windows equivalent (or, like os.kill(pid, 0), one that does something else).
POSIX_ONLY_ATTRIBUTES = {
    "os": {"fork", "forkpty", "openpty", "ttyname", "getuid", "geteuid", "getgid", "getegid", "getgroups", "setuid",
           "setgid", "setsid", "getsid", "getpgid", "setpgid", "setpgrp", "getpgrp", "killpg", "kill", "fchmod",
           "fchown", "chown", "lchown", "lchmod", "mkfifo", "mknod", "getloadavg", "sync", "statvfs", "fstatvfs",
           "nice", "pathconf", "fpathconf", "sysconf", "wait3", "wait4", "uname", "symlink", "sched_getaffinity",
           "sched_setaffinity", "getpriority", "setpriority", "posix_spawn", "register_at_fork", "pipe2",
           "set_blocking", "get_blocking"},
    "signal": {"SIGKILL", "SIGHUP", "SIGALRM", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGPIPE", "SIGQUIT", "SIGTSTP",
               "SIGCONT", "SIGSTOP", "alarm", "setitimer", "getitimer", "pause", "siginterrupt", "pthread_kill",
               "pthread_sigmask", "sigwait"},
    "select": {"poll", "epoll", "kqueue", "devpoll"},
}
# Methods by name: a symlink needs administrator rights or developer mode on Windows. (Path.owner
# and Path.group fail there too, but cannot be told from a regex match's .group() without types.)
POSIX_ONLY_METHODS = frozenset({"symlink_to"})
MARK = "# posix-only:"


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    what: str
    reason: str | None  # the `# posix-only:` comment's reason; None = unguarded

    def __str__(self) -> str:
        state = f"guarded: {self.reason}" if self.reason else "NO WINDOWS EQUIVALENT"
        return f"{self.file}:{self.line}: {self.what} ({state})"


def findings_in(path: Path) -> list[Finding]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []

    def add(node: ast.AST, what: str) -> None:
        source = lines[node.lineno - 1]
        reason = source.split(MARK, 1)[1].strip() if MARK in source else None
        name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
        found.append(Finding(name, node.lineno, what, reason))

    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in POSIX_ONLY_MODULES:
                    add(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in POSIX_ONLY_MODULES:
                add(node, f"from {node.module} import ...")
            for alias in node.names:
                if alias.name in POSIX_ONLY_ATTRIBUTES.get(top, ()):
                    add(node, f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner in POSIX_ONLY_ATTRIBUTES and node.attr in POSIX_ONLY_ATTRIBUTES[owner]:
                add(node, f"{owner}.{node.attr}")
            elif node.attr in POSIX_ONLY_METHODS and owner not in POSIX_ONLY_ATTRIBUTES:
                add(node, f".{node.attr}()")
    return found


def product_files() -> list[Path]:
    return sorted(p for package in PRODUCT_PACKAGES for p in (REPO / package).rglob("*.py"))


def scan() -> list[Finding]:
    """Every POSIX-only use in the product's files, guarded or not, in file order."""
    return [f for path in product_files() for f in sorted(findings_in(path), key=lambda f: f.line)]


def main() -> int:
    findings = scan()
    for finding in findings:
        print(finding)
    unguarded = [f for f in findings if f.reason is None]
    print(f"{len(product_files())} product files, {len(findings)} POSIX-only uses, {len(unguarded)} unguarded")
    return 1 if unguarded else 0


if __name__ == "__main__":
    sys.exit(main())
