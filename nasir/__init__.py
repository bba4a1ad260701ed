"""nasir package."""
