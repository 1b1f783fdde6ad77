"""Consumer state: what the processor remembers about each pseudonymous consumer, in SQL."""
