"""Committee force uncertainty and its power-law calibration (paper 004, eqs. 2-5, 9; METHODS §7-8).

σ̂²_c = (1/(M−1)) Σ_m (F^m_ic − F̄_ic)² per Cartesian component, σ̂_Fi = sqrt(Σ_c σ̂²_c) per
atom (eq. 9). σ_cal = a·σ̂^b with (a, b) minimising the Gaussian negative log-likelihood of
the force errors of the individual members, r_mi = ‖F^m_i − F^ref_i‖ (eq. 5), so that σ_cal
estimates σ_rmse of eq. 1, the root-mean-square error of a member's force on an atom. That
error does not depend on the committee size, which is why a calibration fitted with many
members holds for CAGO run with a few (paper 004, Fig. 3). (Treating the three components as
Gaussians of variance σ_cal²/3 gives the same minimiser; the z-scores below use that form,
so a calibrated committee gives z ~ N(0, 1).)
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field
from scipy.optimize import minimize

from uq_flows.errors import InputError
from uq_flows.uncertainty import ence, gaussian_nll, z_score_stats


def committee_force_sigma(forces: np.ndarray) -> np.ndarray:
    """σ̂_Fi per atom from member forces (M, ..., 3): sample std (M − 1) per component, eq. 9."""
    forces = np.asarray(forces, dtype=float)
    if forces.shape[0] < 2 or forces.shape[-1] != 3:
        raise InputError(f"committee forces must be (M ≥ 2, ..., 3), got {forces.shape}")
    return np.sqrt(np.var(forces, axis=0, ddof=1).sum(axis=-1))


class CalibrationDiagnostics(BaseModel):
    n_atoms: int = Field(description="Atoms measured.")
    n_errors: int | None = Field(None, description="Force-error vectors: atoms × members (atoms for one prediction).")
    nll: float
    z_mean: float
    z_std: float
    ence: float
    rmse: float
    rmv: float


class PowerLawCalibration(BaseModel):
    """σ_cal = a·σ̂^b (paper 004, eq. 4), with the diagnostics of the data it was fitted on."""

    a: float = 1.0
    b: float = 1.0
    n_members: int | None = None
    fitted: CalibrationDiagnostics | None = None

    def __call__(self, sigma_hat: np.ndarray) -> np.ndarray:
        return self.a * np.power(np.asarray(sigma_hat, dtype=float), self.b)

    @classmethod
    def identity(cls) -> PowerLawCalibration:
        """No calibration: σ_cal = σ̂ (the paper's 'uncalibrated' CAGO)."""
        return cls(a=1.0, b=1.0)

    @classmethod
    def fit(cls, sigma_hat, errors, n_members: int | None = None, n_bins: int = 10) -> PowerLawCalibration:
        """(a, b) minimising Σ [ln 2π + ln σ_cal² + r²/σ_cal²] over atoms (eq. 5).

        ``sigma_hat``: σ̂_Fi (N,); ``errors``: force errors F^m_i − F^ref_i of the members,
        (M, N, 3), or of one prediction per atom, (N, 3).
        """
        _checked(sigma_hat, errors)  # shapes agree, nothing NaN or inf
        spread = np.asarray(sigma_hat, dtype=float).ravel() > 0  # atoms the fit can use
        atom_errors = np.asarray(errors, dtype=float)
        atom_errors = atom_errors[:, spread] if atom_errors.ndim == 3 else atom_errors[spread]
        atom_sigma = np.asarray(sigma_hat, dtype=float).ravel()[spread]
        if spread.sum() < 3:
            raise InputError("calibration needs at least 3 atoms with a non-zero committee spread")
        paired_sigma, paired_errors = _checked(atom_sigma, atom_errors)
        log_s, r2 = np.log(paired_sigma), np.sum(paired_errors**2, axis=1)

        def nll(params):  # in ln a, b: ln σ_cal = ln a + b ln σ̂
            log_cal = params[0] + params[1] * log_s
            return np.sum(2 * log_cal + r2 * np.exp(-2 * log_cal))

        def grad(params):
            log_cal = params[0] + params[1] * log_s
            d = 2 - 2 * r2 * np.exp(-2 * log_cal)
            return np.array([d.sum(), (d * log_s).sum()])

        start = np.array([0.5 * np.log(np.mean(r2) / np.mean(np.exp(2 * log_s))), 1.0])
        result = minimize(nll, start, jac=grad, method="BFGS")
        calibration = cls(a=float(np.exp(result.x[0])), b=float(result.x[1]), n_members=n_members)
        return calibration.model_copy(update={"fitted": calibration.diagnostics(atom_sigma, atom_errors, n_bins)})

    def diagnostics(self, sigma_hat, errors, n_bins: int = 10) -> CalibrationDiagnostics:
        """How well σ_cal matches the errors (paper 002): component z-scores z = e_c √3 / σ_cal
        (mean 0 and std 1 when calibrated), NLL per atom of ‖e‖ under σ_cal, ENCE of ‖e‖ vs σ_cal."""
        n_atoms = np.asarray(sigma_hat).size
        sigma_hat, errors = _checked(sigma_hat, errors)
        sigma = self(sigma_hat)
        norms = np.linalg.norm(errors, axis=1)
        z_mean, z_std = z_score_stats(errors.ravel(), np.repeat(sigma / np.sqrt(3), 3))
        return CalibrationDiagnostics(
            n_atoms=n_atoms,
            n_errors=len(sigma),
            nll=gaussian_nll(norms, sigma),
            z_mean=z_mean,
            z_std=z_std,
            ence=ence(norms, sigma, n_bins=min(n_bins, len(sigma))),
            rmse=float(np.sqrt(np.mean(norms**2))),
            rmv=float(np.sqrt(np.mean(sigma**2))),
        )


def _checked(sigma_hat, errors) -> tuple[np.ndarray, np.ndarray]:
    """σ̂ and error vectors paired row by row; member errors (M, N, 3) repeat σ̂ M times."""
    sigma_hat = np.asarray(sigma_hat, dtype=float).ravel()
    errors = np.asarray(errors, dtype=float)
    if errors.ndim == 3:
        sigma_hat = np.tile(sigma_hat, errors.shape[0])
    errors = errors.reshape(-1, 3)
    if len(sigma_hat) != len(errors) or len(sigma_hat) < 3:
        raise InputError(f"calibration needs ≥ 3 atoms with σ̂ and error vectors, got {len(sigma_hat)} and {len(errors)}")
    if not (np.all(np.isfinite(sigma_hat)) and np.all(np.isfinite(errors))):
        raise InputError("calibration data contain NaN or inf")
    return sigma_hat, errors
