"""DNS discovery's hosts-file reading (the resolver itself is the system's)."""

from __future__ import annotations

from gateway.replicas.discovery import hosts_entries

HOSTS = """
127.0.0.1   localhost
10.0.0.5    Workers.test other  # a pod
10.0.0.6    workers.test
# 10.0.0.7  workers.test  (commented out)
fd00::8     workers.test
10.0.0.9    workers.test.example
"""


def test_every_line_naming_the_host_counts_and_comments_do_not() -> None:
    assert hosts_entries(HOSTS, "workers.test") == {"10.0.0.5", "10.0.0.6", "fd00::8"}
    assert hosts_entries(HOSTS, "WORKERS.TEST") == {"10.0.0.5", "10.0.0.6", "fd00::8"}
    assert hosts_entries(HOSTS, "other") == {"10.0.0.5"}
    assert hosts_entries(HOSTS, "nowhere") == set()
