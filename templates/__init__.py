"""Email templates shipped inside the wheel as ``digest.templates`` (data only, no code)."""
