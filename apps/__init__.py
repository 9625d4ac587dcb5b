"""Applications on top of genlab (nothing in genlab imports them)."""
