"""ACE fit options and the basis they define (papers 000 and 001; METHODS §3).

Defaults follow paper 001: per-atom energy φ + φ^(1/2) + φ^(1/8) + φ^(1/4) + φ^(3/8) +
φ^(3/4) + φ^(7/8) + φ² (eight densities, pacemaker's ``FinnisSinclairShiftedScaled`` with
``fs_parameters`` pairs (1, exponent)), spherical Bessel radial basis (``SBessel``), cutoff
5 Å, force weight κ = 0.01 in L = (1 − κ) L_E + κ L_F, BFGS. Linear ACE (paper 000) uses one
density with exponent 1, so the energy is linear in the coefficients. The per-order limits
on radial and angular indices are those of pacemaker's input template; the basis is grown in
pacemaker's "power order" up to ``n_functions`` per element.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

#: Paper 001's eight embedding terms as (prefactor, exponent) pairs.
PAPER_001_EMBEDDING = [1, 1, 1, 0.5, 1, 0.125, 1, 0.25, 1, 0.375, 1, 0.75, 1, 0.875, 1, 2]
#: Linear ACE: one density, F(φ) = φ.
LINEAR_EMBEDDING = [1, 1]

#: Per body order (1, 2, 3, ...) limits of pacemaker's template, by number of species in a block.
FUNCTION_LIMITS = {
    "UNARY": {"nradmax_by_orders": [15, 6, 4, 3, 2, 2], "lmax_by_orders": [0, 3, 3, 2, 2, 1]},
    "BINARY": {"nradmax_by_orders": [15, 6, 3, 2, 2, 1], "lmax_by_orders": [0, 3, 2, 1, 1, 0]},
    "TERNARY": {"nradmax_by_orders": [15, 3, 3, 2, 1], "lmax_by_orders": [0, 2, 2, 1, 1]},
    "ALL": {"nradmax_by_orders": [15, 3, 2, 1, 1], "lmax_by_orders": [0, 2, 2, 1, 1]},
}

Backend = Literal["pacemaker", "linear"]
ClusterMethod = Literal["labels", "kmeans", "birch"]
OutlierFilter = Literal["force-error", "force", "none"]


class AceFitOptions(BaseModel):
    """Everything that defines an ACE fit, its ensemble and its active sets."""

    backend: Backend = Field("pacemaker", description="pacemaker (nonlinear, fit environment) or linear (pyace ridge).")
    n_functions: int = Field(72, ge=1, description="Basis functions per element (paper 001, W: 72).")
    cutoff: float = Field(5.0, gt=0, description="Radial cutoff in Å.")
    radial_basis: str = Field("SBessel", description="pacemaker radbase.")
    kappa: float = Field(0.01, ge=0, le=1, description="Force weight κ: L = (1 − κ) L_E + κ L_F.")
    max_steps: int = Field(2000, ge=1, description="Optimizer iterations (pacemaker maxiter).")
    optimizer: str = Field("BFGS", description="pacemaker optimizer (BFGS or L-BFGS-B).")
    l1: float = Field(1e-8, ge=0, description="pacemaker L1_coeffs.")
    l2: float = Field(1e-8, ge=0, description="L2 regularisation: pacemaker L2_coeffs; ridge α of the linear fit.")
    repulsion: str | None = Field("auto", description="pacemaker fit::repulsion (core repulsion); None to omit.")
    seed: int = Field(42, description="Seed of the first member; member k uses seed + k.")
    ensemble_size: int = Field(1, ge=1, description="Members fitted with seeds seed, seed + 1, ...")
    bootstrap: bool | None = Field(
        None, description="Fit each member on a bootstrap sample; None: on for linear ensembles (else identical), off for pacemaker."
    )
    random_init: bool | None = Field(
        None, description="pacemaker: start from random coefficients (coefs_init: random) so seeds give different "
        "members; None: on for ensembles, off (pacemaker's zero start) for one potential.",
    )
    reference_energies: dict[str, float] | None = Field(
        None, description="ē per element in eV/atom; None fits them to the training set (least squares)."
    )
    active_set: bool = Field(True, description="Build the D-optimality active set (.asi).")
    outlier_filter: OutlierFilter = Field(
        "force-error",
        description="Atoms left out of MaxVol: force-error (pacemaker's pace_activeset: |ΔF|/√3 > Q3 + 1.5·IQR), "
        "force (paper 000's text: |F| > Q3 + 1.5·IQR) or none.",
    )
    gamma_tolerance: float = Field(1.01, gt=1, description="MaxVol tolerance (pace_activeset -g).")
    maxvol_iters: int = Field(300, ge=1, description="MaxVol iterations (pace_activeset -i).")
    local: ClusterMethod | None = Field(None, description="Clustering for local D-optimality; None: global only.")
    n_clusters: int = Field(2, ge=1, description="Clusters for kmeans/birch.")
    cluster_key: str = Field("config_type", description="atoms.info key holding user cluster labels.")
    gpu: bool = Field(False, description="Let pacemaker see GPUs (else CUDA_VISIBLE_DEVICES is emptied).")
    pacemaker_input: dict[str, Any] = Field(default_factory=dict, description="Deep-merged into the generated input.yaml.")

    @field_validator("reference_energies")
    @classmethod
    def _finite_references(cls, value):
        if value is not None:
            import math

            bad = [k for k, v in value.items() if not math.isfinite(v)]
            if bad:
                raise ValueError(f"reference energies of {bad} are not finite")
        return value

    @model_validator(mode="after")
    def _local_needs_active_set(self):
        if self.local is not None and not self.active_set:
            raise ValueError("local D-optimality needs active_set=True")
        return self

    @property
    def linear(self) -> bool:
        return self.backend == "linear"

    def use_bootstrap(self) -> bool:
        if self.bootstrap is not None:
            return self.bootstrap
        return self.linear and self.ensemble_size > 1

    def use_random_init(self) -> bool:
        if self.random_init is not None:
            return self.random_init
        return self.ensemble_size > 1


def potential_section(elements: list[str], options: AceFitOptions) -> dict[str, Any]:
    """pacemaker's ``potential`` section (also the input of pyace's basis constructor)."""
    embedding = LINEAR_EMBEDDING if options.linear else PAPER_001_EMBEDDING
    functions: dict[str, Any] = {"number_of_functions_per_element": options.n_functions}
    functions.update({k: dict(v) for k, v in FUNCTION_LIMITS.items()})
    return {
        "deltaSplineBins": 0.001,
        "elements": list(elements),
        "embeddings": {
            "ALL": {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": list(embedding),
                    "ndensity": len(embedding) // 2}
        },
        "bonds": {
            "ALL": {"radbase": options.radial_basis, "radparameters": [5.25], "rcut": options.cutoff,
                    "dcut": 0.01, "NameOfCutoffFunction": "cos"}
        },
        "functions": functions,
    }


def create_basis(elements: list[str], options: AceFitOptions):
    """The B-basis configuration (coefficients zero) that a fit with these options starts from."""
    from pyace.multispecies_basisextension import create_multispecies_basis_config

    return create_multispecies_basis_config(potential_section(elements, options))


def functions_per_element(basis_configuration) -> dict[str, int]:
    """Number of basis functions (rows of an atom's projection vector) per element."""
    from pyace import ACEBBasisSet
    from pyace.activelearning import compute_number_of_functions

    basis = ACEBBasisSet(basis_configuration)
    return dict(zip(basis.elements_name, compute_number_of_functions(basis)))
