"""headwater services."""
