"""Jobs as both sides see them: statuses, the Redis job store, the RQ queue and lost-job supervision."""
