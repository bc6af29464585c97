"""One job per stored chunk, made in groups so no FireWorks document grows with the campaign.

A job that makes its children at run time (``Response(replace=...)``) leaves every child's
spec in its FireWorks launch record: 200 scoring chunks of two members put 800 kB there. With
more than ``FAN_OUT`` chunks, ``chunk_jobs`` makes one group job per ``FAN_OUT`` chunks
instead, and each group makes its chunks' jobs when it runs: every launch record then holds
at most ``FAN_OUT`` specs. A group's output is the list of its chunks' outputs;
``ungroup`` gives a consumer one output per chunk again (None for the chunks of a group
that did not run).
"""

from __future__ import annotations

from jobflow import Flow, Job, Maker, Response, job

from uq_flows.campaign.store import StructureSet
from uq_flows.stages import set_category

FAN_OUT = 32  # chunk jobs one job makes at most


def chunk_jobs(maker: Maker, structures: StructureSet, chunk_arg: str = "structures", **kwargs) -> list[Job]:
    """``maker.make(**{chunk_arg: chunk}, **kwargs)`` per chunk of ``structures``, directly or in groups."""
    chunks = structures.split()
    if len(chunks) <= FAN_OUT:
        return _made(maker, chunks, chunk_arg, kwargs, 0, len(chunks))
    groups = []
    for first in range(0, len(chunks), FAN_OUT):
        part = structures.model_copy(update={"chunks": structures.chunks[first:first + FAN_OUT],
                                             "sizes": structures.sizes[first:first + FAN_OUT]})
        group = make_chunk_jobs(maker, part, chunk_arg, kwargs, first, len(chunks))
        group.name = f"{maker.name} {first + 1}-{first + len(part.chunks)}/{len(chunks)}"
        groups.append(set_category(group, "cpu"))
    return groups


def ungroup(outputs: list, n_chunks: int) -> list:
    """One output per chunk from what ``chunk_jobs``' jobs returned (resolved); outputs of one
    job per chunk (also when made by value) pass through."""
    if len(outputs) == n_chunks:
        return list(outputs)
    flat = []
    for g, group in enumerate(outputs):
        size = min(FAN_OUT, n_chunks - g * FAN_OUT)
        flat += [None] * size if group is None else list(group)
    return flat


@job
def make_chunk_jobs(maker: Maker, structures: StructureSet, chunk_arg: str, kwargs: dict, first: int,
                    total: int) -> Response:
    """Replace itself by the jobs of its chunks (``first`` is the first one's place among ``total``)."""
    jobs = _made(maker, structures.split(), chunk_arg, kwargs, first, total)
    return Response(replace=Flow(jobs, output=[j.output for j in jobs], name=f"{maker.name} chunks"))


def _made(maker: Maker, chunks: list[StructureSet], chunk_arg: str, kwargs: dict, first: int, total: int) -> list[Job]:
    jobs = []
    for k, chunk in enumerate(chunks):
        made = maker.make(**{chunk_arg: chunk}, **kwargs)
        made.name = f"{made.name} {first + k + 1}/{total}"
        jobs.append(made)
    return jobs
