"""StatelessProcessGroup: ranks that meet through a TCPStore without touching torch's default group
(the trainer already has one; a weight-sync group must live beside it)."""
import datetime
from dataclasses import dataclass

import torch.distributed as dist


@dataclass
class StatelessProcessGroup:
    rank: int
    world_size: int
    store: object
    timeout: datetime.timedelta

    @staticmethod
    def create(host, port, rank, world_size, data_expiration_seconds=3600, store_timeout=300):
        timeout = datetime.timedelta(seconds=store_timeout)
        # Rank 0 hosts the store; the others wait for it to come up.
        store = dist.TCPStore(host, int(port), world_size, is_master=(rank == 0), timeout=timeout)
        return StatelessProcessGroup(rank=rank, world_size=world_size, store=store, timeout=timeout)
