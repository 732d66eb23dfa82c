"""Upgrades: one model's verdict in a candidate runtime, the check over a registry, runtime images."""
