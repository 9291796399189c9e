"""The patient's confirmation copy: the link secret, the copy's lifecycle, its mails and
the PDF."""
