"""chaoslab: a chaos engineering runner whose steady states are SLOs.

Faults are injected through driver plugins, every fault carries a lease that the
target enforces on its own, and every run ends with all faults reverted and
verified clean.
"""

__version__ = "0.1.0"
