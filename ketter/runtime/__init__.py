"""Process plumbing shared by the long-running commands: signals, logging."""
