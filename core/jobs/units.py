"""Finished atlas units kept in Redis across jobs (`core.methods.UnitCache`), so that a second atlas of a layer
with more channels makes only the new ones, and a cancelled atlas keeps what it made.

One hash per (model file, kind, layer, the params that shape an icon): field = channel, value = JSON with
the unit's objectives and its images as base64 PNG. Params that do not change an icon (which channels, k,
batch, previews, the dataset's dead threshold) are left out of the key. Entries live as long as artifacts
(`CONVSCOPE_ARTIFACT_TTL_S`), refreshed on every write.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np
import redis
from PIL import Image

from core.methods import UnitVisual

NOT_SHAPING = {"channels", "k", "batch", "preview_every", "dead_fraction"}


def unit_key(prefix: str, model_sha256: str, kind: str, params: dict) -> str:
    shaping = {name: value for name, value in params.items() if name not in NOT_SHAPING}
    digest = hashlib.sha256(json.dumps([kind, shaping], sort_keys=True).encode()).hexdigest()[:32]
    return f"{prefix}units:{model_sha256}:{digest}"


class RedisUnitCache:
    """`UnitCache` on one Redis hash."""

    def __init__(self, client: redis.Redis, key: str, ttl_s: int):
        self.client, self.key, self.ttl_s = client, key, ttl_s

    def get(self, channel: int) -> UnitVisual | None:
        raw = self.client.hget(self.key, str(channel))
        if raw is None:
            return None
        entry = json.loads(raw)
        pictures = [np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")) for png in entry["png"]]
        return UnitVisual(pictures, [float(v) for v in entry["objectives"]])

    def put(self, channel: int, visual: UnitVisual) -> None:
        pngs = []
        for pixels in visual.images:
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, format="PNG")
            pngs.append(base64.b64encode(out.getvalue()).decode())
        with self.client.pipeline() as pipe:
            pipe.hset(self.key, str(channel), json.dumps({"objectives": visual.objectives, "png": pngs}))
            pipe.expire(self.key, self.ttl_s)
            pipe.execute()
