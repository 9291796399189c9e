"""Documents from the patient: one-time upload links, their mail and the uploads."""
