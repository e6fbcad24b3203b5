"""All settings, read once from environment variables prefixed `CONVSCOPE_` (and `REDIS_URL`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; the README lists them with their defaults."""

    model_config = SettingsConfigDict(env_prefix="CONVSCOPE_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("CONVSCOPE_REDIS_URL", "REDIS_URL")
    )
    redis_prefix: str = Field("convscope:", description="prefix of every Redis key this service writes")
    data_dir: Path = Field(Path("var"), description="model store and other files live under here")

    # Inputs (bytes, pixels).
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(40_000_000, gt=0, description="width × height above which an image is refused")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0)
    image_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="how long uploaded images are kept in Redis")

    # ONNX Runtime.
    ort_intra_threads: int = Field(1, ge=0, description="intra-op threads per session (0: ORT decides)")
    ort_inter_threads: int = Field(1, ge=0)
    ort_providers: str = Field("auto", description="'auto' (CUDA when a GPU is present), or a comma list")
    occlusion_batch: int = Field(32, gt=0, description="occluded copies per ONNX Runtime call")
    max_occlusion_positions: int = Field(4096, gt=0)

    # Load shedding.
    max_concurrent_requests: int = Field(16, gt=0, description="forward views running at once; more get 503")

    # Logging.
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 8000


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, validated once."""
    return Settings()
