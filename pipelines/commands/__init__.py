"""The commands besides ``score``: runs, train (and the reference of ``models register``)."""
