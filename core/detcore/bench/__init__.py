"""``detcore bench``: the figures users compare tools by, measured in one run."""
