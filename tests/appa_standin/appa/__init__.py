"""Stand-in for Appa's package in priorflow's tests (see ../README.md)."""
