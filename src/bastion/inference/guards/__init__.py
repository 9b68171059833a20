"""The checks every request passes before and after the model sees it.

Pure checks over requests and scores; they import nothing from ``server`` or ``cli``.
"""
