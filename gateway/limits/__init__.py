"""Per-key limits and usage: in this process (local.py), or in Redis for several gateways
(redis_store.py)."""
