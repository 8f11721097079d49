"""The worker: its loop, claims, leases, attempts and recording of results."""
