"""The starter catalog that `aq init` copies into a new queue."""
