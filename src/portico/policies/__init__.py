"""The policies a route lists: one folder each (``auth/``, ``headers/``, ``ip_rules/``), named in
``catalogue.py``; ``registry.py`` says what a policy type is. Policies never import each other."""
