"""One job per stored chunk, made in groups so no FireWorks document grows with the campaign.

A job that makes its children at run time (``Response(replace=...)``) leaves every child's
spec in its FireWorks launch record: 200 scoring chunks of two members put 800 kB there. With
more than ``FAN_OUT`` chunks, ``chunk_jobs`` makes at most ``FAN_OUT`` group jobs instead, each
for a share of the chunks, and each group does the same when it runs (so groups nest
as deep as the chunk count needs): every launch record holds at most ``FAN_OUT`` specs. A
group's output is the list of its children's outputs; ``ungroup`` gives a consumer one output
per chunk again (None for the chunks of a group that did not run).
"""

from __future__ import annotations

from jobflow import Flow, Job, Maker, Response, job

from uq_flows.campaign.store import StructureSet
from uq_flows.stages import set_category

FAN_OUT = 16  # jobs one job makes at most (16 chunk specs of ~4 kB: a launch record well under 100 kB)


def chunk_jobs(maker: Maker, structures: StructureSet, chunk_arg: str = "structures", **kwargs) -> list[Job]:
    """``maker.make(**{chunk_arg: chunk}, **kwargs)`` per chunk of ``structures``, directly or in groups."""
    return _jobs(maker, structures, chunk_arg, kwargs, 0, len(structures.chunks))


def ungroup(outputs: list, n_chunks: int) -> list:
    """One output per chunk from what ``chunk_jobs``' jobs returned (resolved); outputs of one
    job per chunk (also when made by value) pass through."""
    if n_chunks <= FAN_OUT or len(outputs) == n_chunks:
        return list(outputs)
    flat = []
    for (first, last), group in zip(_shares(n_chunks), outputs):
        flat += [None] * (last - first) if group is None else ungroup(group, last - first)
    return flat


def _shares(n_chunks: int) -> list[tuple[int, int]]:
    """At most ``FAN_OUT`` contiguous shares of ``n_chunks`` chunks, each a power of ``FAN_OUT`` (the last
    may be smaller): as few group jobs as the nesting allows."""
    size = 1
    while size * FAN_OUT < n_chunks:
        size *= FAN_OUT
    return [(first, min(first + size, n_chunks)) for first in range(0, n_chunks, size)]


def _jobs(maker: Maker, structures: StructureSet, chunk_arg: str, kwargs: dict, first: int, total: int) -> list[Job]:
    chunks = structures.split()
    if len(chunks) <= FAN_OUT:
        jobs = []
        for k, chunk in enumerate(chunks):
            made = maker.make(**{chunk_arg: chunk}, **kwargs)
            made.name = f"{made.name} {first + k + 1}/{total}"
            jobs.append(made)
        return jobs
    groups = []
    for start, stop in _shares(len(chunks)):
        part = structures.model_copy(update={"chunks": structures.chunks[start:stop],
                                             "sizes": structures.sizes[start:stop]})
        group = make_chunk_jobs(maker, part, chunk_arg, kwargs, first + start, total)
        group.name = f"{maker.name} {first + start + 1}-{first + stop}/{total}"
        groups.append(set_category(group, "cpu"))
    return groups


@job
def make_chunk_jobs(maker: Maker, structures: StructureSet, chunk_arg: str, kwargs: dict, first: int,
                    total: int) -> Response:
    """Replace itself by the jobs (or groups) of its chunks; ``first`` is the first one's place among ``total``."""
    jobs = _jobs(maker, structures, chunk_arg, kwargs, first, total)
    return Response(replace=Flow(jobs, output=[j.output for j in jobs], name=f"{maker.name} chunks"))
