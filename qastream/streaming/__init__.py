"""Kafka and Faust plumbing: broker profiles, library fixes, the worker class, key routing,
topic creation, poison messages, re-enqueueing, timers that survive a failed tick."""
