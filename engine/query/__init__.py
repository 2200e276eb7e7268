"""Answers: a query's alignments scored against the library, for files and live input."""
