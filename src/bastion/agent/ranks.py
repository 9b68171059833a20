"""What a job's processes on Ray Train share: how a rank is told its place, and how it ends.

Defined apart from :mod:`bastion.agent.job` because that module runs as ``__main__`` in
the job's process, where a class defined in it is not the one other modules import.
"""

from __future__ import annotations

__all__ = ["GROUP_LOST", "RANK_ENV", "RENDEZVOUS_ENV", "GroupLost", "RankFinished"]

#: The job's environment names its rank and where its group meets.
RANK_ENV = "BASTION_RANK"
RENDEZVOUS_ENV = "BASTION_RENDEZVOUS"
#: A rank exits with this when its group lost a worker: Ray Train starts the group again.
GROUP_LOST = 75


class GroupLost(Exception):
    """A rank of a group that Ray Train runs saw the group break (a worker or node lost)."""


class RankFinished(Exception):
    """Raised on a rank other than 0 once its share of the training is done."""
