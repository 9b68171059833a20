"""Users' code packages: the rules a package must meet, and its deterministic archive.

Imports nothing from server, agent or cli. The limits live in :mod:`bastion.code.rules` and
are read from there at call time (set ``bastion.code.rules.MAX_FILES`` and so on to change
them; the names re-exported here are copies).
"""

from bastion.code.archive import TREE_FORMAT, pack, read_tree, tree_manifest, unpack, verify_tree
from bastion.code.rules import (
    MAX_ARCHIVE_BYTES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_TOTAL_BYTES,
    SKIPPED_DIRS,
    FileRecord,
    check_file,
    check_path,
)

__all__ = [
    "MAX_ARCHIVE_BYTES",
    "MAX_DEPTH",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "SKIPPED_DIRS",
    "TREE_FORMAT",
    "FileRecord",
    "check_file",
    "check_path",
    "pack",
    "read_tree",
    "tree_manifest",
    "unpack",
    "verify_tree",
]
