"""The replicas: what runs them (the supervisor and its local and remote drivers, DNS discovery),
their lifecycle and the registry that owns their state."""
