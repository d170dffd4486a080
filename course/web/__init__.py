"""The web side: one blueprint per audience."""
