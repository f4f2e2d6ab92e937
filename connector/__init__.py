"""A trusted data space connector: ODRL usage policies, DSP 2025-1, signed token exchange."""

__version__ = "0.1.0"
