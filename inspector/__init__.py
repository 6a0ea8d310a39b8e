"""pageext-inspect: locate, verify and decode the Linux kernel's page_ext memory.

Data flow, one module a stage:  target (open a kernel) -> discover (its
page_ext geometry) -> walk (every table, as a model.Layout) -> verify
(named checks) -> report (text, tables, JSON).  The reference simulator
(inspector.sim) produces the same model.Layout, so a prediction and a walk
compare directly.
"""

__version__ = "0.1.0"
