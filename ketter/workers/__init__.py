"""The workers process: the consumer that runs transfer jobs
(``consumer.py``) and its extra processes (``processes.py``). The queue it
consumes is :mod:`ketter.queue`, shared with detection; see
docs/architecture.md."""
