"""Helpers shared by tests: fault injection for real network dependencies."""
