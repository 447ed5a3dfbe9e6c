"""Code two or more headwater services share."""
