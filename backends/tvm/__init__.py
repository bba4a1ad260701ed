"""nasir backend."""
