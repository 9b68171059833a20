"""Governance: policies and their gates, promotion with approvals, lineage, compliance.

Rules over facts handed to them (no database of their own); imports nothing from ``server``.
"""
