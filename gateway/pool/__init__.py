"""Serving requests on the replicas: the fair queue and the scheduler (least busy or prefix
affinity), the relay to a replica, and hot reload."""
