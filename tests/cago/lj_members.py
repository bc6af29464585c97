"""A Lennard-Jones 'truth' and committee members with perturbed parameters (zero-argument
factories, usable as committee entries 'ase:tests.cago.lj_members:member_0')."""

from ase.calculators.lj import LennardJones

PARAMETERS = [(2.30, 0.40), (2.32, 0.42), (2.28, 0.39), (2.31, 0.37)]


def truth():
    return LennardJones(sigma=2.3, epsilon=0.4, rc=5.0, smooth=True)


def _member(k):
    sigma, epsilon = PARAMETERS[k]
    return LennardJones(sigma=sigma * 1.005, epsilon=epsilon, rc=5.0, smooth=True)


def member_0():
    return _member(0)


def member_1():
    return _member(1)


def member_2():
    return _member(2)


def member_3():
    return _member(3)


COMMITTEE = [f"lj{k}=ase:tests.cago.lj_members:member_{k}" for k in range(4)]
