"""What a worker counts about itself: stage counters, bounded distributions, percentiles,
consumer lag."""
