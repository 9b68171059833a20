"""Datasets in the compute plane: reference workloads, schemas, scans."""
