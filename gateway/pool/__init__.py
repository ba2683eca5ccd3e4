"""The pool of replicas: starting and watching workers, their states, the fair queue and the
scheduler, the relay to a worker, hot reload."""
