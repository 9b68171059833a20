"""The train stage: an event-driven PyTorch trainer with privacy (``dp_sgd``), adversarial
and checkpoint hooks.

Runs inside jobs; imports nothing from ``server``, ``agent`` or ``cli``.
"""
