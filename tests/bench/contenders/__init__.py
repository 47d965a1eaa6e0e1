"""Standalone programs the gateway is measured against (each started pinned by the harness)."""
