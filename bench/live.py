"""Live speed: the inspector's per-frame scoring of the default model (detector v3) against detector v2,
the v1 default and the prototype's per-frame method, and the verdict-to-serial time through the conveyor link.

    .venv/bin/python bench/live.py [--frames 300]

In the same run and on the same frames it times:
- v2 and default (detector v3, `--default-size`, 384 px): Inspector.inspect(frame): preprocess, one forward
  pass (frozen encoder, latent, the context decoder's error per position; v3 also the whole image's
  Mahalanobis distance, and the border correction of both maps) on the inspector's default runtime
  (auto: OpenVINO when it matches TensorFlow), the KDE on the latents (a memory of FEATURE_MEMORY patches,
  as a real build keeps), verdict, the combined heatmap; nothing touches the disk; then the same on
  TensorFlow, the reference runtime;
- v1 (mobilenet pixel decoder, ssim error, patch density on 288-value descriptors, 5 898 patches) and the
  prototype architecture, each with gutcheck's inspector and with the prototype's per-frame method: write the
  frame to a PNG, read it back, predict() the reconstruction, predict() the latent, evaluate() the loss, KDE
  score: what the old Qt GUI did per frame.
Weights are random (the feature model's projection and density are fitted on random frames): speed does not
depend on them. Then 500 verdicts go through ConveyorLink to the simulated conveyor (Python, on a pty) and the
time from send to acknowledgement is measured; against the real firmware at 115 200 baud the frame alone
takes about 2 ms on the wire. The last line reads `default: N frames/s at S px, p99 X ms`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PATCH_MEMORY = 5_898  # patches the screw build keeps at 384 px: 1 % of 256 images x 48 x 48


def make_feature_bundle(size: int, whole_image: bool = True):
    """A detector v3 bundle (v2 with `whole_image` False) as `build` makes it, with random decoder weights."""
    import keras

    from model_builder.architectures import context_decoder, feature_cae, feature_extractor
    from model_builder.build import FEATURE_COARSE, FEATURE_MEMORY, BuildOptions
    from model_builder.bundle import Bundle
    from model_builder.density import PatchKDE
    from model_builder.feature_model import extract_features, fit_projection, fit_whole_image, project
    from model_builder.preprocess import Preprocessing
    from model_builder.scoring import BorderCorrection, GoodStatistics, ReconstructionScore, Thresholds

    keras.utils.set_random_seed(0)
    options = BuildOptions()
    extractor = feature_extractor(size, 3, weights=None, whole_image=whole_image)
    x = np.random.default_rng(0).random((40, size, size, 3)).astype(np.float32)
    features = extract_features(extractor, x)
    whole = None
    if whole_image:
        features, image_features = features
        whole = fit_whole_image(image_features)
    mean, projection, scale = fit_projection(features, options.latent_dim)
    latent = project(features, mean, projection)
    positions = int(np.prod(latent.shape[1:-1]))
    density = PatchKDE(coreset=min(1.0, FEATURE_MEMORY / (len(latent) * positions)),
                       max_memory=FEATURE_MEMORY, coarse=FEATURE_COARSE).fit(latent)
    model = feature_cae(extractor, mean, projection, scale,
                        context_decoder(options.latent_dim, options.ring, options.decoder_width), whole)
    stats = GoodStatistics(0, 1, 0, 1)
    maps = np.random.default_rng(1).normal(0, 1, (8, *latent.shape[1:3]))
    return Bundle(model, density, Preprocessing(size), Thresholds(-1e9, 1e9, "or"), stats,
                  {"density": [0, 1], "reconstruction": [0, 1]}, ReconstructionScore("feature"),
                  map_statistics=stats, combination="sum", whole_image_weight=0.01 if whole_image else 0.0,
                  border=BorderCorrection.fit(maps, np.abs(maps)) if whole_image else None)


def make_bundle(architecture: str, size: int):
    import keras

    from model_builder.architectures import ARCHITECTURES
    from model_builder.build import BuildOptions
    from model_builder.bundle import Bundle
    from model_builder.density import PatchKDE
    from model_builder.preprocess import Preprocessing
    from model_builder.scoring import GoodStatistics, ReconstructionScore, Thresholds

    keras.utils.set_random_seed(0)
    model = ARCHITECTURES[architecture](size, 3, weights=None)
    x = np.random.default_rng(0).random((40, size, size, 3)).astype(np.float32)
    latent = model.predict(x, verbose=0)[1]
    positions = int(np.prod(latent.shape[1:-1]))
    # the default patch density with as many patches as a real build keeps
    density = PatchKDE(coreset=min(1.0, PATCH_MEMORY / (len(latent) * positions))).fit(latent)
    bundle = Bundle(model, density, Preprocessing(size), Thresholds(-1e9, 1e9, "or"),
                    GoodStatistics(0, 1, 0, 1), {"density": [0, 1], "reconstruction": [0, 1]},
                    ReconstructionScore(BuildOptions(architecture=architecture).reconstruction_score))
    return bundle


def frames(n: int, size: int = 256) -> list:
    from capture.sources import Frame
    from capture.synthetic import random_spec, render

    rng = np.random.default_rng(1)
    return [Frame(render(random_spec(rng), size)[0], i, time.time()) for i in range(n)]


def time_gutcheck(bundle, stream, runtime: str = "auto") -> np.ndarray:
    from app.inspector import Inspector
    from capture.sources import Source

    class NoSource(Source):  # frames are handed to inspect() one by one
        name = "bench"

    insp = Inspector(bundle, NoSource(), mode="continuous", runtime=runtime)
    for f in stream[:10]:
        insp.inspect(f)
    out = []
    for f in stream:
        t0 = time.perf_counter()
        insp.inspect(f)
        insp.verdicts.get_nowait()
        out.append(time.perf_counter() - t0)
    return np.array(out)


def time_prototype(bundle, stream) -> np.ndarray:
    import cv2
    import keras

    model = bundle.model
    autoencoder = keras.Model(model.input, model.output[0])
    encoder = keras.Model(model.input, model.output[1])
    autoencoder.compile(loss="mse")
    size = bundle.preprocessing.size
    tmp = Path(tempfile.mkdtemp()) / "frame.png"
    out = []
    for i, f in enumerate(stream):
        t0 = time.perf_counter()
        cv2.imwrite(str(tmp), f.image)
        img = cv2.imread(str(tmp))
        x = cv2.resize(img, (size, size)).astype(np.float32)[None] / 255.0
        autoencoder.predict(x, verbose=0)
        latent = encoder.predict(x, verbose=0)
        autoencoder.evaluate(x, x, verbose=0)
        bundle.density.score_samples(latent)
        if i >= 5:
            out.append(time.perf_counter() - t0)
    return np.array(out)


def verdict_to_serial(n: int = 500) -> np.ndarray:
    from app.links.conveyor_link import ConveyorLink
    from app.links.simulators import ConveyorSimulator
    from tests.ptydevice import PtyDevice  # a pty: the nearest to the USB serial port the belt is on

    folder = Path(tempfile.mkdtemp())
    sim = ConveyorSimulator(PtyDevice(folder / "conveyor")).start()
    link = ConveyorLink(sim.url).start()
    try:
        while link.link.port is None:
            time.sleep(0.01)
        link.resume()
        for i in range(n):
            link.send_verdict(i % 7 == 0)
            time.sleep(0.01)  # parts come one at a time
        link.wait_delivered(10)
        return np.array(link.latencies_s)
    finally:
        link.close()
        sim.close()


def line(name: str, t: np.ndarray) -> str:
    return (f"{name:<32} p50 {np.percentile(t, 50) * 1000:7.1f} ms   p99 {np.percentile(t, 99) * 1000:7.1f} ms   "
            f"{1 / t.mean():7.1f} frames/s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--architectures", default="mobilenet,prototype", help="v1 architectures timed beside the default")
    p.add_argument("--sizes", default="384", help="their input sizes (default 384)")
    p.add_argument("--default-size", type=int, default=0, help="the default model's size (default: the builder's)")
    args = p.parse_args()
    import tensorflow as tf

    from model_builder.build import BuildOptions

    print(f"machine: {os.cpu_count()} cores, TensorFlow {tf.__version__}, {args.frames} frames per run")
    stream = frames(args.frames)
    default_size = args.default_size or BuildOptions().size
    v2 = time_gutcheck(make_feature_bundle(default_size, whole_image=False), stream)
    print(line(f"v2 {default_size}² gutcheck", v2), flush=True)
    feature_bundle = make_feature_bundle(default_size)
    default = time_gutcheck(feature_bundle, stream)
    print(line(f"default {default_size}² gutcheck", default), flush=True)
    print(f"default against v2 in this run: {v2.mean() / default.mean():.3f} of v2's frames/s", flush=True)
    print(line(f"default {default_size}² on tensorflow", time_gutcheck(feature_bundle, stream, "tensorflow")),
          flush=True)
    for arch in filter(None, args.architectures.split(",")):
        for size in (int(v) for v in args.sizes.split(",")):
            bundle = make_bundle(arch, size)
            print(line(f"{arch} {size}² gutcheck", time_gutcheck(bundle, stream)), flush=True)
            print(line(f"{arch} {size}² prototype method", time_prototype(bundle, stream[: max(30, args.frames // 5)])),
                  flush=True)
    lat = verdict_to_serial()
    print(f"verdict -> Python conveyor simulator acknowledgement over a pty: p50 {np.percentile(lat, 50) * 1000:.1f} ms, "
          f"p99 {np.percentile(lat, 99) * 1000:.1f} ms, max {lat.max() * 1000:.1f} ms ({len(lat)} verdicts)")
    print(f"default: {1 / default.mean():.1f} frames/s at {default_size} px, p99 {np.percentile(default, 99) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
