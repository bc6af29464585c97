"""uq-flows: uncertainty-driven data generation and distillation for MLIPs."""

__version__ = "0.1.0"
