"""The ``whyslow`` command: one entry point over the packages that own its subcommands.

It sits above ``service``, ``baselines`` and ``training`` so that none of them has to know
the others' commands (tests/test_import_direction.py holds the packages to their order).
"""
