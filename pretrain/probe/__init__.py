"""Probing frozen Toto features: attention- vs average-pool probes over a layer sweep."""
