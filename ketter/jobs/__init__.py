"""Transfer jobs: states, transitions, creation, claiming, retries."""
