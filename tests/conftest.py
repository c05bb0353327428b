"""Shared fixtures: small synthetic datasets and a tiny trained bundle, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_MVTEC = REPO.parent / "shared" / "datasets" / "mvtec_ad_256"

# Test files that must run in one worker when the suite runs in parallel (`pytest -n 2`, make test):
# they build the firmware into build/firmware and the AVR emulator always opens /tmp/simavr-uart0.
ONE_WORKER_GROUPS = {
    "firmware": ("test_firmware_logic.py", "test_conformance.py", "test_hardware_check.py"),
}


def pytest_collection_modifyitems(items):
    for item in items:
        for group, files in ONE_WORKER_GROUPS.items():
            if item.path.name in files:
                item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def collect_tk_garbage_in_the_main_thread():
    """Tk objects must die in the thread that made them. A closed window's widgets form reference
    cycles; if a worker thread (a serial reader, an inspector) happened to run the cyclic garbage
    collector, Tcl would abort the process. Collect here, in the main thread, after every test."""
    import gc

    yield
    gc.collect()


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A small MVTec-layout set of synthetic nuts (40 train, 6 test good, 3 of each defect)."""
    from capture.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("data") / "nut", seed=3, n_train=40, n_test_good=6,
                         n_test_defect=3, size=96)


@pytest.fixture(scope="session")
def tiny_bundle(small_dataset, tmp_path_factory) -> Path:
    """A bundle trained for two epochs at 32x32: fast, enough to exercise every code path."""
    from model_builder.build import BuildOptions, build

    out = tmp_path_factory.mktemp("models") / "tiny"
    options = BuildOptions(size=32, epochs=2, patience=2, architecture="prototype", density_preset="whitened")
    build(small_dataset, out, options, show_progress=False, log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def small_feature_bundle(tmp_path_factory) -> Path:
    """A bundle of the default detector (v3: feature autoencoder, patch KDE, the whole image's Gaussian) at
    64 px, untrained encoder: seconds to build."""
    from capture.synthetic import write_dataset
    from model_builder.build import BuildOptions, build

    root = tmp_path_factory.mktemp("features")
    data = write_dataset(root / "nut", seed=3, n_train=30, n_test_good=6, n_test_defect=3, size=96)
    options = BuildOptions(pretrained="none", size=64, epochs=1, latent_dim=16,
                           decoder_width=32, density_coreset=0.25)  # a memory of a few hundred patches
    build(data, root / "m", options, show_progress=False, log=lambda s: None)
    return root / "m"


SCREENSHOTS = REPO / "build" / "screenshots"


@pytest.fixture(scope="session")
def xvfb_display():
    """A real X server (Xvfb) for window tests; DISPLAY points at it for the whole session."""
    import shutil
    import subprocess

    if not shutil.which("Xvfb"):
        pytest.fail("Xvfb is missing: `make test` installs it (Debian package xvfb)")
    # -displayfd: the server picks a free display number and writes it to our pipe once it accepts
    # connections, so two test workers (pytest -n 2) never race for the same number
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1400x900x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_end,))
    os.close(write_end)
    with os.fdopen(read_end) as reply:
        number = reply.readline().strip()
    if not number.isdigit():
        proc.kill()
        pytest.fail(f"Xvfb did not start (exit code {proc.wait(5)})")
    display = f":{number}"
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    yield display
    proc.terminate()
    proc.wait(5)
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


def screenshot(root, name: str) -> Path:
    """Save what the window shows (grabbed from the X server) as build/screenshots/<name>.png."""
    from PIL import ImageGrab

    root.update()
    x, y = root.winfo_rootx(), root.winfo_rooty()
    w, h = root.winfo_width(), root.winfo_height()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=os.environ["DISPLAY"]).save(path)
    return path
