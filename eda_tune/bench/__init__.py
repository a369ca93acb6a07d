"""Timing, floors and benchmark reports."""
