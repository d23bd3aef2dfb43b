"""Apps: saved workflows with a parameter panel, runnable by name."""
