"""Calibrated adversarial geometry optimisation (CAGO, paper 004) and its calibration."""
