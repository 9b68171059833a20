"""Security primitives: keys, envelope encryption, signing, sealed artifacts, transfer
between clusters, the file scanner and the tamper-evident audit log (``audit_log``,
``audit_chain``, ``audit_export``).

The lowest layer: imports nothing from ``server``, ``agent``, ``cli`` or the ML stages.
"""
