"""Apps the integration tests serve (imported by the server under test, by path)."""
