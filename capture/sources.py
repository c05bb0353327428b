"""Image sources behind one interface, chosen by a source string:

    cam:N, cam:NAME       OpenCV camera N, or the camera whose name or stable id holds NAME (`gutcheck
                          cameras` lists them); options: width, height, fps, backend and the camera
                          settings (exposure, gain, focus, white_balance, auto_exposure, auto_focus,
                          auto_white_balance), set when the camera opens and read back
    file:video.mp4        a video file
    folder:path           a sorted image sequence
    synthetic:            the synthetic conveyor (options after the colon: seed=1,parts=40,defects=0.3;
                          light_from=N,light=1.3 changes the light from part N on: a drift demo); it takes
                          the camera settings too (exposure in stops, gain in %, focus 50 = sharp,
                          white_balance in kelvin, auto_exposure=1 follows the light)
    rtsp://… http(s)://…  a network stream

`read()` returns the next Frame, or None when a finite source is exhausted. Failed reads are
counted; a camera or stream that disappears is reopened with backoff, never raised to the caller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from capture.errors import GutcheckError
from capture.framing import Framing
from capture.imageio import list_images, read_image, to_bgr8

BACKENDS = {"auto": cv2.CAP_ANY, "dshow": cv2.CAP_DSHOW, "msmf": cv2.CAP_MSMF, "v4l2": cv2.CAP_V4L2,
            "ffmpeg": cv2.CAP_FFMPEG, "gstreamer": cv2.CAP_GSTREAMER}
RETRY_S = (0.5, 1.0, 2.0, 5.0)

# The camera settings a source string or a recipe can hold: name -> (OpenCV property, lowest, highest).
# Values go to the driver as given, in its own units (V4L2 exposure in 100 us steps, DirectShow's in
# log2 seconds); the auto switches are 0 (off) or 1 (on) and are set before the manual values, which a
# camera in automatic mode would ignore.
CAMERA_SETTINGS: dict[str, tuple[int, float, float]] = {
    "auto_exposure": (cv2.CAP_PROP_AUTO_EXPOSURE, 0, 1),
    "auto_focus": (cv2.CAP_PROP_AUTOFOCUS, 0, 1),
    "auto_white_balance": (cv2.CAP_PROP_AUTO_WB, 0, 1),
    "exposure": (cv2.CAP_PROP_EXPOSURE, -20.0, 100_000.0),
    "gain": (cv2.CAP_PROP_GAIN, 0.0, 10_000.0),
    "focus": (cv2.CAP_PROP_FOCUS, 0.0, 10_000.0),
    "white_balance": (cv2.CAP_PROP_WB_TEMPERATURE, 1000.0, 15_000.0),
}
AUTO_SWITCHES = ("auto_exposure", "auto_focus", "auto_white_balance")
# What a backend wants for auto exposure off and on (V4L2: 1 manual, 3 aperture priority); others 0 / 1.
AUTO_EXPOSURE_VALUES = {"V4L2": (1.0, 3.0), "DSHOW": (0.25, 0.75)}


def check_camera_settings(settings: dict) -> dict[str, float]:
    """The settings as numbers, checked against CAMERA_SETTINGS; a bad one is a one-line GutcheckError."""
    out = {}
    for name, value in settings.items():
        if name not in CAMERA_SETTINGS:
            raise GutcheckError(f"unknown camera setting {name!r}; known: {', '.join(sorted(CAMERA_SETTINGS))}")
        _, low, high = CAMERA_SETTINGS[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise GutcheckError(f"camera setting {name}={value!r}: not a number") from None
        if isinstance(value, bool) or not low <= number <= high:  # also refuses NaN
            raise GutcheckError(f"camera setting {name}={value}: must be between {low:g} and {high:g}")
        if name in AUTO_SWITCHES and number not in (0.0, 1.0):
            raise GutcheckError(f"camera setting {name}={value}: 0 (off) or 1 (on)")
        out[name] = number
    return out


def camera_lines(source: "Source", captured: dict[str, float]) -> list[str]:
    """One line for each camera setting the source did not take, and one naming the settings that differ
    from those the good parts were captured with (`captured`, the bundle's record); none when all hold."""
    lines = [f"{source.name}: {p}" for p in source.camera_problems]
    if not source.is_camera:
        return lines
    live = source.camera_readback
    differ = [f"{k} {live[k]:g} (the good parts: {v:g})" for k, v in sorted(captured.items())
              if k in live and abs(live[k] - v) > max(1e-3, 0.01 * abs(v))]
    differ += [f"{k} not set (the good parts: {v:g})" for k, v in sorted(captured.items()) if k not in live]
    if differ:
        lines.append(f"{source.name}: camera settings differ from the good parts': {', '.join(differ)}")
    return lines


def apply_camera_settings(cap, settings: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """Set `settings` on an open VideoCapture (auto switches first) and read each back: what the camera
    reports, and one line for each value it did not take."""
    backend = ""
    try:
        backend = cap.getBackendName()
    except cv2.error:
        pass
    auto_values = AUTO_EXPOSURE_VALUES.get(backend, (0.0, 1.0))  # the backend's off and on
    readback, problems = {}, []
    for name in sorted(settings, key=lambda n: (n not in AUTO_SWITCHES, n)):
        prop = CAMERA_SETTINGS[name][0]
        value = settings[name]
        took = bool(cap.set(prop, auto_values[int(value)] if name == "auto_exposure" else value))
        got = float(cap.get(prop))
        if name == "auto_exposure":  # back to 0 / 1 when it reads as the backend's off / on
            got = next((float(i) for i, v in enumerate(auto_values) if abs(got - v) < 1e-3), got)
        readback[name] = got
        if not took or abs(got - value) > max(1e-3, 0.01 * abs(value)):
            problems.append(f"{name}={value:g} not taken (the camera reports {got:g})" if took
                            else f"{name}={value:g} refused by the camera or its driver")
    return readback, problems
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our own messages say what went wrong


@dataclass
class Frame:
    """One picture from a source, with whatever the source knows about it."""

    image: np.ndarray  # 8-bit BGR
    index: int
    time: float
    meta: dict = field(default_factory=dict)


class Source:
    """Base: counts frames and failures; subclasses implement `_grab`."""

    name = "source"
    finite = False
    stills = False  # every frame is a part of its own (image files): no part trigger
    is_camera = False  # it takes camera settings (a camera or the synthetic one; not files or videos)

    def __init__(self) -> None:
        self.frames = 0
        self.failed_reads = 0
        self.status = "open"
        self.camera: dict[str, float] = {}  # the camera settings asked for (CAMERA_SETTINGS)
        self.camera_readback: dict[str, float] = {}  # what the camera reports for them once open
        self.camera_problems: list[str] = []  # one line per setting it did not take
        self.framing = Framing()  # cut from every frame as it is read (a recipe's ROI and crop)

    def _grab(self) -> tuple[np.ndarray, dict] | None:
        raise NotImplementedError

    def read(self) -> Frame | None:
        got = self._grab()
        if got is None:
            return None
        image, meta = got
        if not self.framing.is_identity:  # a ROI that does not fit the frame is a one-line GutcheckError
            image = self.framing.apply(image)
        frame = Frame(image, self.frames, time.time(), meta)
        self.frames += 1
        return frame

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                if self.finite:
                    return
                continue
            yield frame

    def close(self) -> None:
        pass


class CaptureSource(Source):
    """An OpenCV VideoCapture (camera, video file or stream) that is reopened when it drops out."""

    def __init__(self, target: int | str, name: str, finite: bool, width: int = 0, height: int = 0, fps: int = 0,
                 backend: str = "auto", retry_s: tuple[float, ...] = RETRY_S, open_now: bool = True,
                 camera: dict[str, float] | None = None):
        super().__init__()
        self.camera = check_camera_settings(camera or {})  # set at every (re)open
        self.is_camera = not finite and isinstance(target, int)
        if backend not in BACKENDS:
            raise GutcheckError(f"unknown camera backend {backend!r}; known: {', '.join(BACKENDS)}")
        self.target, self.name, self.finite = target, name, finite
        self.size, self.fps, self.backend = (width, height), fps, BACKENDS[backend]
        self.retry_s = retry_s
        self.cap: cv2.VideoCapture | None = None
        self.retries = 0
        self._next_try = 0.0
        self._first: np.ndarray | None = None
        if open_now and not self._open():
            raise GutcheckError(f"{name}: cannot open it (no such camera, file or stream, or it is busy)")

    def _open(self) -> bool:
        cap = cv2.VideoCapture(self.target, self.backend)
        if not cap.isOpened():
            cap.release()
            return False
        if self.size[0] and self.size[1]:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        if self.camera:
            self.camera_readback, self.camera_problems = apply_camera_settings(cap, self.camera)
        self.cap = cap
        self.status = "open"
        return True

    def open_video_file(self) -> bool:
        """Open a video file and decode its first frame (kept for the first read): a file OpenCV
        opens but cannot decode (a text file, a damaged video) is refused here, not run as empty."""
        if not self._open():
            return False
        ok, image = self.cap.read()
        if not ok or image is None:
            self.close()
            return False
        self._first = to_bgr8(image)
        return True

    def _grab(self) -> tuple[np.ndarray, dict] | None:
        if self._first is not None:
            image, self._first = self._first, None
            return image, {}
        if self.cap is None:
            if time.monotonic() < self._next_try:
                time.sleep(0.01)
                return None
            if not self._open():
                self.retries += 1
                delay = self.retry_s[min(self.retries - 1, len(self.retry_s) - 1)]
                self._next_try = time.monotonic() + delay
                self.status = f"lost, retrying in {delay:g} s (attempt {self.retries})"
                return None
        ok, image = self.cap.read()
        if ok and image is not None:
            return to_bgr8(image), {}
        if self.finite:
            return None
        self.failed_reads += 1
        if self.failed_reads % 10 == 0:  # ten failures in a row or spread out: reopen
            self.cap.release()
            self.cap = None
            self.status = "lost"
        return None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class FilesSource(Source):
    """Image files in the order given, each a part of its own. An unreadable file is counted and
    reported to `on_error(path, message)` (default: skipped silently), then skipped."""

    finite = True
    stills = True

    def __init__(self, paths: list[Path], name: str = "files",
                 on_error: Callable[[Path, str], None] | None = None):
        super().__init__()
        self.name = name
        self.paths = list(paths)
        self.on_error = on_error
        self._i = 0

    def _grab(self) -> tuple[np.ndarray, dict] | None:
        while self._i < len(self.paths):
            path = self.paths[self._i]
            self._i += 1
            try:
                return read_image(path), {"file": str(path)}
            except GutcheckError as exc:
                self.failed_reads += 1
                if self.on_error is not None:
                    self.on_error(path, str(exc))
        return None


class FolderSource(FilesSource):
    """A folder's images in sorted order, each a part of its own (still images never trip the part
    trigger, which waits for a part to move in and settle)."""

    def __init__(self, folder: Path, on_error: Callable[[Path, str], None] | None = None):
        paths = list_images(Path(folder))
        if not paths:
            raise GutcheckError(f"{folder}: no images in this folder")
        super().__init__(paths, f"folder:{folder}", on_error)


class SyntheticCamera:
    """What the synthetic conveyor's camera does with the camera settings, so that tests of them are real:
    exposure in stops (a factor 2**exposure), gain in per cent, white balance in kelvin (5000 K neutral),
    focus 50 sharp (blurred a pixel per 10 away from it); auto_exposure=1 lets the exposure follow each
    frame's brightness toward the first frame's, as a webcam's does, so the light and the part in view
    move it; with auto_focus=1 every frame is sharp."""

    SHARP_FOCUS = 50.0
    NEUTRAL_KELVIN = 5000.0

    def __init__(self, settings: dict[str, float]):
        self.settings = settings
        self.auto_gain = 1.0
        self._target: float | None = None

    def readback(self) -> dict[str, float]:
        return dict(self.settings)  # it takes every value in range

    def __call__(self, image: np.ndarray) -> np.ndarray:
        s = self.settings
        if not s:
            return image
        out = image.astype(np.float32) * (2.0 ** s.get("exposure", 0.0)) * (1.0 + s.get("gain", 0.0) / 100.0)
        if "white_balance" in s and not s.get("auto_white_balance", 0.0):
            ratio = np.sqrt(s["white_balance"] / self.NEUTRAL_KELVIN)
            out = out * np.array([ratio, 1.0, 1.0 / ratio], np.float32)  # BGR: warmer light, bluer picture
        if s.get("auto_exposure", 0.0):
            mean = float(out.mean()) * self.auto_gain
            if self._target is None:
                self._target = mean
            elif mean > 1.0:
                self.auto_gain *= (self._target / mean) ** 0.3  # it adjusts over a few frames, not at once
            out = out * self.auto_gain
        blur = 0.0 if s.get("auto_focus", 0.0) else abs(s.get("focus", self.SHARP_FOCUS) - self.SHARP_FOCUS) / 10.0
        if blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), blur)
        return np.clip(out, 0, 255).astype(np.uint8)


class SyntheticSource(Source):
    """The synthetic conveyor camera; frames carry the truth (part number, good/defect, phase)."""

    finite = True
    is_camera = True

    def __init__(self, seed: int = 0, parts: int = 40, defects: float = 0.3, size: int = 256, fps: float = 0.0,
                 light_from: int = 0, light: float = 1.0, camera: dict[str, float] | None = None):
        super().__init__()
        from capture.synthetic import conveyor_stream

        self.name = f"synthetic:seed={seed},parts={parts},defects={defects}"
        # From part `light_from` on, the light changes by the factor `light` (a drift demo: new lamps)
        self.light_from, self.light = light_from, light
        self._lit = False  # the new light is on (from the first frame of part `light_from`)
        self._frames = conveyor_stream(seed=seed, n_parts=parts, defect_rate=defects, size=size)
        self.period = 1.0 / fps if fps > 0 else 0.0
        self._last = 0.0
        self.camera = check_camera_settings(camera or {})
        self._camera = SyntheticCamera(self.camera)
        self.camera_readback = self._camera.readback()

    def _grab(self) -> tuple[np.ndarray, dict] | None:
        if self.period:
            wait = self._last + self.period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()
        f = next(self._frames, None)
        if f is None:
            return None
        if self.light_from and f.part_number is not None and f.part_number >= self.light_from:
            self._lit = True
        image = f.image
        if self._lit:
            image = np.clip(image.astype(np.float32) * self.light, 0, 255).astype(np.uint8)
        return self._camera(image), {"part_number": f.part_number, "truth": f.truth, "phase": f.phase}


# The options each source kind takes: name -> (type, lowest, highest). One table, so the message for
# a typo can list what is allowed and nothing unknown is silently ignored.
_CAMERA_OPTIONS = {name: (float, low, high) for name, (_, low, high) in CAMERA_SETTINGS.items()}
SOURCE_OPTIONS: dict[str, dict[str, tuple[type, float, float]]] = {
    "cam": {"width": (int, 1, 16384), "height": (int, 1, 16384), "fps": (int, 1, 1000), **_CAMERA_OPTIONS},
    "synthetic": {"seed": (int, 0, 2**31 - 1), "parts": (int, 1, 1_000_000), "defects": (float, 0.0, 1.0),
                  "size": (int, 32, 4096), "fps": (float, 0.0, 1000.0), "light_from": (int, 0, 1_000_000),
                  "light": (float, 0.1, 10.0), **_CAMERA_OPTIONS},
}


def camera_part(options: dict[str, object]) -> dict[str, float]:
    """The camera settings among a source's options, checked (an auto switch is 0 or 1)."""
    return check_camera_settings({k: v for k, v in options.items() if k in CAMERA_SETTINGS})


def _options(kind: str, text: str) -> dict[str, object]:
    """`name=value,...` checked against SOURCE_OPTIONS[kind] (and `backend` for cameras)."""
    allowed = SOURCE_OPTIONS[kind]
    names = sorted([*allowed, "backend"] if kind == "cam" else allowed)
    opts: dict[str, object] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        k, eq, v = (part.strip() for part in item.partition("="))
        if not eq:
            raise GutcheckError(f"bad {kind} source option {item!r}: expected name=value ({', '.join(names)})")
        if kind == "cam" and k == "backend":
            if v not in BACKENDS:
                raise GutcheckError(f"unknown camera backend {v!r}; known: {', '.join(BACKENDS)}")
            opts[k] = v
            continue
        if k not in allowed:
            raise GutcheckError(f"unknown {kind} source option {k!r}; allowed: {', '.join(names)}")
        kind_type, low, high = allowed[k]
        try:
            value = kind_type(v)
        except ValueError:
            raise GutcheckError(f"{kind} source option {k}={v!r}: not a{'n integer' if kind_type is int else ' number'}") \
                from None
        if not low <= value <= high:  # also refuses NaN
            raise GutcheckError(f"{kind} source option {k}={v}: must be between {low:g} and {high:.10g}")
        opts[k] = value
    return opts


def open_source(spec: str, width: int = 1920, height: int = 1080, fps: int = 30, backend: str = "auto") -> Source:
    """The source a string names; a bad string or a missing device is a one-line GutcheckError."""
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    try:
        if kind == "cam":
            index_text, _, opt_text = rest.partition(",")
            o = _options("cam", opt_text)
            if index_text.isdigit():
                target: int | str = int(index_text)
            else:
                from capture.cameras import find_camera

                target = find_camera(index_text).device
            return CaptureSource(target, spec, False, o.get("width", width), o.get("height", height),
                                 o.get("fps", fps), o.get("backend", backend), camera=camera_part(o))
        if kind == "file":
            path = Path(rest)
            if not path.is_file():
                raise GutcheckError(f"{path}: no such video file")
            source = CaptureSource(str(path), spec, True, backend="auto", open_now=False)
            if not source.open_video_file():
                raise GutcheckError(f"{path}: not a readable video (OpenCV cannot decode a frame of it)")
            return source
        if kind == "folder":
            return FolderSource(Path(rest))
        if kind == "synthetic":
            o = _options("synthetic", rest)
            if ("light" in o) != (o.get("light_from", 0) > 0):  # one without the other changes nothing
                raise GutcheckError(f"bad source {spec!r}: light=FACTOR and light_from=PART go together "
                                    "(light_from=120,light=1.1: the light 10 % brighter from part 120 on)")
            return SyntheticSource(o.get("seed", 0), o.get("parts", 40), o.get("defects", 0.3), o.get("size", 256),
                                   o.get("fps", 0.0), o.get("light_from", 0), o.get("light", 1.0), camera_part(o))
        if kind in ("rtsp", "http", "https"):
            return CaptureSource(spec, spec, False, backend="ffmpeg")
    except ValueError as exc:
        raise GutcheckError(f"bad source {spec!r}: {exc}") from None
    raise GutcheckError(f"unknown source {spec!r}: use cam:N, cam:NAME, file:VIDEO, folder:PATH, synthetic: or an "
                        "rtsp:// or http:// URL")
