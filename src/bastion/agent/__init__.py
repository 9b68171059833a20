"""The compute plane: the egress-only agent, its executors and the job runner."""
