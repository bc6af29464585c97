"""Exploration: starting-set generators and MD sampling that seed CAGO and the loop."""
