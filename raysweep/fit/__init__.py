"""Fitting scaling laws (chinchilla, decoupled, unified and prior forms)."""
