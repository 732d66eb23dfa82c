"""Workflows that span the packages: each command of the CLI parses, calls one of these, and prints.

They are the one layer that may use the registry and training together; neither of those
imports the other (tests/test_architecture.py).
"""
