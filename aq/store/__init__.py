"""The queue on disk and on the remote: config, cached reads, transactions, sync."""
