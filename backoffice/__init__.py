"""backoffice package."""
