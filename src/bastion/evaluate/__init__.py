"""The evaluate stage: attacks and audits run against every model before it can ship.

Pure functions on arrays and models, called by jobs; imports nothing from ``server``,
``agent`` or ``cli``.
"""
