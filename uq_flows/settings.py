"""Settings from the environment (prefix ``UQ_FLOWS_``) and an optional YAML file.

The YAML file is ``$UQ_FLOWS_CONFIG_FILE`` or ``$UQ_FLOWS_HOME/config.yaml``; environment
variables win over the file, the file over the defaults (the atomate2 convention).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path("~/.uq-flows")


class UqFlowsSettings(BaseSettings):
    """Every tunable default of uq-flows; see the README for how to set them."""

    model_config = SettingsConfigDict(env_prefix="UQ_FLOWS_", extra="forbid")

    home: Path = Field(DEFAULT_HOME, description="Embedded databases, caches and config.")
    config_file: Path | None = Field(None, description="YAML file with settings.")
    torch_threads: int = Field(
        default_factory=lambda: min(2, os.cpu_count() or 1),
        ge=1,
        description="torch.set_num_threads for uMLIP evaluation; machines are shared.",
    )
    device: str = Field("cpu", description="torch device for uMLIP members.")
    score_chunk_size: int = Field(
        500, ge=1, description="Structures per scoring job (amortises model loading)."
    )
    structure_id_decimals: int = Field(
        4, ge=0, le=10, description="Decimals (Å) kept when hashing cells and positions."
    )
    uncertainty_variant: int = Field(1, ge=0, le=2, description="U variant (METHODS §1).")
    cp2k_command: str = Field("cp2k.psmp", description="CP2K executable (name on PATH or path).")
    cp2k_data_dir: Path = Field(Path("/usr/share/cp2k"), description="CP2K basis and potential files.")
    cp2k_threads: int = Field(
        default_factory=lambda: min(2, os.cpu_count() or 1), ge=1, description="OMP_NUM_THREADS for CP2K."
    )
    cp2k_timeout: float = Field(3600.0, gt=0, description="Seconds before a CP2K run is stopped.")
    score_category: str = Field("gpu", description="FireWorks category of scoring jobs.")
    combine_category: str = Field("cpu", description="FireWorks category of light jobs.")

    @model_validator(mode="before")
    @classmethod
    def _load_yaml(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Fill fields not given by the environment from the YAML config file."""
        home = Path(values.get("home") or DEFAULT_HOME).expanduser()
        path = values.get("config_file") or home / "config.yaml"
        path = Path(path).expanduser()
        if not path.exists():
            if values.get("config_file"):
                raise ValueError(f"settings file {path} does not exist")
            return values
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"settings file {path} must hold a mapping")
        return {**{k.lower(): v for k, v in loaded.items()}, **values}


@lru_cache
def get_settings() -> UqFlowsSettings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return UqFlowsSettings()
