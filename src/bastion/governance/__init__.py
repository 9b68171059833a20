"""Governance: policies and their gates, promotion with approvals, lineage, compliance."""
