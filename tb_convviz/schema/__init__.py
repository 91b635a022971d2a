"""The on-disk format, what each record holds and what each number means: one place, read by both sides."""
