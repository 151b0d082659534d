"""Test and benchmark helpers (tiny models built offline, shared fixtures): never imported by the product."""
