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
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path("~/.uq-flows")


def _fit_environment_pacemaker() -> str:
    """``.venv-fit/bin/pacemaker`` beside the package's repository if built, else ``pacemaker``."""
    candidate = Path(__file__).resolve().parents[1] / ".venv-fit" / "bin" / "pacemaker"
    return str(candidate) if candidate.exists() else "pacemaker"


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
    cp2k_command: str = Field("cp2k.psmp", description="CP2K command: the executable (name on PATH or path), or a "
                                                       "launcher line such as 'srun -n 32 cp2k.psmp' (cp2k_threads "
                                                       "OpenMP threads per rank).")
    cp2k_data_dir: Path = Field(Path("/usr/share/cp2k"), description="CP2K basis and potential files.")
    cp2k_threads: int = Field(
        default_factory=lambda: min(2, os.cpu_count() or 1), ge=1, description="OMP_NUM_THREADS for CP2K."
    )
    cp2k_timeout: float = Field(3600.0, gt=0, description="Seconds before a CP2K run is stopped.")
    cp2k_max_reruns: int = Field(2, ge=0, description="Reruns of a CP2K run whose SCF did not converge (from its "
                                 "wavefunction, MAX_SCF doubled, mixing α halved) or that timed out (from its wavefunction).")
    score_category: str = Field("gpu", description="FireWorks category of scoring jobs.")
    combine_category: str = Field("cpu", description="FireWorks category of light jobs.")
    selection_category: str = Field("cpu", description="FireWorks category of QBC, descriptor and DIRECT jobs.")
    pacemaker_command: str = Field(
        default_factory=lambda: _fit_environment_pacemaker(),
        description="pacemaker of the fit environment (`make fit-env`), else `pacemaker` on PATH.",
    )
    pacemaker_timeout: float = Field(7200.0, gt=0, description="Seconds before a pacemaker fit is stopped.")
    fit_threads: int = Field(
        default_factory=lambda: min(2, os.cpu_count() or 1),
        ge=1,
        description="Threads of a pacemaker fit and processes of a linear ACE design matrix.",
    )
    fit_category: str = Field("cpu", description="FireWorks category of ACE fit jobs (GPU allowed).")
    launchpad_file: Path | None = Field(
        None,
        description="FireWorks launchpad YAML (my_launchpad.yaml; ${VAR} read from the environment). "
        "Unset: db_uri, else the embedded launchpad under home.",
    )
    jobstore_file: Path | None = Field(
        None,
        description="jobflow JobStore YAML (docs_store + additional_stores.data; ${VAR} read from the "
        "environment). Unset: db_uri, else the embedded SQLite JobStore home/jobstore.sqlite.",
    )
    db_uri: SecretStr | None = Field(
        None, description="MongoDB URI for launchpad and JobStore (environment or config file only; never printed)."
    )
    campaign_uri: SecretStr | None = Field(
        None, description="MongoDB URI of the campaign collections (default: db_uri; unset and no db_uri: "
        "campaign.sqlite under home). Required with launchpad_file/jobstore_file: workers must share it.",
    )
    db_name: str = Field("uq_flows", description="Database name when db_uri names none.")
    db_timeout_ms: int = Field(5000, ge=100, description="Server selection and connect timeout (ms).")
    max_retries: int = Field(2, ge=0, description="Reruns of a fizzled or lost job before it is left FIZZLED.")
    retry_backoff: float = Field(60.0, ge=0, description="Seconds before the first rerun; doubles with each retry.")
    lost_run_seconds: float = Field(
        4 * 3600.0, gt=0, description="A RUNNING job of a worker that is not uq-flows' (rlaunch, qlaunch with FireWorks' "
        "1-hour ping) not pinged for this long is lost."
    )
    heartbeat_seconds: float = Field(30.0, gt=0, description="How often uq-flows workers ping a running job's launch.")
    lost_after_pings: int = Field(5, ge=2, description="A uq-flows worker's RUNNING job is lost after this many "
                                                       "missed heartbeats (its worker died).")

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
