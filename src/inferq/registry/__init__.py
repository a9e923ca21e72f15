"""The model registry: versions, activation, traffic policies, pool routing, circuit breakers."""
