"""Datasets in the compute plane: ingestion, schemas, the PII scan, pseudonymisation,
poisoning checks, the feature gate and the published (coarsened) schema.

Runs inside jobs; imports nothing from ``server``, ``agent`` or ``cli``.
"""
