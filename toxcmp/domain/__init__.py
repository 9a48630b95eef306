"""The problem's own terms: data, policies, model aliases, prompting and parsing. Imports nothing above it."""
