"""The benchmark (issue 6): wgsyncd against the hand-scripted floor, and many hosts on one DB.

Run it with ``python -m tests.bench`` (or ``make bench``); ``--help`` lists the sizes.
It starts its own PostgreSQL and wireguard-go interfaces, prints a table with the
ratios the issue asks for and writes JSON under ``tests/bench/results/``.
"""
