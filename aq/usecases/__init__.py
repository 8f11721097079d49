"""What a person (or agent) can do with the queue; each returns a frozen result."""
