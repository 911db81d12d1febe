"""Representations: spec strings -> project(), gmse(), bits_per_element, family."""
