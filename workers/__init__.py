"""The worker side of Ketter: the Huey app (a doorbell carrying job ids) and
the consumer that runs transfer jobs. Built from the config in one place; see
docs/architecture.md."""
