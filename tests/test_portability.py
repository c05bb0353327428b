"""Issue 19: no POSIX-only code on the product path. Nothing here runs Windows; these checks are
what a Linux machine can say: every product module imports with the POSIX-only modules made
unavailable (as on Windows), and no call without a Windows equivalent is left unguarded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.posix_calls import POSIX_ONLY_MODULES, PRODUCT_PACKAGES, REPO, findings_in, scan

# posix is what os itself is built on here; Windows' os is built on nt instead.
BLOCKED = sorted(POSIX_ONLY_MODULES - {"posix"})

# Third-party packages pick their own backend by platform (pyserial's serialposix imports fcntl
# here, serialwin32 on Windows), so only the product's own imports are refused.
IMPORT_ALL = textwrap.dedent("""
    import builtins, importlib, pkgutil, sys
    packages, blocked = {packages!r}, {blocked!r}
    real_import = builtins.__import__

    def windows_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {{}}).get("__name__") or ""
        if level == 0 and importer.split(".")[0] in packages and name.split(".")[0] in blocked:
            raise ImportError(f"no module named {{name!r}} on Windows (imported by {{importer}})")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = windows_import
    imported = []
    for package in packages:
        root = importlib.import_module(package)
        imported.append(package)
        for module in pkgutil.walk_packages(root.__path__, package + "."):
            importlib.import_module(module.name)
            imported.append(module.name)
    print(len(imported), "modules imported")
""")


def import_all(packages: tuple[str, ...], cwd) -> subprocess.CompletedProcess:
    code = IMPORT_ALL.format(blocked=BLOCKED, packages=packages)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_every_product_module_imports_without_the_posix_only_modules():
    run = import_all(PRODUCT_PACKAGES, REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    count = int(run.stdout.split()[0])
    assert count >= 45, run.stdout  # every file of app/, app/links/, model_builder/, capture/
    print(f"\n{run.stdout.strip()} with {', '.join(BLOCKED)} unavailable to them")


def test_the_import_check_fails_on_a_module_that_needs_a_posix_only_one(tmp_path):
    package = tmp_path / "posixy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ports.py").write_text("import tty\n")
    run = import_all(("posixy",), tmp_path)
    assert run.returncode != 0 and "no module named 'tty' on Windows (imported by posixy.ports)" in run.stderr


def test_no_unguarded_posix_only_call_on_the_product_path():
    findings = scan()
    print("\n" + "\n".join(map(str, findings)))
    assert [str(f) for f in findings if f.reason is None] == []


def test_the_static_check_finds_what_windows_lacks(tmp_path):
    """The check itself can fail: a file with each kind of POSIX-only use."""
    sample = tmp_path / "sample.py"
    sample.write_text(textwrap.dedent("""
        import os, signal, fcntl
        from pty import openpty
        from os import fork
        import select
        os.kill(1, 0)
        os.fchmod(3, 0o644)
        signal.SIGKILL
        select.poll()
        path.symlink_to("x")
        os.getuid()  # posix-only: the reason it is safe
        os.replace("a", "b")
        select.select([], [], [], 0)
    """))
    found = {(f.line, f.what, f.reason) for f in findings_in(sample)}
    assert found == {
        (2, "import fcntl", None), (3, "from pty import ...", None), (4, "from os import fork", None),
        (6, "os.kill", None), (7, "os.fchmod", None), (8, "signal.SIGKILL", None), (9, "select.poll", None),
        (10, ".symlink_to()", None), (11, "os.getuid", "the reason it is safe"),
    }


def test_per_user_folders_and_the_working_folder_defaults(tmp_path, monkeypatch):
    """The dashboard's settings and log default to the user's folders, except where a station already
    keeps gutcheck-settings.toml and inspections/ in its working folder (never dropped)."""
    from app.settings import default_log_dir, default_settings_path
    from capture.platforms import user_config_dir, user_data_dir, user_log_dir

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert default_settings_path() == user_config_dir() / "settings.toml" == tmp_path / "config/gutcheck/settings.toml"
    assert default_log_dir() == user_data_dir() / "inspections" == tmp_path / "data/gutcheck/inspections"
    assert user_log_dir() == tmp_path / "cache/gutcheck"
    (tmp_path / "gutcheck-settings.toml").write_text("")
    (tmp_path / "inspections").mkdir()
    assert default_settings_path().resolve() == tmp_path / "gutcheck-settings.toml"
    assert default_log_dir().resolve() == tmp_path / "inspections"
    for platform, appdata in (("win32", "Roaming"), ("darwin", None)):
        monkeypatch.setattr(sys, "platform", platform)
        monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
        monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
        folder = user_config_dir()
        assert folder == (tmp_path / "Roaming/gutcheck" if appdata else
                          Path.home() / "Library/Application Support/gutcheck")


def test_process_alive_and_display(monkeypatch):
    from capture.platforms import has_display, process_alive

    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid)  # reaped: the pid names no process (no reuse this soon)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not has_display()
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert has_display()
