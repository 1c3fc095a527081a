"""Resident memory stays bounded: huge images are refused from their header, a large accepted one
leaves no lasting growth (a real server process; its VmRSS read from /proc)."""

from __future__ import annotations

import concurrent.futures
import json
import urllib.request
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from fpgaserve.server.testing import encode_png, sample_image
from tests.server.helpers import ServerProcess, http_get
from tests.server.test_hostile import png_header_only
from tests.support.polling import wait_until

MiB = 1 << 20


def gradient(*, side: int) -> npt.NDArray[np.uint8]:
    """A smooth image: compresses well, so that 12 MP fit in a request body."""
    ramp = (np.arange(side, dtype=np.uint32) * 255 // side).astype(np.uint8)
    return np.stack([np.broadcast_to(ramp, (side, side)), np.broadcast_to(ramp[:, None], (side, side)),
                     np.full((side, side), 128, np.uint8)], axis=-1)  # fmt: skip


def rss(server: ServerProcess) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def score(url: str, image: bytes) -> int:
    request = urllib.request.Request(
        f"{url}/score", data=image, headers={"Content-Type": "image/png"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            json.loads(response.read())
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_resident_memory_is_bounded_after_large_images() -> None:
    with ServerProcess.fake(settings={"host": "127.0.0.1", "port": 0}) as server:
        wait_until(lambda: http_get(f"{server.url}/readyz")[0] == 200, what="ready")
        small = encode_png(sample_image())
        for _ in range(5):
            assert score(server.url, small) == 200
        baseline = rss(server)

        # Bombs below and above Pillow's own limit, four at once: refused from the header alone.
        bombs = [png_header_only(13000, 13000, bit_depth=1, color=0), png_header_only(9000, 9000)] * 2
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda b: score(server.url, b), bombs)) == [400] * 4
        after_bombs = rss(server)

        # A large image within the limit (12 MP: a phone photo) is decoded; its memory goes back.
        large = encode_png(gradient(side=3464))
        assert len(large) < 16 * MiB
        for _ in range(3):
            assert score(server.url, large) == 200
        after_large = rss(server)
        server.stop()
    print(
        f"\nVmRSS: baseline {baseline / MiB:.0f} MiB, after 4 bombs {after_bombs / MiB:.0f} MiB, "
        f"after 3 x 12 MP images {after_large / MiB:.0f} MiB"
    )
    assert after_bombs - baseline < 32 * MiB
    # Today's code kept ~+36 MiB per decoded 12 MP image at best and GBs for the bombs.
    assert after_large - baseline < 64 * MiB
