"""What ops see: Prometheus metrics, and the logs."""
