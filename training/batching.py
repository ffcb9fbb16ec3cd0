"""Hard-negative batches: each batch is made of small groups of samples whose captions are near neighbours.

In a random batch of 32 synthworld clips almost every pair already differs in colour or motion, so the
contrastive terms are satisfied without looking at the harder attributes: a probe of the video embedding after
620 random-batch steps told the true caption from its colour- and direction-swapped variants 100% of the time,
from its shape-swapped variants 47.5% (chance 25). Groups of near-identical captions ("a small red circle moves
left" / "a small red square moves left") put the details that still separate them into the batch.

Neighbours are found once, before training, from the text tower's mean-pooled states of each sample's first
caption (the pretrained sentence encoder, untouched by training yet) with a FAISS inner-product search. Samples
with the very same caption are never grouped: they would be false negatives.

Neighbours can also be given by the data (`train.group_key`): samples that share a manifest field form a group.
Synthworld's shape variants use it, so a scene and its copies with another shape share a batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from model import Clover

from .distributed import DistInfo


@torch.no_grad()
def caption_neighbours(model: Clover, captions: list[str], pool: int, batch_size: int = 256) -> np.ndarray:
    """[N, pool] indices of each caption's nearest other captions, best first; -1 where fewer exist.

    Identical caption strings are not neighbours of each other (nor is a caption of itself)."""
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(captions), batch_size):
        batch = model.tokenize(captions[start: start + batch_size])
        hidden = model.text_encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        pooled = model.pool_text(hidden.last_hidden_state, batch["attention_mask"])
        chunks.append(F.normalize(pooled.float(), dim=-1).cpu())
    model.train(was_training)
    vectors = np.ascontiguousarray(torch.cat(chunks).numpy(), dtype=np.float32)
    import faiss  # only neighbour batching needs it: plain training runs without faiss installed

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    same: dict[str, list[int]] = {}
    for i, caption in enumerate(captions):
        same.setdefault(caption, []).append(i)
    # Enough candidates to fill `pool` even after dropping the identical captions of the largest group.
    depth = min(len(captions), pool + max(len(v) for v in same.values()))
    _, found = index.search(vectors, depth)
    out = np.full((len(captions), pool), -1, dtype=np.int64)
    for i, row in enumerate(found):
        kept = [int(j) for j in row if j >= 0 and captions[j] != captions[i]][:pool]
        out[i, : len(kept)] = kept
    return out


def group_neighbours(keys: list[str | None], pool: int) -> np.ndarray:
    """[N, pool] indices of the other samples with the same key (e.g. synthworld's `group`: a scene and its
    shape variants), in index order; -1 where fewer exist. A sample without a key has no neighbours."""
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            members.setdefault(key, []).append(i)
    out = np.full((len(keys), pool), -1, dtype=np.int64)
    for i, key in enumerate(keys):
        others = [j for j in members.get(key, []) if j != i][:pool]  # None is never a member: no neighbours
        out[i, : len(others)] = others
    return out


class NeighbourBatchSampler(Sampler[int]):
    """Batches of `group` samples at a time: a random seed sample and `group - 1` of its `pool` nearest captions.

    Same contract as the trainer's EpochSampler: seeded per epoch, the same number of batches per epoch, each
    rank takes its slice of every global batch (so negatives gathered across ranks still come in groups),
    and it can start mid-epoch for an exact resume. No sample appears twice in a global batch; where a seed's
    neighbours are used up the group is filled with random samples.
    """

    def __init__(self, neighbours: np.ndarray | None, batch_size: int, group: int, seed: int, info: DistInfo,
                 num_samples: int | None = None):
        """`neighbours` may be set later (None, with `num_samples`): the trainer fills it at its first batch,
        or from a checkpoint when it resumes, so it is never computed twice."""
        if group < 2 or batch_size % group:
            raise ValueError(f"the batch size ({batch_size}) must be a multiple of the group size ({group}), >= 2")
        self.neighbours, self.batch_size, self.group, self.seed, self.info = neighbours, batch_size, group, seed, info
        self.num_samples = len(neighbours) if neighbours is not None else int(num_samples)
        self.global_batch = batch_size * info.world_size
        self.batches_per_epoch = (self.num_samples // info.world_size) // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"{self.num_samples} samples cannot fill one batch of {batch_size} on "
                             f"{info.world_size} ranks")
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every global batch of `epoch`, in order (identical on every rank)."""
        if self.neighbours is None:
            raise RuntimeError("the caption neighbours are not set yet")
        rng = np.random.default_rng([self.seed, epoch])
        order, cursor = rng.permutation(self.num_samples).tolist(), 0
        batches = []
        for _ in range(self.batches_per_epoch):
            batch: list[int] = []
            taken: set[int] = set()
            while len(batch) < self.global_batch:
                while order[cursor % self.num_samples] in taken:  # the batch holds fewer than all samples
                    cursor += 1
                seed = order[cursor % self.num_samples]
                cursor += 1
                near = [int(j) for j in self.neighbours[seed] if j >= 0 and j not in taken]
                picks = rng.permutation(near)[: self.group - 1].tolist() if near else []
                members = [seed, *picks]
                while len(members) < self.group:  # seed without enough free neighbours: random fill
                    extra = int(rng.integers(self.num_samples))
                    if extra not in taken and extra not in members:
                        members.append(extra)
                batch += members
                taken.update(members)
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[int]:
        rank = self.info.rank
        for batch in self.global_batches(self.epoch)[self.start_batch:]:
            yield from batch[rank * self.batch_size: (rank + 1) * self.batch_size]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size
