"""The clinician area's core (no Flask): accounts, second factor, API tokens and the inbox."""
