"""The control plane's database: ORM models, the audited session and migrations.

Imported by services (and the app that builds the engine); routes never query it.
"""
