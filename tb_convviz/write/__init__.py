"""The write side: the callback, one step's analyses, the background worker and the event file."""
