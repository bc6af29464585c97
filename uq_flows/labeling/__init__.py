"""Labelling stage: which structures get DFT and which get teacher (uMLIP) labels."""
