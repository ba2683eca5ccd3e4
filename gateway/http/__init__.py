"""The HTTP edge: the Litestar app and its routes, the connection's limits, who is calling, and
an admitted request's way to a worker."""
