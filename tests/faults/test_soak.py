"""Soak: a thousand images through two workers that are killed every few seconds.

Out of the default run (marker ``soak``; run it with ``pytest -m soak tests/faults``): on
two cores it takes about a quarter of an hour (300 images and 21 kills took 3.5 minutes).
``PANCHRO_SOAK_IMAGES`` sets a smaller collection for a quicker look. Every
``KILL_EVERY_S`` seconds a worker busy with an image is killed with ``kill -9``: its pool
process and its whole node in turn (a node only after it ran ``NODE_REST_S``). Each image
is hit at most once, since an image lost ``MAX_LOST_ATTEMPTS`` times is failed on purpose.
Afterwards every promise of ``fault_checks.verify`` must hold, as after a single fault.

It carries the ``soak`` marker alone: ``-m slow`` or ``-m s3`` replace the default
``-m 'not soak'`` and must still leave it out.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from fault_checks import FaultWindow, verify
from fault_cluster import FaultCluster
from fault_images import collection_files

from catalog import ImageStatus

pytestmark = [pytest.mark.soak]

#: Images of the soak's collection (the last ``CORRUPT_IMAGES`` of them corrupt).
SOAK_IMAGES = int(os.environ.get("PANCHRO_SOAK_IMAGES", "1000"))
#: Corrupt images among them.
CORRUPT_IMAGES = 4
#: Seconds between two kills.
KILL_EVERY_S = 8.0
#: Seconds a node runs between two kills of it: ``panchro workers`` gives up on a worker
#: after five runs in a row shorter than two minutes, as a crash loop.
NODE_REST_S = 150.0
#: Seconds the whole collection may take: a guard against hanging, not a target.
SOAK_GUARD_S = 4 * 3600.0
#: Settings of the module's cluster: the production time limits and visibility timeout.
CLUSTER_SETTINGS = {"PANCHRO_VISIBILITY_TIMEOUT": "3600"}


def _kill_one(
    cluster: FaultCluster, name: str, hit: set[int], node_kills: dict[str, float], pool: bool
) -> tuple[int, bool] | None:
    """Kill a worker busy with an image not hit before (its node if it rested long enough,
    else its pool process); return the image's id and whether the pool process was killed.
    """
    nodes, pools = cluster.node_pids(), cluster.pool_pids()
    for row in cluster.running(name):
        if row.id in hit or row.worker not in nodes or row.worker not in pools:
            continue
        rested = time.monotonic() - node_kills.get(row.worker, -NODE_REST_S) >= NODE_REST_S
        if pool or not rested:
            os.kill(pools[row.worker], signal.SIGKILL)
            return row.id, True
        os.killpg(nodes[row.worker], signal.SIGKILL)
        node_kills[row.worker] = time.monotonic()
        return row.id, False
    return None


def test_soak_thousand_images_with_a_kill_every_few_seconds(cluster: FaultCluster) -> None:
    files = collection_files(SOAK_IMAGES - CORRUPT_IMAGES, CORRUPT_IMAGES)
    submitted = cluster.upload("soak", files)
    cluster.submit(submitted)
    hit: set[int] = set()
    node_kills: dict[str, float] = {}
    kills = {"pool": 0, "node": 0}
    first = last = 0.0
    deadline = time.monotonic() + SOAK_GUARD_S
    open_statuses = (ImageStatus.PENDING, ImageStatus.QUEUED, ImageStatus.RUNNING)
    while any(cluster.counts(submitted.name).get(status) for status in open_statuses):
        assert time.monotonic() < deadline, f"soak not done after {SOAK_GUARD_S:.0f} s"
        time.sleep(KILL_EVERY_S)
        killed = _kill_one(cluster, submitted.name, hit, node_kills, kills["pool"] <= kills["node"])
        if killed is None:
            continue
        hit.add(killed[0])
        kills["pool" if killed[1] else "node"] += 1
        last = time.time()
        first = first or last
    window = FaultWindow("soak", start=first, end=last, running_at_start=frozenset(hit))
    verdict = verify(cluster, submitted, window)
    print(f"{verdict.summary()}; {kills['pool']} pool and {kills['node']} node kills")
    problems = verdict.problems()
    assert not problems, "\n".join([verdict.summary(), *problems, cluster.logs()])
    assert kills["pool"] >= 1 and kills["node"] >= 1
