"""What differs between Windows, macOS and Linux, in one place: per-user folders, whether a window
can open, whether a process still runs, file modes. Everything else in Gutcheck is written once
for all three (pathlib, os.replace, tempfile, pyserial URLs); tests/test_portability.py checks
that no POSIX-only call creeps onto the product path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "gutcheck"


def _windows_folder(variable: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / "AppData" / ("Roaming" if variable == "APPDATA" else "Local"))


def user_config_dir() -> Path:
    """Where a user's settings live: %APPDATA%\\gutcheck, ~/Library/Application Support/gutcheck,
    $XDG_CONFIG_HOME/gutcheck (~/.config/gutcheck)."""
    if sys.platform == "win32":
        return _windows_folder("APPDATA") / APP
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / APP


def user_data_dir() -> Path:
    """Where a user's station data live (the inspection log): %LOCALAPPDATA%\\gutcheck,
    ~/Library/Application Support/gutcheck, $XDG_DATA_HOME/gutcheck (~/.local/share/gutcheck)."""
    if sys.platform == "win32":
        return _windows_folder("LOCALAPPDATA") / APP
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / APP


def user_log_dir() -> Path:
    """Where crash logs go: %LOCALAPPDATA%\\gutcheck\\logs, ~/Library/Logs/gutcheck,
    $XDG_CACHE_HOME/gutcheck (~/.cache/gutcheck)."""
    if sys.platform == "win32":
        return _windows_folder("LOCALAPPDATA") / APP / "logs"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Logs" / APP
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / APP


def has_display() -> bool:
    """Whether a window can open: always on Windows and macOS (a desktop session); on Linux and the
    other Unixes only with an X11 or Wayland display."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (someone else's counts as running: its files are left alone)."""
    if sys.platform == "win32":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)  # posix-only: signal 0 only asks; on Windows os.kill would end the process
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    import ctypes
    from ctypes import wintypes

    query_limited_information, still_active, access_denied = 0x1000, 259, 5
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:
        return ctypes.get_last_error() == access_denied
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def set_mode(fd: int, mode: int) -> None:
    """chmod an open file where modes exist (POSIX); Windows has only a read-only flag, and a new
    file there is already writable by its user."""
    if hasattr(os, "fchmod") and sys.platform != "win32":
        os.fchmod(fd, mode)  # posix-only: behind the hasattr and platform test above
