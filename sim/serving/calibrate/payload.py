"""The lab's request: its JPEG, the REST body, and the payload's provenance (stdlib only)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

LAB_IMAGE = Path("..") / "shared" / "data" / "grace_hopper.jpg"
"""The lab's own image (512x600, 61 KB), relative to a checkout's root."""

LAB_SIGNATURE = "serving_preprocess"


def find_lab_image() -> Path | None:
    """The lab's image next to the working directory or this checkout, if there is one."""
    here = Path(__file__).resolve().parents[3]  # the repository root in a checkout
    for root in (Path.cwd(), here):
        candidate = (root / LAB_IMAGE).resolve()
        if candidate.is_file():
            return candidate
    return None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker, or None when it is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3) and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def payload_info(jpeg: bytes, source: str) -> dict[str, Any]:
    """Provenance of the request payload: where it came from, its size, pixels and digest."""
    info: dict[str, Any] = {
        "image": source,
        "bytes": len(jpeg),
        "sha256": hashlib.sha256(jpeg).hexdigest(),
    }
    size = jpeg_size(jpeg)
    if size:
        info["width"], info["height"] = size
    return info


def rest_body(jpeg: bytes, batch: int = 1, signature: str = LAB_SIGNATURE) -> bytes:
    """The lab's Locust request body: ``{"signature_name": ..., "instances": [{"b64": ...}]}``."""
    encoded = base64.b64encode(jpeg).decode("ascii")
    body = {"signature_name": signature, "instances": [{"b64": encoded}] * batch}
    return json.dumps(body).encode("utf-8")
