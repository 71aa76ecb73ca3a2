"""Parsers: one per log kind, each turning one line into one document."""
