"""The order queued jobs start in: fair and priority-aware.

Higher ``priority`` first; within a priority, a client with fewer jobs running goes before one
with more (so one client's burst does not hold everyone else back), then first in, first out. A
client never has more than ``per_client`` jobs running at once.
"""

from __future__ import annotations

from collections import Counter

from .store import JobRecord


def queue_order(queued: list[JobRecord], running: list[JobRecord]) -> list[JobRecord]:
    """Queued jobs in the order they would start if every slot opened now, one at a time.

    Within a priority, a client's k-th waiting job sorts as if the client had ``running + k`` jobs
    going: the same order as picking, one job at a time, the client with the fewest jobs running.
    """
    busy = Counter(j.client for j in running)
    order = []
    for priority in sorted({j.priority for j in queued}, reverse=True):
        ahead = Counter()
        keyed = []
        for job in sorted((j for j in queued if j.priority == priority), key=lambda j: j.seq):
            keyed.append((busy[job.client] + ahead[job.client], job.seq, job))
            ahead[job.client] += 1
        order += [job for _, _, job in sorted(keyed, key=lambda t: t[:2])]
        busy.update(ahead)
    return order


def next_jobs(queued: list[JobRecord], running: list[JobRecord], slots: int, per_client: int) -> list[JobRecord]:
    """Up to ``slots`` queued jobs to start now.

    Args:
        queued: jobs waiting, any order.
        running: jobs running now (they count against their client's cap).
        slots: how many jobs may start.
        per_client: the most jobs one client may have running.
    """
    busy = Counter(j.client for j in running)
    chosen = []
    for job in queue_order(queued, running):
        if len(chosen) == slots:
            break
        if busy[job.client] < per_client:
            chosen.append(job)
            busy[job.client] += 1
    return chosen
