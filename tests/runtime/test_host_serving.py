"""A standard package serves without TensorFlow, and a large JPEG is decoded reduced (issues 14, 9).

A fresh interpreter where importing TensorFlow (or Keras) fails loads the EfficientNet-Lite0 package
and classifies a photo; a real ``fpgaserve serve`` process of it maps no TensorFlow library, serves
a 48-megapixel JPEG (over the default pixel limit: decoded at 1/2 scale) and its resident memory
(VmRSS and VmHWM, from /proc) stays bounded; it maps no SciPy linear algebra either. After the
server's own warm-up (its pipeline loaded as ``fpgaserve serve`` loads it, without a warm-up of the
runtime's), a first request makes numba compile or load no kernel.
"""

from __future__ import annotations

import io
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tests.server.helpers import ServerProcess, http_get
from tests.support.polling import wait_until

MiB = 1 << 20
NO_TENSORFLOW = """
import sys

class NoTensorflow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError(f"this test forbids importing {name}")
        return None

sys.meta_path.insert(0, NoTensorflow())
import io
import skimage.data
from PIL import Image
from fpgaserve.runtime.pipeline import load_pipeline

buffer = io.BytesIO()
Image.fromarray(skimage.data.chelsea()).save(buffer, format="JPEG")
with load_pipeline(sys.argv[1], env={}) as runtime:
    result = runtime.predict([buffer.getvalue()])
    top = int(result.outputs[0].argmax())
    print(runtime.labels[top] if runtime.labels else top)
maps = open("/proc/self/maps").read()
print("libtensorflow" in maps, "tensorflow" in sys.modules)
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps")
def test_a_standard_package_loads_and_runs_without_tensorflow(lite0_package: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, str(lite0_package)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    label, loaded = done.stdout.strip().splitlines()[-2:]
    assert "cat" in label
    assert loaded == "False False"


def test_a_tensorflow_stage_without_tensorflow_is_named(tiny_package: Path) -> None:
    # The tiny package's classifier is a user's Keras model: it needs TensorFlow (the full image).
    done = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, str(tiny_package)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1
    assert "stage 'classifier' is a TensorFlow stage with no host form" in done.stderr
    assert "full fpgaserve image" in done.stderr


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _score(url: str, image: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{url}/score", data=image, headers={"Content-Type": "application/octet-stream"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def large_jpeg(*, width: int = 8000, height: int = 6000) -> bytes:
    """A 48-megapixel photo-like JPEG (a smooth gradient with the cat in it), a few MB."""
    y, x = np.mgrid[0:height:8, 0:width:8]
    small = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    image = Image.fromarray(small.astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    image.paste(Image.fromarray(skimage.data.chelsea()).resize((2400, 1600)), (2800, 2200))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status and maps")
def test_serve_maps_no_tensorflow_and_bounds_memory_after_a_large_jpeg(lite0_package: Path) -> None:
    big = large_jpeg()
    assert len(big) < 16 * MiB  # within the default body limit
    photo = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(photo, format="JPEG")
    argv = [sys.executable, "-m", "fpgaserve.cli.main", "serve", str(lite0_package), "--host", "127.0.0.1",
            "--port", "0", "--drain-s", "0"]  # fmt: skip
    with ServerProcess(argv=argv) as server:
        wait_until(lambda: http_get(f"{server.url}/readyz")[0] == 200, what="ready", timeout=600)
        for _ in range(3):
            assert _score(server.url, photo.getvalue())[0] == 200
        maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
        before = _status(server.proc.pid)
        status, body = _score(server.url, big)  # 8000 x 6000 > 4096 x 4096: decoded at 4000 x 3000
        after = _status(server.proc.pid)
        assert server.stop() == 0
    print(
        f"\nVmRSS before {before['VmRSS'] / MiB:.0f} MiB, after a 48 MP JPEG {after['VmRSS'] / MiB:.0f} MiB; "
        f"VmHWM {before['VmHWM'] / MiB:.0f} -> {after['VmHWM'] / MiB:.0f} MiB"
    )
    assert "libtensorflow" not in maps and "_pywrap_tensorflow" not in maps
    # numba's typing was loaded without scipy.linalg and cffi (runtime/numba_typing.py).
    assert "cython_blas" not in maps and "_fblas" not in maps and "_cffi_backend" not in maps
    # A regression bound, generous: 478 MiB before issue 14's start-up work (a warm-up at batch 8 and
    # an arena per thread), about 270 MiB after it (docs/benchmarks.md).
    assert before["VmRSS"] < 400 * MiB
    assert status == 200, body[:500]
    assert b"cat" in body
    # The full decode alone is 48 M x 3 bytes = 137 MiB; at 1/2 scale it is 34 MiB.
    assert after["VmHWM"] - before["VmHWM"] < 100 * MiB
    assert after["VmRSS"] - before["VmRSS"] < 64 * MiB


SERVE_WARM_UP = """
import asyncio, io, sys
from pathlib import Path

import numba.core.dispatcher as dispatcher
import skimage.data
from PIL import Image

from fpgaserve.cli.serve import _load_pipeline
from fpgaserve.server.dataplane import DataPlane
from fpgaserve.server.metrics import ServerMetrics
from fpgaserve.server.settings import ServerSettings

looked_up = []  # numba calls this only for a signature it has no loaded kernel of
original = dispatcher._DispatcherBase._compile_for_args
def counting(self, *args, **kwargs):
    looked_up.append(self.py_func.__qualname__)
    return original(self, *args, **kwargs)
dispatcher._DispatcherBase._compile_for_args = counting

async def main() -> None:
    settings = ServerSettings()
    plane = DataPlane(settings=settings, metrics=ServerMetrics())
    await plane.load(lambda: _load_pipeline(Path(sys.argv[1]), max_image_pixels=settings.max_image_pixels))
    print(len(looked_up) > 0, plane.ready)
    looked_up.clear()
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buffer, format="JPEG")
    runtime = plane._runtime
    print(runtime.labels[int(runtime.predict([buffer.getvalue()]).outputs[0].argmax())])
    print(looked_up)
    plane.drain()

asyncio.run(main())
"""


def test_after_the_servers_warm_up_a_first_request_loads_no_kernel(lite0_package: Path) -> None:
    # `fpgaserve serve` loads its pipeline without the runtime's own warm-up (a batch of one): the
    # data plane's warm-up batch of two, split into parts of one, must leave nothing for the first
    # request (a batch of one) to compile or load.
    done = subprocess.run(
        [sys.executable, "-c", SERVE_WARM_UP, str(lite0_package)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    warmed, label, first = done.stdout.strip().splitlines()[-3:]
    assert warmed == "True True"  # the warm-up did load kernels, and the model is ready
    assert "cat" in label
    assert first == "[]"
