"""What tests share, each once: running aq (`cli`), git (`git`), a queue's files and events
(`queue`), waiting on a condition (`waiting`), and the fleet and chaos harnesses."""
