"""Taking in a form: the relay use case, its pipeline, form validation, references,
tokens and rate limits."""
