"""What privacy costs, measured: securechat against a plain Flask floor on this machine.

Run ``make bench`` (``python -m benchmarks``); ``--help`` lists the sizes. The tables are
printed and written, with the machine's description, to ``benchmarks/RESULTS.md``.
"""
