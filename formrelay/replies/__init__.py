"""A secure answer from the practice that only the patient's reply code opens."""
