"""giter-bundle: the publisher's toolkit (sign specs, make bundles, read back status).

It shares the agent's history and trust code: one implementation of bundles and
signatures, not two.
"""
