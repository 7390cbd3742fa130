"""Seams: the one place where the kit depends on what differs between versions of libraries
it does not own.

:mod:`bevboost.seams.torch_compat` holds every torch-version difference (torch 2.1 to the
newest): version flags computed once, and one small named function per difference, each
saying what it relies on and on which torch versions it was checked. ``tests/seams`` pins
their shape, so a torch upgrade fails there and nowhere else.
"""
