"""Runtime backends: start and stop partition services and report their readiness."""
