"""The pure routing core: snapshot in, decision out.

Nothing under this package performs I/O, reads a clock or uses global random
state; the ext_proc server, the simulator and `explain` all call it the same way.
"""
