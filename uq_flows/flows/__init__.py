"""Flows composing the stages: distillation (score → threshold → label → assemble), the loop."""
