"""Routers of the control plane, one module per area."""
