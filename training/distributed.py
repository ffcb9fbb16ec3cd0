"""Everything torchrun: process group set-up, rank-0 guards, all-gather *with gradient*.

Runs unchanged in one process (world size 1). Launch on N processes of one machine with
    torchrun --standalone --nproc_per_node=N -m training.cli_train --data DIR --out RUN ...
and across nodes with `--nnodes`, `--node_rank`, `--rdzv_endpoint` as usual. gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group when launched by torchrun; a no-op otherwise."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's [b, ...] into the global [world*b, ...], keeping the autograd graph.

    `torch.distributed.nn.all_gather` back-propagates the gradient of the gathered copies to their owners, so
    negatives from other ranks train this rank's encoders as in one big batch (open_clip's gather_with_grad).
    """
    if not info.enabled:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
