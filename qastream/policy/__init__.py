"""Pure decisions, unit-tested without a broker: identity, lifecycle folds, the quality gate,
retry timing, stage deadlines, admission, the circuit breaker."""
