"""Synthetic machined parts, good or with a drawn defect: a hex nut on a plain background, and a
textured metal plate (ground metal whose grain, grain direction and lighting vary from piece to
piece) with thin cracks, pits and uneven patches.

This is the demo's camera and the tests' data. Everything is deterministic by seed:
one image depends only on (seed, split, index), never on how many images are made.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from capture.imageio import write_image_atomic

DEFECT_CLASSES: tuple[str, ...] = ("scratch", "dent", "missing", "stain", "burn", "misplaced")
MISPLACED_SHIFT = (12.0, 20.0)  # px at 256: a misplaced part sits this far off its place (goods: 4 at most)
MISPLACED_TURN = (15.0, 25.0)  # degrees (goods: 4 at most; a hexagon repeats every 60)
PLATE_DEFECTS: tuple[str, ...] = ("crack", "pit", "uneven")
PART_DEFECTS: dict[str, tuple[str, ...]] = {"nut": DEFECT_CLASSES, "plate": PLATE_DEFECTS}
GOOD = "good"
BACKGROUND_BGR = np.array([74.0, 70.0, 66.0], dtype=np.float32)


@dataclass(frozen=True)
class PartSpec:
    """Everything that makes one part's picture: pose, light, noise seed and defect."""

    dx: float
    dy: float
    angle_deg: float
    light: float
    noise_seed: int
    defect: str = GOOD
    defect_seed: int = 0


def random_spec(rng: np.random.Generator, defect: str = GOOD) -> PartSpec:
    """Pose jitter of a few pixels (at 256 px) and degrees, ±10 % light, as real good parts vary."""
    known = DEFECT_CLASSES + PLATE_DEFECTS
    if defect != GOOD and defect not in known:
        raise ValueError(f"unknown defect class {defect!r}; known: {', '.join(known)}")
    return PartSpec(
        dx=float(rng.uniform(-4, 4)),
        dy=float(rng.uniform(-4, 4)),
        angle_deg=float(rng.uniform(-4, 4)),
        light=float(rng.uniform(0.9, 1.1)),
        noise_seed=int(rng.integers(2**31)),
        defect=defect,
        defect_seed=int(rng.integers(2**31)),
    )


def _hexagon(cx: float, cy: float, radius: float, angle_deg: float) -> np.ndarray:
    a0 = math.radians(angle_deg)
    pts = [
        (cx + radius * math.cos(a0 + k * math.pi / 3), cy + radius * math.sin(a0 + k * math.pi / 3))
        for k in range(6)
    ]
    return np.array(pts, dtype=np.float32)


def _fill(canvas: np.ndarray, poly: np.ndarray, value: float | tuple[float, ...]) -> None:
    shift = 4
    cv2.fillPoly(canvas, [np.round(poly * (1 << shift)).astype(np.int32)], value, cv2.LINE_AA, shift)


def _part_layer(spec: PartSpec, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the part alone: BGR colour (float), coverage alpha (0..1) and defect mask (0/255)."""
    if spec.defect == "misplaced":
        return _misplaced_layer(spec, size)
    u = size / 256.0  # all sizes below are for a 256-pixel picture
    cx, cy = size / 2 + spec.dx * u, size / 2 + spec.dy * u
    radius = size * 0.33
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rr = np.hypot(xx - cx, yy - cy)
    theta = np.arctan2(yy - cy, xx - cx)

    alpha = np.zeros((size, size), np.float32)
    _fill(alpha, _hexagon(cx, cy, radius, spec.angle_deg), 1.0)

    # Metal: brushed concentric rings, a brighter chamfer ring, a dark threaded bore.
    metal = 150 + 10 * np.sin(rr / u * 0.9) + 6 * np.cos(theta * 6 + math.radians(spec.angle_deg) * 6)
    face_r = radius * math.cos(math.pi / 6) * 0.95
    chamfer = np.clip(1 - np.abs(rr - face_r) / (5.0 * u), 0, 1)
    metal = metal + 40 * chamfer
    bore_r = radius * 0.42
    in_bore = rr < bore_r
    thread = 45 + 18 * (np.sin(rr / u * 2.2) > 0) + 10 * np.cos(theta * 2)
    metal = np.where(in_bore, thread, metal)
    bore_edge = np.clip(1 - np.abs(rr - bore_r) / (2.5 * u), 0, 1)
    metal = metal * (1 - 0.5 * bore_edge)
    # Light from the upper left.
    metal = metal * (1 + 0.12 * ((cx - xx) + (cy - yy)) / radius / 2)
    colour = np.stack([metal * 1.04, metal * 1.0, metal * 0.96], axis=-1) * spec.light

    mask = np.zeros((size, size), np.uint8)
    if spec.defect != GOOD:
        colour, alpha, mask = _draw_defect(spec, colour, alpha, cx, cy, radius, bore_r)
    return colour.astype(np.float32), alpha, mask


def _misplaced_layer(spec: PartSpec, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flawless part that is not where it belongs: shifted and turned beyond any good part's pose (a
    logical defect: no patch of it is wrong). The mask marks where the picture differs from the part in
    its place: the part's outline then and now."""
    rng = np.random.default_rng(spec.defect_seed)
    shift, t = rng.uniform(*MISPLACED_SHIFT), rng.uniform(0, 2 * math.pi)
    turn = rng.choice([-1.0, 1.0]) * rng.uniform(*MISPLACED_TURN)
    placed = dataclasses.replace(spec, defect=GOOD)
    moved = dataclasses.replace(placed, dx=spec.dx + shift * math.cos(t), dy=spec.dy + shift * math.sin(t),
                                angle_deg=spec.angle_deg + turn)
    colour, alpha, _ = _part_layer(moved, size)
    expected = _part_layer(placed, size)[1]
    return colour, alpha, np.where((alpha > 0.5) != (expected > 0.5), 255, 0).astype(np.uint8)


def _point_on_face(rng: np.random.Generator, cx: float, cy: float, r_in: float, r_out: float) -> tuple[float, float]:
    r = rng.uniform(r_in, r_out)
    t = rng.uniform(0, 2 * math.pi)
    return cx + r * math.cos(t), cy + r * math.sin(t)


def _draw_defect(
    spec: PartSpec, colour: np.ndarray, alpha: np.ndarray, cx: float, cy: float, radius: float, bore_r: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(spec.defect_seed)
    size = alpha.shape[0]
    u = size / 256.0  # defect sizes below are for a 256-pixel picture
    face_in, face_out = bore_r + 6 * u, radius * 0.8
    layer = np.zeros((size, size), np.float32)
    if spec.defect == "scratch":
        x0, y0 = _point_on_face(rng, cx, cy, face_in, face_out)
        t = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(30, 60) * u
        x1, y1 = x0 + length * math.cos(t), y0 + length * math.sin(t)
        cv2.line(layer, (int(x0 * 16), int(y0 * 16)), (int(x1 * 16), int(y1 * 16)), 1.0,
                 max(1, int(rng.integers(2, 4) * u)), cv2.LINE_AA, 4)
        layer *= alpha > 0.5
        shade = rng.choice([-1.0, 1.0]) * rng.uniform(60, 90)
        colour = colour + shade * layer[..., None]
    elif spec.defect == "dent":
        x0, y0 = _point_on_face(rng, cx, cy, face_in + 4 * u, face_out - 4 * u)
        axes = (rng.uniform(7, 12) * u, rng.uniform(5, 9) * u)
        cv2.ellipse(layer, ((x0, y0), (2 * axes[0], 2 * axes[1]), rng.uniform(0, 180)), 1.0, -1, cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), 1.5 * u)
        shift = max(1, round(2 * u))
        rim = np.clip(np.roll(layer, (-shift, -shift), axis=(0, 1)) - layer, 0, 1)
        colour = colour * (1 - 0.55 * layer[..., None]) + 70 * rim[..., None]
        layer = np.maximum(layer, rim)
    elif spec.defect == "missing":
        k = int(rng.integers(6))
        corner = _hexagon(cx, cy, radius, spec.angle_deg)[k]
        cut_r = rng.uniform(22, 34) * u
        cv2.circle(layer, (int(corner[0] * 16), int(corner[1] * 16)), int(cut_r * 16), 1.0, -1, cv2.LINE_AA, 4)
        removed = np.minimum(layer, alpha)
        alpha = alpha - removed
        layer = removed
    elif spec.defect in ("stain", "burn"):
        x0, y0 = _point_on_face(rng, cx, cy, face_in + 6 * u, face_out - 8 * u)
        for _ in range(int(rng.integers(2, 5))):
            ox, oy = rng.normal(0, 6 * u, 2)
            ax = (rng.uniform(6, 14) if spec.defect == "stain" else rng.uniform(9, 18)) * u
            cv2.ellipse(layer, ((x0 + ox, y0 + oy), (2 * ax, 2 * ax * rng.uniform(0.5, 1)), rng.uniform(0, 180)),
                        1.0, -1, cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), (2.0 if spec.defect == "stain" else 3.5) * u) * alpha
        if spec.defect == "stain":
            tint, strength = np.array([40.0, 70.0, 110.0]), rng.uniform(0.45, 0.65)  # brown (BGR)
        else:
            tint, strength = np.array([60.0, 35.0, 30.0]), rng.uniform(0.7, 0.85)  # blue-black heat tint
        colour = colour * (1 - strength * layer[..., None]) + tint * strength * layer[..., None]
    mask = np.where(layer > 0.2, 255, 0).astype(np.uint8)
    return colour, alpha, mask


def background(size: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A plain, slightly graded backdrop (belt or stage) in float BGR."""
    h, w = shape if shape else (size, size)
    grade = np.linspace(0.96, 1.04, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(BACKGROUND_BGR * grade, (h, w, 3)).copy()


def compose(
    layer: tuple[np.ndarray, np.ndarray, np.ndarray], backdrop: np.ndarray, shift_x: float, noise_seed: int
) -> np.ndarray:
    """Place the part layer on the backdrop, shifted sideways, and add sensor noise."""
    colour, alpha, _ = layer
    h, w = backdrop.shape[:2]
    m = np.float32([[1, 0, shift_x], [0, 1, 0]])
    colour = cv2.warpAffine(colour, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    img = backdrop * (1 - alpha) + colour * alpha
    img += np.random.default_rng(noise_seed).normal(0, 3.0, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render(spec: PartSpec, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One still picture of a part: (BGR uint8 image, defect mask uint8 0/255)."""
    layer = _part_layer(spec, size)
    return compose(layer, background(size), 0.0, spec.noise_seed), layer[2]


def _grain(rng: np.random.Generator, size: int, angle_deg: float, length: float, width: float) -> np.ndarray:
    """Ground-metal grain: white noise smeared along `angle_deg` (a long thin Gaussian), unit spread."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    k = int(2 * math.ceil(3 * length) + 1)
    kernel = np.zeros((k, k), np.float32)
    c = k // 2
    cv2.ellipse(kernel, ((c, c), (2 * length, max(1.0, 2 * width)), angle_deg), 1.0, -1)
    kernel = cv2.GaussianBlur(kernel, (0, 0), 0.7)
    grain = cv2.filter2D(noise, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
    return grain / max(float(grain.std()), 1e-6)


def _random_walk(rng: np.random.Generator, start: tuple[float, float], steps: int, step: float,
                 heading: float) -> np.ndarray:
    points = [start]
    for _ in range(steps):
        heading += rng.normal(0, 0.35)
        x, y = points[-1]
        points.append((x + step * math.cos(heading), y + step * math.sin(heading)))
    return np.array(points, np.float32)


def render_plate(spec: PartSpec, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A textured metal plate filling the view: (BGR uint8 image, defect mask uint8 0/255).

    Good plates differ in grain (a new random texture each piece), grain direction (±8°), brightness
    and the direction of the light. Defects are thin and low in contrast, as on real ground or cast
    metal: a crack (a dark hairline walk), pits (a cluster of small dark dots), an uneven patch (the
    grain turns and the surface dulls there)."""
    u = size / 256.0
    rng = np.random.default_rng(spec.noise_seed)
    direction = spec.angle_deg * 2  # ±8°
    fine = _grain(rng, size, direction, 9 * u, 0.8 * u)
    coarse = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 10 * u)
    coarse /= max(float(coarse.std()), 1e-6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    light_angle = rng.uniform(0, 2 * math.pi)
    light = 1 + 0.10 * (xx * math.cos(light_angle) + yy * math.sin(light_angle)) * 2
    grey = (128 + 9 * fine + 5 * coarse) * light * spec.light
    layer = np.zeros((size, size), np.float32)
    if spec.defect != GOOD:
        d = np.random.default_rng(spec.defect_seed)
        x0, y0 = d.uniform(0.2, 0.8, 2) * size
        if spec.defect == "crack":
            walk = _random_walk(d, (x0, y0), int(d.integers(12, 24)), 3.0 * u, d.uniform(0, 2 * math.pi))
            cv2.polylines(layer, [np.round(walk * 16).astype(np.int32)], False, 1.0, max(1, round(u)), cv2.LINE_AA, 4)
            grey = grey - d.uniform(14, 22) * layer
        elif spec.defect == "pit":
            for _ in range(int(d.integers(3, 8))):
                px, py = x0 + d.normal(0, 7 * u), y0 + d.normal(0, 7 * u)
                cv2.circle(layer, (int(px * 16), int(py * 16)), int(d.uniform(1.0, 2.2) * u * 16), 1.0, -1,
                           cv2.LINE_AA, 4)
            grey = grey - d.uniform(22, 34) * cv2.GaussianBlur(layer, (0, 0), 0.6 * u)
        elif spec.defect == "uneven":
            axes = (d.uniform(14, 24) * u, d.uniform(10, 18) * u)
            cv2.ellipse(layer, ((x0, y0), (2 * axes[0], 2 * axes[1]), d.uniform(0, 180)), 1.0, -1, cv2.LINE_AA)
            layer = cv2.GaussianBlur(layer, (0, 0), 3 * u)
            turned = _grain(d, size, direction + d.uniform(25, 50), 9 * u, 0.8 * u)
            grey = grey * (1 - 0.04 * layer) + 9 * (turned - fine) * layer * light
    noise = np.random.default_rng(spec.noise_seed + 1).normal(0, 2.0, (size, size)).astype(np.float32)
    grey = np.clip(grey + noise + 0.5, 0, 255)
    image = np.stack([grey * 0.98, grey, grey * 1.02], axis=-1).clip(0, 255).astype(np.uint8)
    return image, np.where(layer > 0.3, 255, 0).astype(np.uint8)


RENDERERS = {"nut": render, "plate": render_plate}


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    key = sum(ord(c) * 131**i for i, c in enumerate(split)) % (2**31)
    return np.random.default_rng([seed, key, index])


def write_dataset(
    root: Path,
    seed: int = 0,
    n_train: int = 200,
    n_test_good: int = 20,
    n_test_defect: int = 8,
    size: int = 256,
    defects: tuple[str, ...] | None = None,
    part: str = "nut",
) -> Path:
    """Write an MVTec-layout dataset of synthetic parts (`part`: nut or plate) under `root` and return it.

    Layout: train/good, test/good, test/<defect>, ground_truth/<defect>/<name>_mask.png.
    """
    if part not in RENDERERS:
        raise ValueError(f"unknown synthetic part {part!r}; known: {', '.join(RENDERERS)}")
    draw = RENDERERS[part]
    defects = PART_DEFECTS[part] if defects is None else defects
    jobs: list[tuple[Path, PartSpec, Path | None]] = []
    for i in range(n_train):
        jobs.append((root / "train" / GOOD / f"{i:03d}.png", random_spec(_rng(seed, "train", i)), None))
    for i in range(n_test_good):
        jobs.append((root / "test" / GOOD / f"{i:03d}.png", random_spec(_rng(seed, "test_good", i)), None))
    for d in defects:
        for i in range(n_test_defect):
            spec = random_spec(_rng(seed, "test_" + d, i), d)
            jobs.append((root / "test" / d / f"{i:03d}.png", spec, root / "ground_truth" / d / f"{i:03d}_mask.png"))
    for path, spec, mask_path in jobs:
        image, mask = draw(spec, size)
        write_image_atomic(path, image)
        if mask_path is not None:
            write_image_atomic(mask_path, mask)
    return root


@dataclass(frozen=True)
class StreamFrame:
    """One frame of the conveyor camera and what is really in it."""

    image: np.ndarray
    frame_index: int
    part_number: int | None  # None while the belt is empty
    truth: str | None  # "good" or a defect class; None while the belt is empty
    phase: str  # "empty", "entering", "settled", "leaving"


def part_sequence(seed: int, n_parts: int, defect_rate: float) -> list[PartSpec]:
    """The parts that ride the belt: a known, seeded mix of good and defective ones."""
    rng = np.random.default_rng([seed, 7])
    n_bad = int(round(n_parts * defect_rate))
    labels = [GOOD] * (n_parts - n_bad) + [DEFECT_CLASSES[i % len(DEFECT_CLASSES)] for i in range(n_bad)]
    order = rng.permutation(n_parts)
    return [random_spec(_rng(seed, "stream", i), labels[order[i]]) for i in range(n_parts)]


def conveyor_stream(
    seed: int = 0,
    n_parts: int = 40,
    defect_rate: float = 0.3,
    size: int = 256,
    empty_frames: int = 3,
    travel_frames: int = 6,
    settle_frames: int = 5,
) -> Iterator[StreamFrame]:
    """Frames as a conveyor camera sees them: empty belt, part enters, settles, leaves."""
    backdrop = background(size)
    frame_index = 0
    noise = np.random.default_rng([seed, 11])
    start = -size * 0.85  # fully out of view on the left
    for number, spec in enumerate(part_sequence(seed, n_parts, defect_rate), start=1):
        layer = _part_layer(spec, size)
        for _ in range(empty_frames):
            img = compose((layer[0], np.zeros_like(layer[1]), layer[2]), backdrop, 0, int(noise.integers(2**31)))
            yield StreamFrame(img, frame_index, None, None, "empty")
            frame_index += 1
        for k in range(travel_frames):
            shift = start * (1 - (k + 1) / (travel_frames + 1))
            yield StreamFrame(compose(layer, backdrop, shift, int(noise.integers(2**31))), frame_index, number,
                              spec.defect, "entering")
            frame_index += 1
        for _ in range(settle_frames):
            yield StreamFrame(compose(layer, backdrop, 0.0, int(noise.integers(2**31))), frame_index, number,
                              spec.defect, "settled")
            frame_index += 1
        for k in range(travel_frames):
            shift = -start * (k + 1) / (travel_frames + 1)
            yield StreamFrame(compose(layer, backdrop, shift, int(noise.integers(2**31))), frame_index, number,
                              spec.defect, "leaving")
            frame_index += 1
    for _ in range(empty_frames):
        img = compose((backdrop, np.zeros((size, size), np.float32), None), backdrop, 0, int(noise.integers(2**31)))
        yield StreamFrame(img, frame_index, None, None, "empty")
        frame_index += 1
