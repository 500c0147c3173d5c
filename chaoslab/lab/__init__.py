"""The embedded lab: a small real service for experiments and tests to break."""
